"""Benchmark the two NMS implementations of darknet53_ros.inference.postprocess on YOLOv3-like
outputs.

Run: ``python benchmarks/bench_nms.py``. Prints the median time of candidate selection and of
each NMS method for several realistic cases, and checks that both methods agree.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
import statistics
import time

import numpy as np

from darknet53_ros.inference.postprocess import (
    AUTO_OPENCV_MAX_CANDIDATES,
    nms_numpy,
    nms_opencv,
    opencv_batched_nms,
    select_candidates,
)


def synthetic_outputs(num_boxes: int = 10647, num_classes: int = 80, objects: int = 20,
                      width: int = 416, height: int = 416, boxes_per_object: int = 8,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv3-like ``boxes [N, 4]`` / ``scores [N, C]`` for one image.

    Background boxes have tiny objectness (mean ~0.005) and class probabilities; each object
    owns a cluster of ``boxes_per_object`` jittered boxes (neighbouring cells, anchors and
    scales) with high objectness, a confident class and sometimes a weaker second class.
    """
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 1, (num_boxes, 2)) * (width, height)
    size = np.exp(rng.normal(3.5, 0.8, (num_boxes, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    objectness = rng.beta(0.2, 40, num_boxes)
    # Wrong classes of a trained YOLOv3 rarely score above a few percent.
    scores = objectness[:, None] * rng.beta(0.3, 30, (num_boxes, num_classes))
    chosen = rng.choice(num_boxes, (objects, boxes_per_object), replace=False)
    for cluster in chosen:
        gt_centre = rng.uniform(0.1, 0.9, 2) * (width, height)
        gt_size = np.exp(rng.normal(4.0, 0.6, 2))
        jitter = rng.normal(0, 0.08, (len(cluster), 4)) * np.concatenate([gt_size, gt_size])
        gt = np.concatenate([gt_centre - gt_size / 2, gt_centre + gt_size / 2])
        boxes[cluster] = gt + jitter
        label = rng.integers(num_classes)
        obj = rng.uniform(0.3, 1.0, len(cluster))
        scores[cluster] = obj[:, None] * rng.beta(0.3, 30, (len(cluster), num_classes))
        scores[cluster, label] = obj * rng.uniform(0.6, 1.0, len(cluster))
        if num_classes > 1 and rng.random() < 0.3:
            other = (label + 1 + rng.integers(num_classes - 1)) % num_classes
            scores[cluster, other] = obj * rng.uniform(0.2, 0.5, len(cluster))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes.astype(np.float32), scores.astype(np.float32)


def median_us(func: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``func`` in microseconds."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--repeat', type=int, default=300)
    args = parser.parse_args()
    if not opencv_batched_nms():
        import cv2

        print(f'OpenCV {cv2.__version__} has no cv2.dnn.NMSBoxesBatched (OpenCV 4.7+): nothing '
              'to compare, nms_method auto uses numpy')
        return
    cases = [
        ('80 classes, 20 objects, conf 0.25 (real-time)', 80, 20, 0.25),
        ('80 classes, 60 objects, conf 0.25 (crowded)', 80, 60, 0.25),
        ('80 classes, 20 objects, conf 0.05', 80, 20, 0.05),
        ('80 classes, 20 objects, conf 0.005 (mAP evaluation)', 80, 20, 0.005),
        ('3 classes, 20 objects, conf 0.25', 3, 20, 0.25),
        ('3 classes, 60 objects, conf 0.01', 3, 60, 0.01),
    ]
    print(f'yolov3-416 outputs: {10647} boxes; NMS threshold 0.45, max 100 detections; '
          f'auto uses OpenCV up to {AUTO_OPENCV_MAX_CANDIDATES} candidates')
    print(f'{"case":52s} {"cands":>6s} {"select":>9s} {"numpy":>9s} {"opencv":>9s} '
          f'{"np/cv":>6s} {"auto":>6s}')
    for title, classes, objects, conf in cases:
        boxes, scores = synthetic_outputs(num_classes=classes, objects=objects)
        cand_boxes, cand_scores, cand_classes = select_candidates(boxes, scores, conf)
        select = median_us(partial(select_candidates, boxes, scores, conf), args.repeat)
        repeat = args.repeat if len(cand_scores) < 2000 else max(args.repeat // 30, 5)
        candidates = (cand_boxes, cand_scores, cand_classes, 0.45, 100)
        t_np = median_us(partial(nms_numpy, *candidates), repeat)
        t_cv = median_us(partial(nms_opencv, *candidates), repeat)
        same = np.array_equal(nms_numpy(cand_boxes, cand_scores, cand_classes, 0.45),
                              nms_opencv(cand_boxes, cand_scores, cand_classes, 0.45))
        auto = 'opencv' if len(cand_scores) <= AUTO_OPENCV_MAX_CANDIDATES else 'numpy'
        print(f'{title:52s} {len(cand_scores):6d} {select:7.0f}us {t_np:7.0f}us {t_cv:7.0f}us '
              f'{t_np / t_cv:6.2f} {auto:>6s}{"" if same else "  (results differ!)"}')


if __name__ == '__main__':
    main()
