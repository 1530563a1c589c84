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

from collections.abc import Callable, Iterable, Iterator
import colorsys
from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import shutil
from statistics import NormalDist
import tempfile
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError, SourceError
from darknet53_ros.fileio import atomic_write_text

CLASS_NAMES: tuple[str, ...] = ('box', 'cone', 'ball', 'person', 'sign')
"""Object classes; the index is the Darknet class id, the COCO category id is index + 1."""

MIN_VISIBLE = 0.3
"""Objects with a smaller visible fraction are left out of the annotations."""

MIN_BOX_SIDE = 4
"""Objects whose visible box is narrower or lower than this (pixels) are left out."""

MIN_OBJECT_SIZE = 16
"""Smallest object (longer side, pixels); the largest is ``MAX_OBJECT_FRACTION * min(w, h)``."""

MAX_OBJECT_FRACTION = 0.42

MIN_IMAGE_SIDE = 64
DATASET_FORMAT = 'darknet53_ros.training.synthetic/1'
DATASET_FILE = 'dataset.yaml'
NAMES_FILE = 'classes.names'
VAL_SEED_OFFSET = 1_000_003
"""The ``synth`` command generates the val split with ``seed + VAL_SEED_OFFSET``."""

CAMERA_NAMES: tuple[str, ...] = ('front', 'left', 'right', 'rear', 'top', 'bottom')
BAG_START_NS = 1_700_000_000_000_000_000
"""Stamp of the first frame in bags from :func:`write_camera_bag` (fixed for reproducibility)."""

_T = TypeVar('_T')
_GAUSS_LUT = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)
Patch = tuple[np.ndarray, np.ndarray]


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
# small helpers


