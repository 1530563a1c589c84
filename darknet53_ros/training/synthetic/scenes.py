"""Deterministic synthetic detection scenes, as a low robot camera would see them.

Every scene depends only on ``(seed, index, width, height)``: its random generator is seeded with
``np.random.SeedSequence([seed, index])``, so scenes can be generated in any order or in parallel
and are bit-identical across runs.

A scene is a room or yard (wall and floor with gradients, noise textures, floor tiles, doors,
posters and clutter, including distractor shapes that are *not* objects) with 1 to 9 objects of
:data:`CLASS_NAMES` standing on the floor in perspective, drawn far to near so nearer objects
occlude farther ones, plus occasional foreground occluders (poles, crate edges) that are not
objects either. The camera adds gain, gamma, white balance, a gradient illumination, vignetting,
Gaussian or motion blur and sensor noise.

Annotations follow these conventions:

* ``visible_fraction`` = visible pixels of the object's rendered mask (inside the image and not
  covered by anything drawn later) / all pixels of its full (amodal) mask, so truncation at the
  image border counts as invisible. Objects below :data:`MIN_VISIBLE` (or whose visible box is
  thinner than :data:`MIN_BOX_SIDE` pixels) are left out of the annotations.
* Boxes are the tight box of the **visible** mask region (what a detector can see, as in the
  KITTI/COCO "visible box" convention), in pixel-edge coordinates: ``x1, y1`` inclusive,
  ``x2, y2`` exclusive, so ``0 <= x1 < x2 <= width`` and the box width is ``x2 - x1``.
* Class ids are 0-based indices into :data:`CLASS_NAMES` (Darknet/YOLO labels); COCO category
  ids are ``class_id + 1``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import math
from statistics import NormalDist
from typing import NamedTuple

import cv2
import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.training.synthetic.objects import (
    ASPECTS,
    CLASS_NAMES,
    GROUND,
    cv_colour,
    hsv_colour,
    render_object,
    render_pole,
    render_slab,
)

MIN_VISIBLE = 0.3
"""Objects with a smaller visible fraction are left out of the annotations."""

MIN_BOX_SIDE = 4
"""Objects whose visible box is narrower or lower than this (pixels) are left out."""

MIN_OBJECT_SIZE = 16
"""Smallest object (longer side, pixels); the largest is ``MAX_OBJECT_FRACTION * min(w, h)``."""

MAX_OBJECT_FRACTION = 0.42

MIN_IMAGE_SIDE = 64

_GAUSS_LUT = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


class Annotation(NamedTuple):
    """One annotated object: 0-based class id, visible box (x2/y2 exclusive), visible fraction."""

    class_id: int
    x1: int
    y1: int
    x2: int
    y2: int
    visible_fraction: float


@dataclass(frozen=True)
class Layer:
    """A rendered sprite placed on the canvas at ``(x, y)`` (top-left, may lie outside).

    ``class_id`` is None for occluders and distractors, which are never annotated.
    """

    x: int
    y: int
    image: np.ndarray
    mask: np.ndarray
    class_id: int | None = None


# --------------------------------------------------------------------------------------------
# background and camera


_FLOORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((0, 360), (0.0, 0.1), (0.3, 0.7)),     # concrete
    ((20, 40), (0.3, 0.6), (0.3, 0.7)),     # wood
    ((0, 360), (0.15, 0.5), (0.2, 0.6)),    # carpet / linoleum
    ((0, 360), (0.0, 0.08), (0.1, 0.3)),    # asphalt
    ((80, 140), (0.3, 0.7), (0.2, 0.55)),   # grass
)


def _background(rng: np.random.Generator, w: int, h: int, horizon: int) -> np.ndarray:
    wall = hsv_colour(rng, (0, 360), (0.0, 0.3), (0.35, 0.9))
    floor = hsv_colour(rng, *_FLOORS[int(rng.integers(len(_FLOORS)))])
    rows = np.empty((h, 3), np.float32)
    rows[:horizon] = np.linspace(rng.uniform(0.75, 1.1), rng.uniform(0.9, 1.2),
                                 horizon)[:, None] * wall
    rows[horizon:] = np.linspace(rng.uniform(0.6, 0.9), rng.uniform(0.9, 1.25),
                                 h - horizon)[:, None] * floor
    coarse = rng.standard_normal((h // 16 + 2, w // 16 + 2), dtype=np.float32)
    fine = rng.standard_normal((h // 3 + 2, w // 3 + 2), dtype=np.float32)
    texture = (cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(2, 9)
               + cv2.resize(fine, (w, h), interpolation=cv2.INTER_LINEAR) * rng.uniform(1, 7))
    shaded = rows[:, None, :] + texture[..., None]
    img = np.clip(shaded, 0, 255, out=shaded).astype(np.uint8)

    if rng.random() < 0.6:  # floor tiles in perspective
        line_col = cv_colour(floor, rng.uniform(0.55, 0.85))
        vx = rng.uniform(0.1, 0.9) * w
        n = int(rng.integers(5, 15))
        for xb in np.linspace(-w, 2 * w, n):
            cv2.line(img, (int(vx), horizon), (int(xb), h - 1), line_col, 1)
        near = rng.uniform(1.0, 3.0)
        for k in range(1, 12):
            y = horizon + (h - horizon) * near / (near + k * rng.uniform(0.8, 1.2) - 1)
            if horizon < y < h:
                cv2.line(img, (0, int(y)), (w - 1, int(y)), line_col, 1)
    board = cv_colour(wall, rng.uniform(0.3, 0.7))
    cv2.line(img, (0, horizon), (w - 1, horizon), board, int(rng.integers(1, 5)))
    for _ in range(int(rng.integers(0, 4))):  # doors, windows, posters, shelves on the wall
        rw, rh = rng.uniform(0.05, 0.3) * w, rng.uniform(0.1, 0.9) * max(horizon, 8)
        x0, y0 = rng.uniform(-0.1, 1.0) * w, horizon - rh * rng.uniform(0.3, 1.0)
        p0, p1 = (int(x0), int(y0)), (int(x0 + rw), int(y0 + rh))
        cv2.rectangle(img, p0, p1, cv_colour(hsv_colour(rng, (0, 360), (0, 0.6), (0.2, 1.0))), -1)
        cv2.rectangle(img, p0, p1, cv_colour(wall, 0.5), int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(2, 10))):  # clutter and distractor shapes (not objects)
        _distractor(rng, img)
    return img


def _distractor(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    colour = cv_colour(hsv_colour(rng, (0, 360), (0, 1), (0.1, 1)))
    size = max(4.0, rng.uniform(0.02, 0.25) * min(w, h))
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    kind = int(rng.integers(6))
    if kind == 0:
        angle = rng.uniform(0, math.pi)
        d = (size * 2 * math.cos(angle), size * 2 * math.sin(angle))
        cv2.line(img, (int(x - d[0]), int(y - d[1])), (int(x + d[0]), int(y + d[1])), colour,
                 int(rng.integers(1, 4)))
    elif kind == 1:
        cv2.rectangle(img, (int(x), int(y)), (int(x + size * rng.uniform(0.3, 2)),
                                              int(y + size * rng.uniform(0.3, 2))), colour, -1)
    elif kind == 2:  # flat (unshaded) disc or ring
        cv2.circle(img, (int(x), int(y)), int(size / 2), colour,
                   -1 if rng.random() < 0.5 else int(rng.integers(1, 4)))
    elif kind == 3:  # random polygon
        n = int(rng.integers(3, 7))
        pts = np.stack([x + rng.uniform(-size, size, n), y + rng.uniform(-size, size, n)], 1)
        cv2.fillPoly(img, [pts.astype(np.int32)], colour)
    elif kind == 4:
        letters = ''.join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 7))))
        cv2.putText(img, letters, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX,
                    size / 40, colour, max(1, int(size / 25)))
    else:
        cv2.ellipse(img, (int(x), int(y)), (int(size), int(size * rng.uniform(0.2, 1))),
                    rng.uniform(0, 180), 0, 360, colour, int(rng.integers(1, 3)))


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Illumination gradient, vignetting, gain, white balance, gamma, blur and sensor noise."""
    h, w = img.shape[:2]
    theta = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(-0.5, 0.5) / (0.5 * math.hypot(w, h))
    gx = (np.arange(w, dtype=np.float32) - w / 2) * math.cos(theta) * slope
    gy = (np.arange(h, dtype=np.float32) - h / 2) * math.sin(theta) * slope
    illum = 1.0 + gy[:, None] + gx[None, :]
    if rng.random() < 0.5:
        vx = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2)) ** 2
        vy = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2)) ** 2
        illum *= 1.0 - rng.uniform(0.1, 0.35) * 0.5 * (vy[:, None] + vx[None, :])
    illum *= rng.uniform(0.6, 1.3)
    balance = rng.uniform(0.9, 1.1, 3)
    gain = cv2.merge([illum * np.float32(b) for b in balance])
    img = cv2.multiply(img, gain, dtype=cv2.CV_8U)
    gamma = rng.uniform(0.7, 1.4)
    lut = np.clip(np.round((np.arange(256) / 255.0) ** gamma * 255), 0, 255).astype(np.uint8)
    img = cv2.LUT(img, lut)
    blur = rng.random()
    if blur < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.4))
    elif blur < 0.5:
        length = int(rng.integers(3, 10))
        kernel = np.zeros((length, length), np.float32)
        angle = rng.uniform(0, math.pi)
        c, dx, dy = (length - 1) / 2, math.cos(angle) * (length - 1) / 2, math.sin(angle) * (
            length - 1) / 2
        cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))),
                 (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
        img = cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    # sensor noise: uniform random bytes mapped through the Gaussian inverse CDF (fast)
    noise_lut = _GAUSS_LUT * np.float32(rng.uniform(1.0, 6.0))
    uniform = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    return cv2.add(img, cv2.LUT(uniform, noise_lut), dtype=cv2.CV_8U)


# --------------------------------------------------------------------------------------------
# composition


def composite(canvas: np.ndarray, layers: Iterable[Layer], min_visible: float = MIN_VISIBLE,
              min_side: int = MIN_BOX_SIDE) -> list[Annotation]:
    """Paint ``layers`` far to near onto ``canvas`` (in place); return the visible objects.

    Each object's visible fraction is computed from the painted masks (see module docstring);
    objects below ``min_visible`` or with a visible box thinner than ``min_side`` are dropped.
    """
    return [Annotation(int(cls or 0), *box, fraction) for _, cls, box, fraction
            in visible_objects(canvas, layers, min_visible, min_side)]


def visible_objects(canvas: np.ndarray, layers: Iterable[Layer],
                    min_visible: float = MIN_VISIBLE, min_side: int = MIN_BOX_SIDE,
                    ) -> list[tuple[int, int | None, tuple[int, int, int, int], float]]:
    """:func:`composite` telling which layer each object is: ``(layer index (0-based),
    class_id, (x1, y1, x2, y2), visible fraction)`` per visible object, far to near."""
    h, w = canvas.shape[:2]
    owner = np.zeros((h, w), np.int32)
    objects: list[tuple[int, Layer, int, tuple[int, int, int, int]]] = []
    for number, layer in enumerate(layers, 1):
        ph, pw = layer.mask.shape[:2]
        if layer.image.shape[:2] != (ph, pw):
            raise ConfigError(f'layer {number}: image {layer.image.shape} and mask '
                              f'{layer.mask.shape} differ in size')
        area = int(np.count_nonzero(layer.mask))
        x0, y0 = max(layer.x, 0), max(layer.y, 0)
        x1, y1 = min(layer.x + pw, w), min(layer.y + ph, h)
        if layer.class_id is not None and area:
            objects.append((number, layer, area, (x0, y0, x1, y1)))
        if x1 <= x0 or y1 <= y0 or not area:
            continue
        sel = layer.mask[y0 - layer.y:y1 - layer.y, x0 - layer.x:x1 - layer.x] != 0
        canvas[y0:y1, x0:x1][sel] = layer.image[y0 - layer.y:y1 - layer.y,
                                                x0 - layer.x:x1 - layer.x][sel]
        owner[y0:y1, x0:x1][sel] = number if layer.class_id is not None else 0
    result = []
    for number, layer, area, (x0, y0, x1, y1) in objects:
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.nonzero(owner[y0:y1, x0:x1] == number)
        fraction = len(ys) / area
        if not len(ys) or fraction < min_visible:
            continue
        box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1,
               y0 + int(ys.max()) + 1)
        if box[2] - box[0] < min_side or box[3] - box[1] < min_side:
            continue
        result.append((number - 1, layer.class_id, box, float(fraction)))
    return result


