"""Drawing detections on images (annotated outputs of the runner and the node)."""
from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
            (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (209, 99, 0),
            (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132),
            (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255))


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per class."""
    return _PALETTE[int(class_id) % len(_PALETTE)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    class_ids: np.ndarray, names: Sequence[str] | None = None,
                    copy: bool = True) -> np.ndarray:
    """Draw boxes with "label score" tags on a BGR image; returns the annotated image."""
    import cv2

    out = np.array(image, copy=True) if copy or not image.flags.writeable else image
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 320))
    scale = max(0.35, min(height, width) / 900)
    for box, score, cls in zip(np.asarray(boxes).tolist(), np.asarray(scores).tolist(),
                               np.asarray(class_ids).tolist()):
        if not all(math.isfinite(v) for v in box):
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = class_colour(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = names[cls] if names is not None and 0 <= cls < len(names) else str(cls)
        text = f'{label} {score:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), colour, cv2.FILLED)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
