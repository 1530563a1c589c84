"""Benchmark pre- and postprocessing of one 640x480 frame at 416x416 against OpenCV DNN code.

Run: ``python benchmarks/bench_prepost.py``. Target (issue "Detection pipeline on ONNX
Runtime"): preprocessing + postprocessing <= 1.5 ms per frame on a 2-core machine. Baselines:
``cv2.dnn.blobFromImage`` for preprocessing and, for postprocessing, the loop of OpenCV's
YOLO samples (argmax per output row in Python, then ``cv2.dnn.NMSBoxes`` per class), plus the
same with a vectorised argmax.
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
import sys

import cv2
import numpy as np

from darknet53_ros.inference.postprocess import postprocess
from darknet53_ros.inference.preprocess import Preprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nms import median_us, synthetic_outputs

SIZE = 416
CONF, NMS = 0.25, 0.45
TARGET_US = 1500.0


def load_frame() -> np.ndarray:
    """A 640x480 BGR frame: Darknet's dog.jpg when ../shared is present, else noise."""
    path = Path(__file__).resolve().parents[2] / 'shared' / 'darknet' / 'images' / 'dog.jpg'
    image = cv2.imread(str(path)) if path.exists() else None
    if image is None:
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return cv2.resize(image, (640, 480))


def opencv_pre(frame: np.ndarray) -> np.ndarray:
    """What OpenCV DNN users write (stretching, no letterbox)."""
    return cv2.dnn.blobFromImage(frame, 1 / 255.0, (SIZE, SIZE), swapRB=True, crop=False)


def _per_class_nms(boxes: list, confidences: list, class_ids: list) -> list:
    kept = []
    class_array = np.array(class_ids)
    for class_id in np.unique(class_array):
        members = np.flatnonzero(class_array == class_id)
        keep = cv2.dnn.NMSBoxes([boxes[i] for i in members],
                                [confidences[i] for i in members], CONF, NMS)
        kept.extend(members[np.asarray(keep, int).reshape(-1)].tolist())
    return kept


def opencv_post_tutorial(boxes: np.ndarray, scores: np.ndarray, width: int,
                         height: int) -> list:
    """OpenCV's YOLO sample loop: Python loop over rows, argmax, per-class NMSBoxes."""
    found, confidences, class_ids = [], [], []
    sx, sy = width / SIZE, height / SIZE
    for box, row in zip(boxes, scores):
        class_id = int(np.argmax(row))
        confidence = float(row[class_id])
        if confidence > CONF:
            x1, y1, x2, y2 = box
            found.append([float(x1 * sx), float(y1 * sy), float((x2 - x1) * sx),
                          float((y2 - y1) * sy)])
            confidences.append(confidence)
            class_ids.append(class_id)
    return _per_class_nms(found, confidences, class_ids)


def opencv_post_vectorised(boxes: np.ndarray, scores: np.ndarray, width: int,
                           height: int) -> list:
    """The same with NumPy argmax/max over all rows instead of the Python loop."""
    class_ids = scores.argmax(axis=1)
    confidences = scores.max(axis=1)
    rows = np.flatnonzero(confidences > CONF)
    xywh = boxes[rows].copy()
    xywh[:, 2:] -= xywh[:, :2]
    xywh *= np.array([width / SIZE, height / SIZE] * 2, np.float32)
    return _per_class_nms(xywh.tolist(), confidences[rows].tolist(), class_ids[rows].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--repeat', type=int, default=500)
    args = parser.parse_args()
    frame = load_frame()
    boxes, scores = synthetic_outputs(num_boxes=10647, num_classes=80, objects=20,
                                      width=SIZE, height=SIZE)
    batch_boxes, batch_scores = boxes[None], scores[None]
    pre = Preprocessor(SIZE, SIZE)
    _, transforms = pre(frame)
    detections = postprocess(batch_boxes, batch_scores, transforms, CONF, NMS, 100)
    repeat = args.repeat
    t_pre = median_us(partial(pre, frame), repeat)
    t_post = median_us(partial(postprocess, batch_boxes, batch_scores, transforms, CONF, NMS,
                               100), repeat)
    t_cv_pre = median_us(partial(opencv_pre, frame), repeat)
    t_cv_post_loop = median_us(partial(opencv_post_tutorial, boxes, scores, 640, 480),
                               max(repeat // 10, 10))
    t_cv_post_vec = median_us(partial(opencv_post_vectorised, boxes, scores, 640, 480), repeat)
    total = t_pre + t_post
    print(f'640x480 frame at {SIZE}x{SIZE}, scores 10647x80, conf {CONF}, nms {NMS}, '
          f'{len(detections[0])} detections, cv2 threads {cv2.getNumThreads()}')
    print(f'{"stage":44s} {"darknet53_ros":>14s} {"OpenCV DNN":>11s} {"speed-up":>9s}')
    print(f'{"preprocess (letterbox vs blobFromImage)":44s} {t_pre:12.0f}us {t_cv_pre:9.0f}us '
          f'{t_cv_pre / t_pre:8.2f}x')
    print(f'{"postprocess vs sample loop + NMSBoxes/class":44s} {t_post:12.0f}us '
          f'{t_cv_post_loop:9.0f}us {t_cv_post_loop / t_post:8.2f}x')
    print(f'{"postprocess vs vectorised argmax + NMSBoxes":44s} {t_post:12.0f}us '
          f'{t_cv_post_vec:9.0f}us {t_cv_post_vec / t_post:8.2f}x')
    verdict = 'met' if total <= TARGET_US else 'NOT met'
    print(f'pre + post: {total:.0f}us per frame (target {TARGET_US:.0f}us: {verdict})')


if __name__ == '__main__':
    main()