def check_size(width: int, height: int) -> None:
    """ConfigError unless both sides are at least :data:`MIN_IMAGE_SIDE` pixels."""
    if int(width) < MIN_IMAGE_SIDE or int(height) < MIN_IMAGE_SIDE:
        raise ConfigError(f'image size {width}x{height}: both sides must be >= {MIN_IMAGE_SIDE}')


def _scene_layers(rng: np.random.Generator, w: int, h: int, horizon: int) -> list[Layer]:
    smin, smax = float(MIN_OBJECT_SIZE), MAX_OBJECT_FRACTION * min(w, h)
    staged: list[tuple[float, int, list[Layer]]] = []
    count = int(min(1 + rng.poisson(3.0), 9))
    for order in range(count):
        cls = int(rng.integers(len(CLASS_NAMES)))
        size = math.exp(rng.uniform(math.log(smin), math.log(smax)))
        aspect = rng.uniform(*ASPECTS[cls])
        ow, oh = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
        ow, oh = max(6, int(round(ow))), max(6, int(round(oh)))
        ground = horizon + oh * GROUND[cls] * rng.uniform(0.8, 1.25)
        ground = min(ground, h - 1 + 0.12 * oh)
        cx = rng.uniform(0.0, 1.0) * w
        patch, mask = render_object(cls, ow, oh, rng)
        group: list[Layer] = []
        top = ground - oh
        if cls == 4:  # signs stand on a pole or hang on the wall
            if rng.random() < 0.65:
                pole_len = oh * rng.uniform(0.8, 2.2)
                top = max(ground - pole_len - oh, -0.15 * oh)
                pole_w = max(2, int(round(ow * rng.uniform(0.06, 0.12))))
                pole_top = int(round(top + oh / 2))
                pole_h = max(1, int(round(ground)) - pole_top)
                group.append(Layer(int(round(cx - pole_w / 2)), pole_top,
                                   *render_pole(rng, pole_w, pole_h)))
            else:  # on the wall: behind everything standing on the floor
                top = rng.uniform(0.05, 0.9) * max(horizon - oh, 1)
                ground = horizon - 1.0
        group.append(Layer(int(round(cx - ow / 2)), int(round(top)), patch, mask, cls))
        staged.append((ground, order, group))
    for order in range(count, count + int(rng.integers(0, 3) if rng.random() < 0.35 else 0)):
        ground = rng.uniform(horizon, h * 1.1)
        if rng.random() < 0.6:
            pw = max(3, int(rng.uniform(0.015, 0.07) * w))
            ph = int(ground) + 1
            renderer = render_pole
            x, y = int(rng.uniform(-pw / 2, w - pw / 2)), 0
        else:
            pw, ph = int(rng.uniform(0.1, 0.4) * w), int(rng.uniform(0.1, 0.35) * h)
            renderer = render_slab
            x = int(-pw * 0.3) if rng.random() < 0.5 else int(w - pw * 0.7)
            y = int(min(ground, h + ph * 0.2) - ph)
        staged.append((ground, order, [Layer(x, y, *renderer(rng, pw, ph))]))
    staged.sort(key=lambda item: (item[0], item[1]))
    return [layer for _, _, group in staged for layer in group]


