"""The synthetic scenes' objects and occluders: each renderer returns ``(bgr patch h x w x 3,
mask h x w uint8 0/1)`` of the requested size."""
from __future__ import annotations

from collections.abc import Callable, Iterable
import colorsys
import math
import typing

import cv2
import numpy as np

from darknet53_ros.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ('box', 'cone', 'ball', 'person', 'sign')
"""Object classes; the index is the Darknet class id, the COCO category id is index + 1."""

Patch = typing.Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------
# small helpers


def hsv_colour(rng: np.random.Generator, hue: tuple[float, float],
               sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """Random BGR colour (float, 0..255); ``hue`` in degrees, may wrap below 0."""
    h = rng.uniform(*hue) % 360.0
    r, g, b = colorsys.hsv_to_rgb(h / 360.0, rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def cv_colour(colour: np.ndarray, factor: float = 1.0) -> tuple[int, int, int]:
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
        base = hsv_colour(rng, (20, 40), (0.35, 0.75), (0.5, 0.9))
    else:
        base = hsv_colour(rng, (0, 360), (0.4, 0.9), (0.35, 0.9))
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
    _fill(patch, mask, front, cv_colour(base, rng.uniform(0.75, 0.95)))
    _fill(patch, mask, top, cv_colour(base, rng.uniform(1.05, 1.3)))
    _fill(patch, mask, side, cv_colour(base, rng.uniform(0.45, 0.7)))
    if rng.random() < 0.5:  # packing tape across the top and down the front
        tape = cv_colour(hsv_colour(rng, (25, 45), (0.1, 0.45), (0.6, 0.95)))
        cx, half = (fx0 + fx1) / 2, max(1.0, (fx1 - fx0) * 0.08)
        down = d + (h - d) * rng.uniform(0.2, 0.45)
        cv2.fillPoly(patch, [_pts([(cx - half, d), (cx + half, d), (cx + half + off, 0),
                                       (cx - half + off, 0)])], tape)
        cv2.rectangle(patch, (int(cx - half), d), (int(cx + half), int(down)), tape, -1)
    if rng.random() < 0.35 and fx1 - fx0 > 12:  # shipping label
        lw, lh = (fx1 - fx0) * rng.uniform(0.2, 0.35), (h - d) * rng.uniform(0.15, 0.25)
        lx, ly = fx0 + (fx1 - fx0 - lw) * rng.uniform(0.1, 0.9), d + (h - d) * 0.55
        cv2.rectangle(patch, (int(lx), int(ly)), (int(lx + lw), int(ly + lh)),
                      cv_colour(np.full(3, 235.0)), -1)
    if rng.random() < 0.6:
        edge = cv_colour(base, 0.35)
        for poly in (front, top, side):
            cv2.polylines(patch, [_pts(poly)], True, edge, 1)
    patch[mask == 0] = 0
    return patch, mask


def _render_cone(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Traffic cone: orange trapezoid with white stripes on a square base, cylinder shading."""
    patch, mask = _blank(w, h)
    body = hsv_colour(rng, (-8, 22), (0.8, 1.0), (0.75, 1.0))
    hb = max(2, int(round(h * rng.uniform(0.07, 0.12))))
    ybody = h - hb
    cx = (w - 1) / 2
    top_half = max(1.0, w * rng.uniform(0.05, 0.11))
    bot_half = w * rng.uniform(0.36, 0.45)
    base_col = (cv_colour(body, 0.6) if rng.random() < 0.5
                else cv_colour(hsv_colour(rng, (0, 360), (0, .2), (0.05, 0.25))))
    _fill(patch, mask, [(0, ybody), (w - 1, ybody), (w - 1, h - 1), (0, h - 1)], base_col)
    _fill(patch, mask, [(cx - top_half, 0), (cx + top_half, 0), (cx + bot_half, ybody),
                        (cx - bot_half, ybody)], cv_colour(body))

    def half_width(y: float) -> float:
        return top_half + (bot_half - top_half) * y / ybody

    bands = [(0.22, 0.36)] if rng.random() < 0.5 else [(0.18, 0.3), (0.48, 0.6)]
    stripe = cv_colour(hsv_colour(rng, (0, 360), (0, 0.08), (0.85, 1.0)))
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
    colour = hsv_colour(rng, (0, 360), (0.55, 1.0), (0.6, 1.0))
    centre, axes = ((w - 1) // 2, (h - 1) // 2), ((w - 1) // 2, (h - 1) // 2)
    cv2.ellipse(patch, centre, axes, 0, 0, 360, cv_colour(colour), -1)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    if rng.random() < 0.4:
        second = cv_colour(hsv_colour(rng, (0, 360), (0.0, 1.0), (0.7, 1.0)))
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
    skin = cv_colour(hsv_colour(rng, (10, 35), (0.25, 0.65), (0.3, 0.95)))
    shirt = cv_colour(hsv_colour(rng, (0, 360), (0.0, 0.9), (0.2, 0.95)))
    pants = cv_colour(hsv_colour(rng, (200, 240), (0.1, 0.7), (0.1, 0.5)) if rng.random() < 0.6
                      else hsv_colour(rng, (0, 360), (0.0, 0.5), (0.1, 0.6)))
    shoes = cv_colour(hsv_colour(rng, (0, 360), (0.0, 0.3), (0.05, 0.35)))
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
        hair = cv_colour(hsv_colour(rng, (0, 60), (0.2, 0.8), (0.05, 0.45)))
        cv2.ellipse(patch, head_c, (head_r, head_r), 0, 180, 360, hair, -1)
    _shade_columns(patch, rng, 0.7, 1.05)
    patch[mask == 0] = 0
    return patch, mask


def _render_sign(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Flat traffic/safety sign: stop octagon, blue mandatory disc, prohibition ring, diamond."""
    patch, mask = _blank(w, h)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rx, ry = (w - 1) / 2, (h - 1) / 2
    white = cv_colour(hsv_colour(rng, (0, 360), (0, 0.06), (0.88, 1.0)))
    kind = int(rng.integers(4))

    def ngon(n: int, scale: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + scale * rx * math.cos(phase + 2 * math.pi * k / n),
                 cy + scale * ry * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]

    def disc(scale: float, colour: tuple[int, int, int]) -> None:
        axes = (max(1, int(rx * scale)), max(1, int(ry * scale)))
        cv2.ellipse(patch, (int(round(cx)), int(round(cy))), axes, 0, 0, 360, colour, -1)

    bar = (int(cx - rx * 0.55), int(cy - ry * 0.13), int(cx + rx * 0.55), int(cy + ry * 0.13))
    if kind == 0:  # stop: red octagon, white rim, white bar (text)
        red = cv_colour(hsv_colour(rng, (-10, 6), (0.75, 1.0), (0.55, 0.95)))
        outer = ngon(8, 1.0, math.pi / 8)
        _fill(patch, mask, outer, white)
        cv2.fillPoly(patch, [_pts(ngon(8, 0.86, math.pi / 8))],
                     red)
        cv2.rectangle(patch, bar[:2], bar[2:], white, -1)
    elif kind == 1:  # mandatory: blue disc, thin white rim, white arrow
        blue = cv_colour(hsv_colour(rng, (205, 225), (0.7, 1.0), (0.45, 0.9)))
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
        red = cv_colour(hsv_colour(rng, (-10, 6), (0.75, 1.0), (0.55, 0.95)))
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
        yellow = cv_colour(hsv_colour(rng, (42, 55), (0.8, 1.0), (0.75, 1.0)))
        black = cv_colour(hsv_colour(rng, (0, 360), (0, 0.2), (0.0, 0.15)))
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
ASPECTS: tuple[tuple[float, float], ...] = ((0.8, 1.8), (0.5, 0.8), (0.9, 1.1), (0.3, 0.48),
                                             (0.85, 1.15))
GROUND: tuple[float, ...] = (0.9, 0.9, 1.2, 0.4, 0.45)


def render_object(class_id: int, width: int, height: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one object of ``class_id`` as a ``(bgr patch, 0/1 uint8 mask)`` of the given size."""
    if not 0 <= class_id < len(CLASS_NAMES):
        raise ConfigError(f'class_id {class_id} outside 0..{len(CLASS_NAMES) - 1}')
    if width < 2 or height < 2:
        raise ConfigError(f'object size {width}x{height} is below 2x2 pixels')
    return _RENDERERS[class_id](rng, int(width), int(height))


def render_pole(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Metal pole or table leg: grey bar with horizontal cylinder shading."""
    patch = np.empty((h, w, 3), np.uint8)
    patch[:] = cv_colour(hsv_colour(rng, (0, 360), (0.0, 0.25), (0.25, 0.85)))
    _shade_columns(patch, rng, 0.5, 1.1)
    return patch, np.ones((h, w), np.uint8)


def render_slab(rng: np.random.Generator, w: int, h: int) -> Patch:
    """Flat, unshaded foreground slab (crate edge, doorframe, furniture)."""
    patch = np.empty((h, w, 3), np.uint8)
    patch[:] = cv_colour(hsv_colour(rng, (0, 360), (0.0, 0.6), (0.1, 0.8)))
    if rng.random() < 0.5:
        edge = cv_colour(hsv_colour(rng, (0, 360), (0, .5), (0, .5)))
        cv2.rectangle(patch, (0, 0), (w - 1, h - 1), edge, max(1, min(w, h) // 10))
    return patch, np.ones((h, w), np.uint8)
