"""Training augmentation (NumPy/OpenCV, no PyTorch).

Augmentation (boxes transformed with the image, clipped, dropped when less than a quarter of
them stays visible or a side is under 2 pixels): a random affine letterbox of this project's
own (scale 0.6-1.4x the size that fits the input, aspect ratio stretched by exp(U(-0.2, 0.2)),
random placement: the image may be shrunk onto grey padding or enlarged and cropped),
horizontal flip, HSV jitter (the cfg's ``hue``, ``saturation`` and ``exposure``), and
multi-scale training (a new input size, multiple of 32, every 10 batches). It is not Darknet's
``data.c`` augmentation, which jitters the aspect ratio by the cfg's ``jitter`` at a fixed
scale.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.preprocess import letterbox_transform
from darknet53_ros.model.cfg import Network

PAD_GREY = 127
"""Grey of padded areas (Darknet's 0.5 on the 8-bit scale)."""


@dataclass
class AugmentParams:
    """Augmentation settings: colour and flip defaults follow Darknet's YOLOv3 cfg; ``scale``
    and ``aspect`` are this project's (Darknet uses a fixed scale and the cfg's ``jitter``)."""

    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: float = 0.5
    scale: tuple[float, float] = (0.6, 1.4)
    aspect: float = 0.2
    min_visible: float = 0.25

    @classmethod
    def from_network(cls, network: Network, **overrides: Any) -> AugmentParams:
        """Read ``hue``, ``saturation``, ``exposure`` and ``flip`` from the cfg's ``[net]``."""
        opts = network.options
        kw: dict[str, Any] = {}
        for key in ('hue', 'saturation', 'exposure'):
            if key in opts:
                try:
                    kw[key] = float(opts[key])
                except ValueError:
                    raise ConfigError(f'{network.source}: [net] {key}={opts[key]!r} is not '
                                      'a number') from None
        if opts.get('flip', '1').strip() == '0':
            kw['flip'] = 0.0
        kw.update(overrides)
        return cls(**kw)


def edge_affine_to_pixel(ax: float, bx: float, ay: float, by: float) -> np.ndarray:
    """The ``cv2.warpAffine`` matrix for the edge-coordinate map ``X' = a X + b`` per axis.

    Boxes use continuous pixel-edge coordinates (pixel ``i`` covers ``[i, i + 1)``); OpenCV
    maps pixel centres, hence the half-pixel terms.
    """
    return np.array([[ax, 0.0, bx + 0.5 * ax - 0.5], [0.0, ay, by + 0.5 * ay - 0.5]],
                    np.float64)


def transform_boxes(boxes: np.ndarray, ax: float, bx: float, ay: float, by: float,
                    ) -> np.ndarray:
    """Apply ``X' = a X + b`` per axis to ``[M, 4]`` ``x1y1x2y2`` boxes (order kept sane)."""
    out = np.array(boxes, np.float64, copy=True).reshape(-1, 4)
    xs = out[:, [0, 2]] * ax + bx
    ys = out[:, [1, 3]] * ay + by
    out[:, 0], out[:, 2] = xs.min(1), xs.max(1)
    out[:, 1], out[:, 3] = ys.min(1), ys.max(1)
    return out


def clip_boxes(boxes: np.ndarray, classes: np.ndarray, width: int, height: int,
               min_visible: float = 0.25, min_side: float = 2.0,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image; drop those mostly outside or thinner than ``min_side``."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32), classes.reshape(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_side) & (h >= min_side) & (w * h >= min_visible * np.maximum(area, 1e-9))
    return clipped[keep].astype(np.float32), classes[keep]


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image and its ``x1y1x2y2`` boxes left-right."""
    width = image.shape[1]
    out = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    out[:, [0, 2]] = width - np.asarray(boxes, np.float32).reshape(-1, 4)[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), out


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hue: float, saturation: float,
               exposure: float) -> np.ndarray:
    """Darknet's colour jitter on a BGR image: hue shift in ``[-hue, hue]`` (fraction of the
    circle), saturation and value scaled by factors in ``[1/s, s]`` and ``[1/e, e]``."""
    import cv2

    def factor(limit: float) -> float:
        if limit <= 1.0:
            return 1.0
        value = rng.uniform(1.0, limit)
        return value if rng.random() < 0.5 else 1.0 / value

    dh = rng.uniform(-hue, hue) if hue > 0 else 0.0
    fs, fv = factor(saturation), factor(exposure)
    if dh == 0.0 and fs == 1.0 and fv == 1.0:
        return image
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + dh * 180.0, 180.0).astype(np.uint8)
    lut_s = np.clip(x * fs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * fv, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def letterbox_params(src_w: int, src_h: int, width: int, height: int,
                     ) -> tuple[float, float, float, float]:
    """``(ax, bx, ay, by)`` of the inference letterbox (as
    :mod:`darknet53_ros.inference.preprocess`)."""
    t = letterbox_transform(src_w, src_h, width, height)
    return t.scale_x, t.pad_x, t.scale_y, t.pad_y


def random_geometry(src_w: int, src_h: int, width: int, height: int, rng: np.random.Generator,
                    params: AugmentParams) -> tuple[float, float, float, float]:
    """Random scale, aspect ratio and placement ``(ax, bx, ay, by)`` (random affine
    letterbox)."""
    fit = min(width / src_w, height / src_h)
    s = fit * rng.uniform(*params.scale)
    aspect = math.exp(rng.uniform(-params.aspect, params.aspect)) if params.aspect > 0 else 1.0
    ax, ay = s * math.sqrt(aspect), s / math.sqrt(aspect)
    new_w, new_h = src_w * ax, src_h * ay
    bx = rng.uniform(min(0.0, width - new_w), max(0.0, width - new_w))
    by = rng.uniform(min(0.0, height - new_h), max(0.0, height - new_h))
    return ax, bx, ay, by


def warp(image: np.ndarray, ax: float, bx: float, ay: float, by: float, width: int,
         height: int) -> np.ndarray:
    """Resample ``image`` with the edge-coordinate map to a ``width x height`` canvas."""
    import cv2

    matrix = edge_affine_to_pixel(ax, bx, ay, by)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD_GREY, PAD_GREY, PAD_GREY))


def augment(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, width: int,
            height: int, rng: np.random.Generator, params: AugmentParams | None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one BGR image and its ``x1y1x2y2`` boxes into a ``width x height`` input.

    With ``params=None`` only the inference letterbox is applied (validation).
    """
    src_h, src_w = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if params is None:
        ax, bx, ay, by = letterbox_params(src_w, src_h, width, height)
        flip = False
    else:
        ax, bx, ay, by = random_geometry(src_w, src_h, width, height, rng, params)
        flip = rng.random() < params.flip
    if flip:  # mirror after placement: X'' = width - (ax X + bx)
        ax, bx = -ax, width - bx
    out = warp(image, ax, bx, ay, by, width, height)
    new_boxes = transform_boxes(boxes, ax, bx, ay, by)
    min_visible = params.min_visible if params is not None else 0.0
    new_boxes, classes = clip_boxes(new_boxes, classes, width, height, min_visible,
                                    2.0 if params is not None else 0.0)
    if params is not None:
        out = hsv_jitter(out, rng, params.hue, params.saturation, params.exposure)
    return out, new_boxes, classes