def generate_scene(rng_seed: int, index: int, width: int = 320,
                   height: int = 256) -> tuple[np.ndarray, list[Annotation]]:
    """Render scene ``index`` of the stream ``rng_seed``: ``(bgr uint8 image, annotations)``.

    The result depends only on ``(rng_seed, index, width, height)``.
    """
    if int(rng_seed) < 0 or int(index) < 0:
        raise ConfigError(f'seed {rng_seed} and index {index} must be non-negative')
    check_size(width, height)
    w, h = int(width), int(height)
    rng = np.random.default_rng(np.random.SeedSequence([int(rng_seed), int(index)]))
    horizon = int(h * rng.uniform(0.25, 0.55))
    canvas = _background(rng, w, h, horizon)
    annotations = composite(canvas, _scene_layers(rng, w, h, horizon))
    return _camera(rng, canvas), annotations


def draw_annotations(image: np.ndarray, annotations: Iterable[Annotation]) -> np.ndarray:
    """Copy of ``image`` with the boxes and class names drawn (for previews)."""
    out = image.copy()
    palette = [(0, 255, 0), (0, 128, 255), (255, 0, 255), (255, 255, 0), (0, 0, 255),
               (255, 128, 0)]
    for ann in annotations:
        colour = palette[ann.class_id % len(palette)]
        cv2.rectangle(out, (ann.x1, ann.y1), (ann.x2 - 1, ann.y2 - 1), colour, 1)
        cv2.putText(out, f'{CLASS_NAMES[ann.class_id]} {ann.visible_fraction:.2f}',
                    (ann.x1, max(8, ann.y1 - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, colour, 1)
    return out
