"""What users would otherwise write around a YOLO model, doing the same work as the pipeline.

Written here (not copied) the way the common projects do it, for paired comparisons in
``darknet53 bench`` and ``benchmarks/bench_peers.py``:

* **NumPy reference** (the tensorrt_demos way): ``cv2.resize`` into a grey ``uint8`` canvas
  (127), BGR->RGB, ``transpose`` + ``astype(float32)`` + ``/ 255``; post-processing takes
  every (box, class) pair above the threshold and runs a greedy NumPy NMS per class.
* **OpenCV DNN**: the same letterbox canvas through ``cv2.dnn.blobFromImage``; every (box, class)
  pair above the threshold, ``cv2.dnn.NMSBoxesBatched`` (per class), results applied.

Both letterbox like Darknet (same geometry as :mod:`darknet53_ros.inference.preprocess`) and
map the kept boxes back to source pixels; results are ``(boxes [n, 4] in source pixels,
scores [n], class_ids [n])`` by descending score, so their detections can be checked against the
pipeline's before anything is timed.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from darknet53_ros.inference.preprocess import LetterboxTransform, letterbox_transform


class Found(NamedTuple):
    """One image's detections: boxes ``[n, 4]`` in source pixels, scores, class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


def letterbox_canvas(image: np.ndarray, width: int, height: int, fill: int = 127,
                     ) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize ``image`` (BGR uint8) into a ``height x width`` ``uint8`` canvas of ``fill``."""
    import cv2

    transform = letterbox_transform(image.shape[1], image.shape[0], width, height)
    new_w = round(transform.scale_x * image.shape[1])
    new_h = round(transform.scale_y * image.shape[0])
    x0, y0 = int(transform.pad_x), int(transform.pad_y)
    canvas = np.full((height, width, 3), fill, np.uint8)
    canvas[y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, transform


def numpy_pre(image: np.ndarray, width: int, height: int,
              ) -> tuple[np.ndarray, LetterboxTransform]:
    """tensorrt_demos-style pre-processing: canvas, RGB, CHW float32 in [0, 1]."""
    import cv2

    canvas, transform = letterbox_canvas(image, width, height)
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    chw = rgb.transpose((2, 0, 1)).astype(np.float32)
    chw /= 255.0
    return chw[None], transform


def opencv_pre(image: np.ndarray, width: int, height: int,
               ) -> tuple[np.ndarray, LetterboxTransform]:
    """OpenCV DNN pre-processing: the letterbox canvas through ``cv2.dnn.blobFromImage``."""
    import cv2

    canvas, transform = letterbox_canvas(image, width, height)
    return cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True, crop=False), transform


def _candidates(boxes: np.ndarray, scores: np.ndarray, conf: float,
                transform: LetterboxTransform) -> Found:
    """Every (box, class) pair scoring at least ``conf`` (Darknet's multi-label rule, the
    pipeline's too), boxes mapped back to source pixels."""
    rows, class_ids = np.nonzero(scores >= np.float32(conf))
    return Found(transform.to_source(boxes[rows]), scores[rows, class_ids], class_ids)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS over one class (the loop most NumPy YOLO post-processing uses)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind='stable')
    keep = []
    while order.size:
        first = order[0]
        keep.append(first)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[first], x2[rest]) - np.maximum(x1[first], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[first], y2[rest]) - np.maximum(y1[first], y1[rest]))
        inter = w * h
        with np.errstate(divide='ignore', invalid='ignore'):  # empty boxes: IoU NaN, kept
            iou = inter / (areas[first] + areas[rest] - inter)
        order = rest[~(iou > threshold)]
    return np.asarray(keep, np.intp)


def _sorted(found: Found, keep: np.ndarray, max_det: int) -> Found:
    boxes, scores, class_ids = found
    keep = keep[np.argsort(-scores[keep], kind='stable')][:max_det]
    return Found(boxes[keep], scores[keep], class_ids[keep].astype(np.int64))


def numpy_post(boxes: np.ndarray, scores: np.ndarray, transform: LetterboxTransform,
               conf: float = 0.25, nms: float = 0.45, max_det: int = 100) -> Found:
    """tensorrt_demos-style post-processing of one image's ``boxes [N, 4]`` (network pixels)
    and ``scores [N, C]``: (box, class) pairs above ``conf``, greedy NumPy NMS per class."""
    found = _candidates(boxes, scores, conf, transform)
    kept = [np.flatnonzero(found[2] == c)[_greedy_nms(found[0][found[2] == c],
                                                      found[1][found[2] == c], nms)]
            for c in np.unique(found[2])]
    keep = np.concatenate(kept) if kept else np.zeros(0, np.intp)
    return _sorted(found, keep, max_det)


def opencv_post(boxes: np.ndarray, scores: np.ndarray, transform: LetterboxTransform,
                conf: float = 0.25, nms: float = 0.45, max_det: int = 100) -> Found:
    """OpenCV DNN post-processing: pairs above ``conf``, ``cv2.dnn.NMSBoxesBatched`` (before
    OpenCV 4.7, which lacks it, ``cv2.dnn.NMSBoxes`` per class as OpenCV's samples did)."""
    import cv2

    found = _candidates(boxes, scores, conf, transform)
    if len(found[1]) == 0:
        return _sorted(found, np.zeros(0, np.intp), max_det)
    xywh = found[0].copy()
    xywh[:, 2:] -= xywh[:, :2]
    if hasattr(cv2.dnn, 'NMSBoxesBatched'):
        keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), found[1].tolist(),
                                       found[2].astype(np.int32).tolist(), conf, nms)
        return _sorted(found, np.asarray(keep, np.intp).reshape(-1), max_det)
    kept = []
    for c in np.unique(found[2]):
        rows = np.flatnonzero(found[2] == c)
        chosen = cv2.dnn.NMSBoxes(xywh[rows].tolist(), found[1][rows].tolist(), conf, nms)
        kept.append(rows[np.asarray(chosen, np.intp).reshape(-1)])
    return _sorted(found, np.concatenate(kept), max_det)


def same_detections(a: Found, b: Found, box_tol: float = 1.0, score_tol: float = 1e-4,
                    ) -> bool:
    """Whether two results hold the same detections (any order; boxes within ``box_tol``
    pixels, scores within ``score_tol``)."""
    if len(a[1]) != len(b[1]):
        return False
    order_a = np.lexsort((a[0][:, 0], a[2], -np.round(a[1], 4)))
    order_b = np.lexsort((b[0][:, 0], b[2], -np.round(b[1], 4)))
    return bool(np.array_equal(a[2][order_a], b[2][order_b])
                and np.allclose(a[0][order_a], b[0][order_b], atol=box_tol)
                and np.allclose(a[1][order_a], b[1][order_b], atol=score_tol))