def _hsv(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
         val: tuple[float, float]) -> np.ndarray:
    """Random BGR colour (float, 0..255); ``hue`` in degrees, may wrap below 0."""
    h = rng.uniform(*hue) % 360.0
    r, g, b = colorsys.hsv_to_rgb(h / 360.0, rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def _col(colour: np.ndarray, factor: float = 1.0) -> tuple[int, int, int]:
    """A colour as the int tuple OpenCV drawing functions take."""
    b, g, r = np.clip(colour * factor, 0, 255)
    return int(b), int(g), int(r)


def _pts(points: Iterable[tuple[float, float]]) -> np.ndarray:
    """Polygon vertices as the rounded int32 array OpenCV takes."""
    return np.round(np.asarray(list(points), np.float64)).astype(np.int32)


def _fill(patch: np.ndarray, mask: np.ndarray, pts: Iterable[tuple[float, float]],
          colour: tuple[int, int, int]) -> None:
    poly = _pts(pts)
    cv2.fillPoly(patch, [poly], colour)
    cv2.fillPoly(mask, [poly], 1)


def _shade_columns(patch: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> None:
    """Cylinder-like horizontal shading in place (light from a random side)."""
    w = patch.shape[1]
    centre = rng.uniform(0.25, 0.75) * w
    x = (np.arange(w, dtype=np.float32) - centre) / max(w, 1)
    profile = hi - (hi - lo) * np.clip(np.abs(x) * 1.6, 0, 1) ** 1.5
    np.multiply(patch, profile[None, :, None], out=patch, casting='unsafe')


def _blank(w: int, h: int) -> Patch:
    return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)


# --------------------------------------------------------------------------------------------
# objects: each returns (bgr patch h x w x 3, mask h x w uint8 0/1)


def _render_box(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Shaded cuboid (cardboard box or plastic crate) seen slightly from above."""
    patch, mask = _blank(w, h)
    if rng.random() < 0.7:
        base = _hsv(rng, (20, 40), (0.35, 0.75), (0.5, 0.9))
    else:
        base = _hsv(rng, (0, 360), (0.4, 0.9), (0.35, 0.9))
    d = max(2, int(round(rng.uniform(0.15, 0.35) * min(w, h))))
    right = rng.random() < 0.5
    fx0, fx1 = (0, w - 1 - d) if right else (d, w - 1)
    off = d if right else -d
    front = [(fx0, d), (fx1, d), (fx1, h - 1), (fx0, h - 1)]
    top = [(fx0, d), (fx1, d), (fx1 + off, 0), (fx0 + off, 0)]
    if right:
        side = [(fx1, d), (w - 1, 0), (w - 1, h - 1 - d), (fx1, h - 1)]
    else:
        side = [(fx0, d), (0, 0), (0, h - 1 - d), (fx0, h - 1)]
    _fill(patch, mask, front, _col(base, rng.uniform(0.75, 0.95)))
    _fill(patch, mask, top, _col(base, rng.uniform(1.05, 1.3)))
    _fill(patch, mask, side, _col(base, rng.uniform(0.45, 0.7)))
    if rng.random() < 0.5:  # packing tape across the top and down the front
        tape = _col(_hsv(rng, (25, 45), (0.1, 0.45), (0.6, 0.95)))
        cx, half = (fx0 + fx1) / 2, max(1.0, (fx1 - fx0) * 0.08)
        down = d + (h - d) * rng.uniform(0.2, 0.45)
        cv2.fillPoly(patch, [_pts([(cx - half, d), (cx + half, d), (cx + half + off, 0),
                                       (cx - half + off, 0)])], tape)
        cv2.rectangle(patch, (int(cx - half), d), (int(cx + half), int(down)), tape, -1)
    if rng.random() < 0.35 and fx1 - fx0 > 12:  # shipping label
        lw, lh = (fx1 - fx0) * rng.uniform(0.2, 0.35), (h - d) * rng.uniform(0.15, 0.25)
        lx, ly = fx0 + (fx1 - fx0 - lw) * rng.uniform(0.1, 0.9), d + (h - d) * 0.55
        cv2.rectangle(patch, (int(lx), int(ly)), (int(lx + lw), int(ly + lh)),
                      _col(np.full(3, 235.0)), -1)
    if rng.random() < 0.6:
        edge = _col(base, 0.35)
        for poly in (front, top, side):
            cv2.polylines(patch, [_pts(poly)], True, edge, 1)
    patch[mask == 0] = 0
    return patch, mask


def _render_cone(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Traffic cone: orange trapezoid with white stripes on a square base, cylinder shading."""
    patch, mask = _blank(w, h)
    body = _hsv(rng, (-8, 22), (0.8, 1.0), (0.75, 1.0))
    hb = max(2, int(round(h * rng.uniform(0.07, 0.12))))
    ybody = h - hb
    cx = (w - 1) / 2
    top_half = max(1.0, w * rng.uniform(0.05, 0.11))
    bot_half = w * rng.uniform(0.36, 0.45)
    base_col = _col(body, 0.6) if rng.random() < 0.5 else _col(_hsv(rng, (0, 360), (0, .2),
                                                                     (0.05, 0.25)))
    _fill(patch, mask, [(0, ybody), (w - 1, ybody), (w - 1, h - 1), (0, h - 1)], base_col)
    _fill(patch, mask, [(cx - top_half, 0), (cx + top_half, 0), (cx + bot_half, ybody),
                        (cx - bot_half, ybody)], _col(body))

    def half_width(y: float) -> float:
        return top_half + (bot_half - top_half) * y / ybody

    bands = [(0.22, 0.36)] if rng.random() < 0.5 else [(0.18, 0.3), (0.48, 0.6)]
    stripe = _col(_hsv(rng, (0, 360), (0, 0.08), (0.85, 1.0)))
    for a, b in bands:
        ya, yb = a * ybody, b * ybody
        poly = [(cx - half_width(ya), ya), (cx + half_width(ya), ya),
                (cx + half_width(yb), yb), (cx - half_width(yb), yb)]
        cv2.fillPoly(patch, [_pts(poly)], stripe)
    _shade_columns(patch, rng, 0.55, 1.05)
    patch[mask == 0] = 0
    return patch, mask


def _render_ball(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Sphere-shaded disc with a specular highlight, sometimes with a seam stripe."""
    patch, mask = _blank(w, h)
    colour = _hsv(rng, (0, 360), (0.55, 1.0), (0.6, 1.0))
    centre, axes = ((w - 1) // 2, (h - 1) // 2), ((w - 1) // 2, (h - 1) // 2)
    cv2.ellipse(patch, centre, axes, 0, 0, 360, _col(colour), -1)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    if rng.random() < 0.4:
        second = _col(_hsv(rng, (0, 360), (0.0, 1.0), (0.7, 1.0)))
        thick = max(1, int(min(w, h) * rng.uniform(0.08, 0.18)))
        cv2.ellipse(patch, (int(w * rng.uniform(-0.4, 1.4)), centre[1]),
                    (max(1, int(w * 0.9)), max(1, int(h * rng.uniform(0.5, 1.0)))),
                    rng.uniform(-30, 30), 0, 360, second, thick)
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max((h - 1) / 2, 1)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max((w - 1) / 2, 1)
    nz = np.sqrt(np.clip(1 - y[:, None] ** 2 - x[None, :] ** 2, 0, 1))
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2), 0.8], np.float32)
    light /= np.linalg.norm(light)
    lam = np.clip(x[None, :] * light[0] + y[:, None] * light[1] + nz * light[2], 0, 1)
    shade = 0.2 + 0.9 * lam
    spec = (lam ** 24 * rng.uniform(60, 160))[..., None]
    out = patch.astype(np.float32) * shade[..., None] + spec
    patch = np.clip(out, 0, 255).astype(np.uint8)
    patch[mask == 0] = 0
    return patch, mask


def _render_person(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Simple standing figure: head, torso, arms and legs with clothes and skin colours."""
    patch, mask = _blank(w, h)
    skin = _col(_hsv(rng, (10, 35), (0.25, 0.65), (0.3, 0.95)))
    shirt = _col(_hsv(rng, (0, 360), (0.0, 0.9), (0.2, 0.95)))
    pants = _col(_hsv(rng, (200, 240), (0.1, 0.7), (0.1, 0.5)) if rng.random() < 0.6
                 else _hsv(rng, (0, 360), (0.0, 0.5), (0.1, 0.6)))
    shoes = _col(_hsv(rng, (0, 360), (0.0, 0.3), (0.05, 0.35)))
    cx = (w - 1) / 2 + rng.uniform(-0.05, 0.05) * w
    head_r = max(2, int(round(h * rng.uniform(0.065, 0.08))))
    head_c = (int(round(cx)), head_r)
    shoulder_y = 2 * head_r + max(1, h // 50)
    hip_y = h * rng.uniform(0.5, 0.56)
    tw = w * rng.uniform(0.42, 0.56)
    arm_t = max(2, int(round(w * rng.uniform(0.1, 0.14))))
    leg_t = max(2, int(round(w * rng.uniform(0.14, 0.19))))

    def line(p: tuple[float, float], q: tuple[float, float], colour: tuple[int, int, int],
             t: int) -> None:
        a, b = (int(round(p[0])), int(round(p[1]))), (int(round(q[0])), int(round(q[1])))
        cv2.line(patch, a, b, colour, t)
        cv2.line(mask, a, b, 1, t)

    for sign in (-1, 1):  # legs first, torso over them
        hip = (cx + sign * tw * 0.2, hip_y)
        foot_x = cx + sign * rng.uniform(0.05, 0.5) * (w / 2 - leg_t / 2)
        foot_y = h - 1 - leg_t / 2
        line(hip, (foot_x, foot_y), pants, leg_t)
        shoe_c = (int(round(foot_x + sign * leg_t * 0.3)), int(round(h - 1 - leg_t * 0.3)))
        shoe_a = (max(1, int(leg_t * 0.7)), max(1, int(leg_t * 0.35)))
        cv2.ellipse(patch, shoe_c, shoe_a, 0, 0, 360, shoes, -1)
        cv2.ellipse(mask, shoe_c, shoe_a, 0, 0, 360, 1, -1)
    _fill(patch, mask, [(cx - tw / 2, shoulder_y), (cx + tw / 2, shoulder_y),
                        (cx + tw * 0.4, hip_y), (cx - tw * 0.4, hip_y)], shirt)
    for sign in (-1, 1):
        shoulder = (cx + sign * (tw / 2 - arm_t / 2), shoulder_y + arm_t / 2)
        reach = rng.uniform(0.0, 1.0) * max(0.0, w / 2 - tw / 2 - arm_t / 2)
        hand = (cx + sign * (tw / 2 + reach - arm_t / 2 + 1), hip_y + h * rng.uniform(-0.08, 0.02))
        line(shoulder, hand, shirt, arm_t)
        hand_c = (int(round(hand[0])), int(round(hand[1])))
        cv2.circle(patch, hand_c, max(1, arm_t // 2), skin, -1)
        cv2.circle(mask, hand_c, max(1, arm_t // 2), 1, -1)
    neck = max(1, head_r // 2)
    line((cx, head_r), (cx, shoulder_y), skin, max(2, neck))
    cv2.circle(patch, head_c, head_r, skin, -1)
    cv2.circle(mask, head_c, head_r, 1, -1)
    if rng.random() < 0.6:  # hair or cap
        hair = _col(_hsv(rng, (0, 60), (0.2, 0.8), (0.05, 0.45)))
        cv2.ellipse(patch, head_c, (head_r, head_r), 0, 180, 360, hair, -1)
    _shade_columns(patch, rng, 0.7, 1.05)
    patch[mask == 0] = 0
    return patch, mask


def _render_sign(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Flat traffic/safety sign: stop octagon, blue mandatory disc, prohibition ring, diamond."""
    patch, mask = _blank(w, h)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rx, ry = (w - 1) / 2, (h - 1) / 2
    white = _col(_hsv(rng, (0, 360), (0, 0.06), (0.88, 1.0)))
    kind = int(rng.integers(4))

    def ngon(n: int, scale: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + scale * rx * math.cos(phase + 2 * math.pi * k / n),
                 cy + scale * ry * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]

    def disc(scale: float, colour: tuple[int, int, int]) -> None:
        axes = (max(1, int(rx * scale)), max(1, int(ry * scale)))
        cv2.ellipse(patch, (int(round(cx)), int(round(cy))), axes, 0, 0, 360, colour, -1)

    bar = (int(cx - rx * 0.55), int(cy - ry * 0.13), int(cx + rx * 0.55), int(cy + ry * 0.13))
    if kind == 0:  # stop: red octagon, white rim, white bar (text)
        red = _col(_hsv(rng, (-10, 6), (0.75, 1.0), (0.55, 0.95)))
        outer = ngon(8, 1.0, math.pi / 8)
        _fill(patch, mask, outer, white)
        cv2.fillPoly(patch, [_pts(ngon(8, 0.86, math.pi / 8))],
                     red)
        cv2.rectangle(patch, bar[:2], bar[2:], white, -1)
    elif kind == 1:  # mandatory: blue disc, thin white rim, white arrow
        blue = _col(_hsv(rng, (205, 225), (0.7, 1.0), (0.45, 0.9)))
        disc(1.0, white)
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(1, int(rx)), max(1, int(ry))),
                    0, 0, 360, 1, -1)
        disc(0.9, blue)
        t = max(1, int(min(rx, ry) * 0.18))
        cv2.line(patch, (int(cx), int(cy + ry * 0.5)), (int(cx), int(cy - ry * 0.35)), white, t)
        arrow = [(cx - rx * 0.35, cy - ry * 0.2), (cx + rx * 0.35, cy - ry * 0.2),
                 (cx, cy - ry * 0.6)]
        cv2.fillPoly(patch, [_pts(arrow)], white)
    elif kind == 2:  # prohibition / no entry: red ring on white, or red disc with white bar
        red = _col(_hsv(rng, (-10, 6), (0.75, 1.0), (0.55, 0.95)))
        disc(1.0, red)
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(1, int(rx)), max(1, int(ry))),
                    0, 0, 360, 1, -1)
        if rng.random() < 0.5:
            disc(0.75, white)
            t = max(1, int(min(rx, ry) * 0.2))
            cv2.line(patch, (int(cx - rx * 0.5), int(cy - ry * 0.5)),
                     (int(cx + rx * 0.5), int(cy + ry * 0.5)), red, t)
        else:
            cv2.rectangle(patch, bar[:2], bar[2:], white, -1)
    else:  # warning diamond: yellow with black rim and a black mark
        yellow = _col(_hsv(rng, (42, 55), (0.8, 1.0), (0.75, 1.0)))
        black = _col(_hsv(rng, (0, 360), (0, 0.2), (0.0, 0.15)))
        _fill(patch, mask, ngon(4, 1.0, 0.0), black)
        cv2.fillPoly(patch, [_pts(ngon(4, 0.82, 0.0))], yellow)
        t = max(1, int(min(rx, ry) * 0.14))
        cv2.line(patch, (int(cx), int(cy - ry * 0.4)), (int(cx), int(cy + ry * 0.15)), black, t)
        cv2.circle(patch, (int(cx), int(cy + ry * 0.35)), max(1, t // 2 + 1), black, -1)
    gain = np.linspace(rng.uniform(0.9, 1.1), rng.uniform(0.75, 0.95), h, dtype=np.float32)
    np.multiply(patch, gain[:, None, None], out=patch, casting='unsafe')
    patch[mask == 0] = 0
    return patch, mask


_RENDERERS: tuple[Callable[[np.random.Generator, int, int], Patch], ...] = (
    _render_box, _render_cone, _render_ball, _render_person, _render_sign)
# width / height ranges and ground-distance factor (camera height / object height) per class
_ASPECTS: tuple[tuple[float, float], ...] = ((0.8, 1.8), (0.5, 0.8), (0.9, 1.1), (0.3, 0.48),
                                             (0.85, 1.15))
_GROUND: tuple[float, ...] = (0.9, 0.9, 1.2, 0.4, 0.45)


def render_object(class_id: int, width: int, height: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one object of ``class_id`` as a ``(bgr patch, 0/1 uint8 mask)`` of the given size."""
    if not 0 <= class_id < len(CLASS_NAMES):
        raise ConfigError(f'class_id {class_id} outside 0..{len(CLASS_NAMES) - 1}')
    if width < 2 or height < 2:
        raise ConfigError(f'object size {width}x{height} is below 2x2 pixels')
    return _RENDERERS[class_id](rng, int(width), int(height))


# --------------------------------------------------------------------------------------------
# occluders, background and camera


def _render_pole(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Metal pole or table leg: grey bar with horizontal cylinder shading."""
    patch = np.empty((h, w, 3), np.uint8)
    patch[:] = _col(_hsv(rng, (0, 360), (0.0, 0.25), (0.25, 0.85)))
    _shade_columns(patch, rng, 0.5, 1.1)
    return patch, np.ones((h, w), np.uint8)


def _render_slab(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Flat, unshaded foreground slab (crate edge, doorframe, furniture)."""
    patch = np.empty((h, w, 3), np.uint8)
    patch[:] = _col(_hsv(rng, (0, 360), (0.0, 0.6), (0.1, 0.8)))
    if rng.random() < 0.5:
        cv2.rectangle(patch, (0, 0), (w - 1, h - 1), _col(_hsv(rng, (0, 360), (0, .5), (0, .5))),
                      max(1, min(w, h) // 10))
    return patch, np.ones((h, w), np.uint8)


_FLOORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((0, 360), (0.0, 0.1), (0.3, 0.7)),     # concrete
    ((20, 40), (0.3, 0.6), (0.3, 0.7)),     # wood
    ((0, 360), (0.15, 0.5), (0.2, 0.6)),    # carpet / linoleum
    ((0, 360), (0.0, 0.08), (0.1, 0.3)),    # asphalt
    ((80, 140), (0.3, 0.7), (0.2, 0.55)),   # grass
)


def _background(rng: np.random.Generator, w: int, h: int, horizon: int) -> np.ndarray:
    wall = _hsv(rng, (0, 360), (0.0, 0.3), (0.35, 0.9))
    floor = _hsv(rng, *_FLOORS[int(rng.integers(len(_FLOORS)))])
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
        line_col = _col(floor, rng.uniform(0.55, 0.85))
        vx = rng.uniform(0.1, 0.9) * w
        n = int(rng.integers(5, 15))
        for xb in np.linspace(-w, 2 * w, n):
            cv2.line(img, (int(vx), horizon), (int(xb), h - 1), line_col, 1)
        near = rng.uniform(1.0, 3.0)
        for k in range(1, 12):
            y = horizon + (h - horizon) * near / (near + k * rng.uniform(0.8, 1.2) - 1)
            if horizon < y < h:
                cv2.line(img, (0, int(y)), (w - 1, int(y)), line_col, 1)
    board = _col(wall, rng.uniform(0.3, 0.7))
    cv2.line(img, (0, horizon), (w - 1, horizon), board, int(rng.integers(1, 5)))
    for _ in range(int(rng.integers(0, 4))):  # doors, windows, posters, shelves on the wall
        rw, rh = rng.uniform(0.05, 0.3) * w, rng.uniform(0.1, 0.9) * max(horizon, 8)
        x0, y0 = rng.uniform(-0.1, 1.0) * w, horizon - rh * rng.uniform(0.3, 1.0)
        p0, p1 = (int(x0), int(y0)), (int(x0 + rw), int(y0 + rh))
        cv2.rectangle(img, p0, p1, _col(_hsv(rng, (0, 360), (0, 0.6), (0.2, 1.0))), -1)
        cv2.rectangle(img, p0, p1, _col(wall, 0.5), int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(2, 10))):  # clutter and distractor shapes (not objects)
        _distractor(rng, img)
    return img


def _distractor(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    colour = _col(_hsv(rng, (0, 360), (0, 1), (0.1, 1)))
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
        result.append(Annotation(int(layer.class_id or 0), *box, float(fraction)))
    return result


def _check_size(width: int, height: int) -> None:
    if int(width) < MIN_IMAGE_SIDE or int(height) < MIN_IMAGE_SIDE:
        raise ConfigError(f'image size {width}x{height}: both sides must be >= {MIN_IMAGE_SIDE}')


def _scene_layers(rng: np.random.Generator, w: int, h: int, horizon: int) -> list[Layer]:
    smin, smax = float(MIN_OBJECT_SIZE), MAX_OBJECT_FRACTION * min(w, h)
    staged: list[tuple[float, int, list[Layer]]] = []
    count = int(min(1 + rng.poisson(3.0), 9))
    for order in range(count):
        cls = int(rng.integers(len(CLASS_NAMES)))
        size = math.exp(rng.uniform(math.log(smin), math.log(smax)))
        aspect = rng.uniform(*_ASPECTS[cls])
        ow, oh = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
        ow, oh = max(6, int(round(ow))), max(6, int(round(oh)))
        ground = horizon + oh * _GROUND[cls] * rng.uniform(0.8, 1.25)
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
                                   *_render_pole(rng, pole_w, pole_h)))
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
            renderer = _render_pole
            x, y = int(rng.uniform(-pw / 2, w - pw / 2)), 0
        else:
            pw, ph = int(rng.uniform(0.1, 0.4) * w), int(rng.uniform(0.1, 0.35) * h)
            renderer = _render_slab
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
    _check_size(width, height)
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


# --------------------------------------------------------------------------------------------
# datasets


def _progress(items: Iterable[_T], total: int, desc: str, enabled: bool) -> Iterator[_T]:
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            yield from tqdm(items, total=total, desc=desc, unit='img')
            return
    yield from items


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing what was there."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f'.{final.name}.old-{os.getpid()}')
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def coco_category_id(class_id: int) -> int:
    """COCO category id of a 0-based class id (``class_id + 1``)."""
    return class_id + 1


def write_dataset(out_dir: str | os.PathLike[str], count: int, seed: int, width: int = 320,
                  height: int = 256, split_name: str = 'train', image_format: str = 'jpg',
                  progress: bool = False) -> dict[str, Any]:
    """Write split ``split_name`` (scenes ``0..count-1`` of stream ``seed``) under ``out_dir``.

    Layout (paths relative to ``out_dir``): ``<split>/images/NNNNNN.<ext>``,
    ``<split>/labels/NNNNNN.txt`` (Darknet: ``class cx cy w h`` normalised),
    ``<split>/annotations.json`` (COCO), ``<split>.txt`` (image list), ``classes.names`` and
    ``dataset.yaml``, into which the split's entry is merged (other splits are kept). The split
    folder is built aside and swapped in, the text files are replaced atomically. Returns the
    split's ``dataset.yaml`` entry.
    """
    import yaml

    if count < 0:
        raise ConfigError(f'count {count} must be >= 0')
    if not split_name or not split_name.replace('_', '').replace('-', '').isalnum():
        raise ConfigError(f'split name {split_name!r} must be alphanumeric (-, _ allowed)')
    ext = image_format.lower().lstrip('.')
    if ext not in ('jpg', 'png'):
        raise ConfigError(f'image format {image_format!r}: use jpg or png')
    _check_size(width, height)
    if int(seed) < 0:
        raise ConfigError(f'seed {seed} must be non-negative')
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    description_path = root / DATASET_FILE
    description = _read_yaml(description_path) if description_path.exists() else {}
    if description.get('names', list(CLASS_NAMES)) != list(CLASS_NAMES):
        raise DatasetError(f'{description_path}: names {description.get("names")} differ from '
                           f'{list(CLASS_NAMES)}; use an empty output folder')
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 95] if ext == 'jpg' else [
        int(cv2.IMWRITE_PNG_COMPRESSION), 3]

    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f'.{split_name}.', suffix='.tmp'))
    try:
        (tmp / 'images').mkdir()
        (tmp / 'labels').mkdir()
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for index in _progress(range(count), count, split_name, progress):
            image, objects = generate_scene(seed, index, width, height)
            name = f'{index:06d}'
            ok, data = cv2.imencode(f'.{ext}', image, params)
            if not ok:
                raise DatasetError(f'{tmp / "images" / name}.{ext}: encoding failed')
            (tmp / 'images' / f'{name}.{ext}').write_bytes(data.tobytes())
            lines = []
            for ann in objects:
                bw, bh = ann.x2 - ann.x1, ann.y2 - ann.y1
                lines.append(f'{ann.class_id} {(ann.x1 + bw / 2) / width:.6f} '
                             f'{(ann.y1 + bh / 2) / height:.6f} {bw / width:.6f} '
                             f'{bh / height:.6f}\n')
                annotations.append({
                    'id': len(annotations) + 1, 'image_id': index + 1,
                    'category_id': coco_category_id(ann.class_id),
                    'bbox': [float(ann.x1), float(ann.y1), float(bw), float(bh)],
                    'area': float(bw * bh), 'iscrowd': 0,
                    'visible_fraction': round(ann.visible_fraction, 4)})
            (tmp / 'labels' / f'{name}.txt').write_text(''.join(lines), encoding='utf-8')
            images.append({'id': index + 1, 'file_name': f'{name}.{ext}', 'width': int(width),
                           'height': int(height)})
        coco = {
            'info': {'description': f'darknet53_ros synthetic scenes, split {split_name}',
                     'version': DATASET_FORMAT, 'seed': int(seed)},
            'licenses': [],
            'images': images,
            'annotations': annotations,
            'categories': [{'id': coco_category_id(i), 'name': name, 'supercategory': 'object'}
                           for i, name in enumerate(CLASS_NAMES)],
        }
        (tmp / 'annotations.json').write_text(json.dumps(coco), encoding='utf-8')
        _replace_dir(tmp, root / split_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    atomic_write_text(root / f'{split_name}.txt',
                      ''.join(f'{split_name}/images/{img["file_name"]}\n' for img in images))
    atomic_write_text(root / NAMES_FILE, ''.join(f'{name}\n' for name in CLASS_NAMES))
    entry = {
        'images': f'{split_name}/images', 'labels': f'{split_name}/labels',
        'annotations': f'{split_name}/annotations.json', 'list': f'{split_name}.txt',
        'count': int(count), 'objects': len(annotations), 'seed': int(seed),
        'width': int(width), 'height': int(height), 'image_format': ext,
    }
    splits = dict(description.get('splits') or {})
    splits[split_name] = entry
    description = {
        'format': DATASET_FORMAT,
        'names': list(CLASS_NAMES),
        'nc': len(CLASS_NAMES),
        'names_file': NAMES_FILE,
        'category_ids': [coco_category_id(i) for i in range(len(CLASS_NAMES))],
        'min_visible': MIN_VISIBLE,
        'box': 'visible-tight, x1 y1 inclusive, x2 y2 exclusive pixel edges',
        **{name: split['images'] for name, split in sorted(splits.items())},
        'splits': {name: splits[name] for name in sorted(splits)},
    }
    atomic_write_text(description_path, yaml.safe_dump(description, sort_keys=False))
    return entry


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f'{path}: cannot read dataset description: {exc}') from exc
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: dataset description must be a mapping')
    return data


def load_dataset_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``dataset.yaml`` (or the folder holding one); split paths become absolute.

    Returns the mapping with ``root`` (the folder) added and each ``splits.<name>`` entry's
    ``images``, ``labels``, ``annotations`` and ``list`` resolved against it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILE
    data = _read_yaml(path)
    names = data.get('names')
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(f'{path}: field "names" must be a non-empty list of strings')
    splits = data.get('splits')
    if not isinstance(splits, dict) or not splits:
        raise DatasetError(f'{path}: field "splits" must map split names to entries')
    root = path.parent.resolve()
    resolved = {}
    for name, entry in splits.items():
        if not isinstance(entry, dict):
            raise DatasetError(f'{path}: splits.{name} must be a mapping')
        entry = dict(entry)
        for key in ('images', 'labels', 'annotations', 'list'):
            if key not in entry:
                raise DatasetError(f'{path}: splits.{name}.{key} is missing')
            entry[key] = str(root / str(entry[key]))
        resolved[name] = entry
    return {**data, 'root': str(root), 'splits': resolved}


# --------------------------------------------------------------------------------------------
# rosbag2


def camera_topics(cameras: int) -> list[tuple[str, str, str]]:
    """``(topic, msgtype, frame_id)`` per camera: even cameras raw bgr8, odd ones JPEG."""
    result = []
    for k in range(cameras):
        name = CAMERA_NAMES[k] if k < len(CAMERA_NAMES) else f'cam{k}'
        frame_id = f'{name}_camera_optical_frame'
        if k % 2 == 0:
            result.append((f'/{name}/image_raw', 'sensor_msgs/msg/Image', frame_id))
        else:
            result.append((f'/{name}/image_raw/compressed', 'sensor_msgs/msg/CompressedImage',
                           frame_id))
    return result


def write_camera_bag(path: str | os.PathLike[str], cameras: int = 2, frames: int = 20,
                     seed: int = 0, width: int = 320, height: int = 256, fps: float = 10.0,
                     overwrite: bool = False, progress: bool = False) -> dict[str, int]:
    """Write a multi-camera rosbag2 (MCAP) of synthetic scenes; returns messages per topic.

    Camera ``k`` (see :func:`camera_topics`) shows scene ``frame * cameras + k`` of stream
    ``seed``; frame ``i`` is stamped ``BAG_START_NS + i / fps + k`` milliseconds (header stamp and
    bag timestamp agree). The bag is written to a temporary folder beside ``path`` and renamed.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if cameras < 1 or frames < 1:
        raise ConfigError(f'cameras ({cameras}) and frames ({frames}) must be >= 1')
    if not fps > 0:
        raise ConfigError(f'fps {fps} must be > 0')
    _check_size(width, height)
    target = Path(path)
    if target.exists() and not overwrite:
        raise SourceError(f'{target}: already exists (pass overwrite=True to replace it)')
    target.parent.mkdir(parents=True, exist_ok=True)
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    Header, Time = types['std_msgs/msg/Header'], types['builtin_interfaces/msg/Time']
    Image, Compressed = types['sensor_msgs/msg/Image'], types['sensor_msgs/msg/CompressedImage']
    topics = camera_topics(cameras)
    counts = dict.fromkeys((topic for topic, _, _ in topics), 0)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f'.{target.name}.', suffix='.tmp'))
    try:
        bag = tmp / target.name
        with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = [writer.add_connection(topic, msgtype, typestore=store)
                     for topic, msgtype, _ in topics]
            for frame in _progress(range(frames), frames, 'bag', progress):
                for k, ((topic, msgtype, frame_id), conn) in enumerate(zip(topics, conns)):
                    stamp = BAG_START_NS + round(frame * 1e9 / fps) + k * 1_000_000
                    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                    frame_id=frame_id)
                    image, _ = generate_scene(seed, frame * cameras + k, width, height)
                    if msgtype == 'sensor_msgs/msg/Image':
                        msg = Image(header=header, height=height, width=width, encoding='bgr8',
                                    is_bigendian=0, step=width * 3, data=image.reshape(-1))
                    else:
                        ok, data = cv2.imencode('.jpg', image, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
                        if not ok:
                            raise SourceError(f'{topic}: JPEG encoding failed')
                        msg = Compressed(header=header, format='jpeg', data=data.reshape(-1))
                    writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))
                    counts[topic] += 1
        _replace_dir(bag, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
