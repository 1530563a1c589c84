"""Box geometry for the tracker, vectorised: IoU matrices and box conversions (NumPy only)."""
from __future__ import annotations

import numpy as np

__all__ = ['iou_matrix', 'scale_boxes', 'xywh_to_xyxy', 'xyxy_to_xywh']


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` [n, 4] with every box of ``b`` [m, 4]
    (``x1, y1, x2, y2``): a float64 [n, m] matrix; 0 where a union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` -> centre ``cx, cy, w, h``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, wh], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Centre ``cx, cy, w, h`` -> ``x1, y1, x2, y2``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def scale_boxes(boxes: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` boxes grown about their centres by ``factor`` (per box; 1: same)."""
    xywh = xyxy_to_xywh(boxes)
    xywh[:, 2:] *= np.asarray(factor, np.float64).reshape(-1, 1)
    return xywh_to_xyxy(xywh)
