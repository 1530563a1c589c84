"""Synthetic video sequences with ground-truth identities, written in the MOTChallenge layout.

A sequence is a room or yard (:mod:`.scenes`' background, drawn as a panorama wider than the
view) seen by a camera that may pan, with objects of :data:`CLASS_NAMES` moving on the floor:

* **motion** on the ground plane in metres (camera height 1, focal length ``0.9 * width``
  pixels), so screen speed, size and height in the image follow depth: constant velocity with
  a random walk (noise), occasional acceleration phases (stop, turn, speed up; time constant
  0.3-1.2 s), depth kept in the class's range by reflection. People walk, balls roll fast,
  boxes are pushed or stand still, cones and signs (on poles) stand still: they move only with
  the camera's pan (an Ornstein-Uhlenbeck pan rate turned back by a spring near the ends of
  the panorama; half of the sequences static);
* **enter and leave**: objects enter from the sides while fewer than ``objects`` are near the
  view, and leave when they walk out of the panorama; objects panned out of view keep their id
  when they come back;
* **crossings and occlusion**: near objects are drawn over far ones; 1-3 static occluders
  (poles, foreground slabs) per sequence hide objects passing behind them;
* **frame rates** vary by sequence (:data:`FRAME_RATES`) unless given; motion is in seconds,
  so a low frame rate means larger steps between frames.

Ground truth follows :mod:`.scenes`: the box is the visible-tight box (x1, y1 inclusive,
x2, y2 exclusive pixel edges), ``visibility`` the visible fraction of the object's full mask.
Objects whose visible fraction is below :data:`TRACK_MIN_VISIBLE` or whose box is thinner than
:data:`MIN_BOX_SIDE` pixels are not in that frame's ground truth.

Layout (:func:`write_sequences`), per sequence ``SYNTH-<seed>-<index>`` under the output::

    seqinfo.ini   [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    img1/000001.jpg ...
    gt/gt.txt     frame,id,x,y,w,h,1,class,visibility  (MOTChallenge: frame and x, y 1-based)

plus ``seqmaps/SYNTH-all.txt`` listing every sequence in the folder. ``class`` is the class
index + 1 (as the COCO category ids). Every sequence depends only on
``(seed, index, frames, width, height, objects, fps)``.
"""
from __future__ import annotations

from collections.abc import Iterator
import configparser
from dataclasses import dataclass
import io
import math
import os
from pathlib import Path
import shutil
import tempfile
from typing import Tuple

import cv2
import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import atomic_write_text, replace_path
from darknet53_ros.progress import progress as progress_iter
from darknet53_ros.training.synthetic.objects import (
    ASPECTS,
    CLASS_NAMES,
    GROUND,
    render_object,
    render_pole,
    render_slab,
)
from darknet53_ros.training.synthetic.scenes import (
    MAX_OBJECT_FRACTION,
    MIN_BOX_SIDE,
    MIN_OBJECT_SIZE,
    Layer,
    _background,
    _camera,
    check_size,
    visible_objects,
)

FRAME_RATES = (5.0, 10.0, 15.0, 25.0, 30.0)
"""Frame rates a sequence is drawn from when none is given."""

TRACK_MIN_VISIBLE = 0.1
"""Objects less visible than this are left out of a frame's ground truth."""

BENCHMARK = 'SYNTH'
"""Benchmark name of the sequences and of ``seqmaps/SYNTH-all.txt``."""

_SEQUENCE_TAG = 0x5E9  # keeps sequence random streams apart from scene streams
_SPEED = ((0.0, 1.2), (0.0, 0.3), (1.0, 4.0), (0.5, 1.7), (0.0, 0.0))  # m/s per class
_MOVING = (0.5, 0.1, 0.95, 0.95, 0.0)  # probability that an object of the class moves


def sequence_name(seed: int, index: int) -> str:
    """``SYNTH-<seed>-<index, 3 digits>``."""
    return f'{BENCHMARK}-{int(seed)}-{int(index):03d}'


@dataclass
class _Object:
    """One moving object: ground-plane state in metres, and its sprite rendered once."""

    ident: int
    cls: int
    x: float   # lateral position (m) in the panorama frame (camera yaw 0)
    z: float   # depth (m)
    vx: float
    vz: float
    height: float  # metres
    aspect: float  # width / height
    z_range: tuple[float, float]
    patch: np.ndarray
    mask: np.ndarray
    pole: tuple[np.ndarray, np.ndarray] | None
    target: tuple[float, float] | None = None
    tau: float = 1.0
    noise: float = 0.0


class _World:
    """The state of one sequence; :meth:`step` advances it by ``dt`` seconds."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, objects: int,
                 pan_range: int) -> None:
        self.rng, self.w, self.h = rng, width, height
        self.objects_wanted = objects
        self.focal = 0.9 * width
        self.horizon = int(height * rng.uniform(0.25, 0.45))
        self.pan_range = pan_range
        self.pan = float(rng.uniform(0, pan_range))
        self.pan_rate = 0.0 if rng.random() < 0.5 else float(rng.normal(0, 0.12 * width))
        self.next_id = 1
        self.alive: list[_Object] = []
        self.occluders = self._occluders()
        for _ in range(objects):
            self._spawn(inside=True)

    # -- geometry ----------------------------------------------------------------------------
    def screen_x(self, obj: _Object) -> float:
        """Panorama x (pixels) of the object's centre."""
        return self.w / 2 + self.pan_range / 2 + self.focal * obj.x / obj.z

    def ground_y(self, z: float) -> float:
        """Image row of the floor at depth ``z``."""
        return self.horizon + self.focal / z

    def _z_range(self, cls: int, height: float) -> tuple[float, float]:
        smax = MAX_OBJECT_FRACTION * min(self.w, self.h)
        near_floor = self.focal / max(1.08 * self.h - self.horizon, 1.0)
        z_min = max(self.focal * height / smax, near_floor)
        z_max = self.focal * height / (MIN_OBJECT_SIZE * 1.1)
        return z_min, max(z_max, z_min * 1.01)

    # -- population ----------------------------------------------------------------------------
    def _occluders(self) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
        rng, out = self.rng, []
        for _ in range(int(rng.integers(1, 4))):
            ground = rng.uniform(self.horizon + 0.2 * (self.h - self.horizon), self.h * 1.05)
            x = rng.uniform(0, self.w + self.pan_range)
            if rng.random() < 0.6:
                pw, ph = max(3, int(rng.uniform(0.02, 0.08) * self.w)), int(ground) + 1
                patch, mask = render_pole(rng, pw, ph)
                out.append((ground, int(x - pw / 2), patch, mask))
            else:
                pw = int(rng.uniform(0.1, 0.3) * self.w)
                ph = int(rng.uniform(0.15, 0.4) * self.h)
                patch, mask = render_slab(rng, pw, ph)
                out.append((ground, int(x - pw / 2), patch, mask))
        return out

    def _spawn(self, inside: bool) -> None:
        rng = self.rng
        cls = int(rng.integers(len(CLASS_NAMES)))
        height = rng.uniform(0.8, 1.25) / GROUND[cls]
        aspect = rng.uniform(*ASPECTS[cls])
        z_lo, z_hi = self._z_range(cls, height)
        z = math.exp(rng.uniform(math.log(z_lo), math.log(z_hi)))
        speed = rng.uniform(*_SPEED[cls]) if rng.random() < _MOVING[cls] else 0.0
        angle = rng.normal(0.0, 0.5) + (math.pi if rng.random() < 0.5 else 0.0)
        vx, vz = speed * math.cos(angle), 0.5 * speed * math.sin(angle)
        half_view = (self.w / 2) * z / self.focal  # metres from the centre to the view edge
        centre = (self.pan - self.pan_range / 2) * z / self.focal
        if inside or speed == 0.0:
            x = centre + rng.uniform(-1.0, 1.0) * half_view
        else:  # walk in from a side of the view
            side = 1.0 if rng.random() < 0.5 else -1.0
            x = centre + side * (half_view + height * aspect)
            vx = -side * abs(vx) if abs(vx) > 0.05 else -side * 0.5
        # sprite at its largest on-screen size, scaled down per frame
        px_h = int(min(self.focal * height / z_lo, 0.9 * self.h))
        px_h = max(px_h, 8)
        px_w = max(6, int(round(px_h * aspect)))
        patch, mask = render_object(cls, px_w, px_h, rng)
        pole = None
        if cls == 4:
            pole = render_pole(rng, max(2, int(px_w * 0.1)), px_h * 2)
        self.alive.append(_Object(self.next_id, cls, x, z, vx, vz, height, aspect,
                                  (z_lo, z_hi), patch, mask, pole,
                                  noise=0.25 * max(speed, 0.2) if speed else 0.0))
        self.next_id += 1

    # -- dynamics ------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Move the camera and every object by ``dt`` seconds; spawn and retire objects."""
        rng = self.rng
        # camera pan: Ornstein-Uhlenbeck rate; a spring in the outer quarters of the panorama
        # slows it down and turns it back smoothly (no sudden reversal at the ends)
        if self.pan_rate != 0.0:
            margin = 0.25 * self.pan_range
            low, high = margin, self.pan_range - margin
            spring = (low - self.pan if self.pan < low else high - self.pan if self.pan > high
                      else 0.0)
            self.pan_rate += (-0.2 * self.pan_rate * dt + 6.0 * spring * dt
                              + 0.1 * self.w * math.sqrt(dt) * float(rng.normal()))
            if spring:
                self.pan_rate *= math.exp(-1.5 * dt)  # damped near the ends
            self.pan += self.pan_rate * dt
            if not 0.0 <= self.pan <= self.pan_range:
                self.pan = min(max(self.pan, 0.0), float(self.pan_range))
                self.pan_rate = 1e-9 * (self.w if self.pan == 0.0 else -self.w)
        keep = []
        for obj in self.alive:
            moving = obj.noise > 0.0
            if moving:
                if obj.target is None and rng.random() < 1.0 - math.exp(-0.25 * dt):
                    speed = rng.uniform(0.0, 1.5) * math.hypot(obj.vx, obj.vz) + 0.1
                    angle = math.atan2(obj.vz, obj.vx) + rng.normal(0.0, 1.2)
                    obj.target = (speed * math.cos(angle), 0.5 * speed * math.sin(angle))
                    obj.tau = float(rng.uniform(0.3, 1.2))
                if obj.target is not None:
                    k = 1.0 - math.exp(-dt / obj.tau)
                    obj.vx += (obj.target[0] - obj.vx) * k
                    obj.vz += (obj.target[1] - obj.vz) * k
                    if abs(obj.vx - obj.target[0]) + abs(obj.vz - obj.target[1]) < 0.05:
                        obj.target = None
                shake = obj.noise * math.sqrt(dt)
                obj.vx += shake * float(rng.normal())
                obj.vz += 0.5 * shake * float(rng.normal())
            obj.x += obj.vx * dt
            obj.z += obj.vz * dt
            z_lo, z_hi = obj.z_range
            if not z_lo <= obj.z <= z_hi:
                obj.z = min(max(obj.z, z_lo), z_hi)
                obj.vz = -obj.vz
            px = self.screen_x(obj)
            margin = self.focal * obj.height * obj.aspect / obj.z + 0.2 * self.w
            if -margin <= px <= self.w + self.pan_range + margin:
                keep.append(obj)
        self.alive = keep
        near = sum(1 for o in keep if -0.1 * self.w <= self.screen_x(o) - self.pan <= 1.1 * self.w)
        if near < self.objects_wanted and rng.random() < 1.0 - math.exp(
                -0.6 * (self.objects_wanted - near) * dt):
            self._spawn(inside=False)

    # -- rendering -----------------------------------------------------------------------------
    def layers(self) -> list[tuple[float, list[Layer], int | None]]:
        """Layers of the view, by ground row: ``(ground, layers, object id or None)``."""
        staged: list[tuple[float, list[Layer], int | None]] = []
        offset = int(round(self.pan))
        for ground, x, patch, mask in self.occluders:
            y = 0 if patch.shape[0] >= int(ground) else int(min(ground, self.h * 1.1)
                                                              - patch.shape[0])
            staged.append((ground, [Layer(x - offset, y, patch, mask)], None))
        for obj in self.alive:
            oh = self.focal * obj.height / obj.z
            ow = oh * obj.aspect
            cx = self.screen_x(obj) - offset
            if cx + ow < -2 or cx - ow > self.w + 2 or oh < 3:
                continue
            ground = self.ground_y(obj.z)
            iw, ih = max(3, int(round(ow))), max(3, int(round(oh)))
            patch = cv2.resize(obj.patch, (iw, ih), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(obj.mask, (iw, ih), interpolation=cv2.INTER_NEAREST)
            top = ground - oh
            group = []
            if obj.pole is not None:  # a sign on its pole
                top = ground - oh * 2.2
                pw = max(2, int(round(ow * 0.1)))
                ph = max(1, int(round(ground - (top + oh / 2))))
                group.append(Layer(int(round(cx - pw / 2)), int(round(top + oh / 2)),
                                   cv2.resize(obj.pole[0], (pw, ph)),
                                   np.ones((ph, pw), np.uint8)))
            group.append(Layer(int(round(cx - iw / 2)), int(round(top)), patch, mask,
                               obj.cls))
            staged.append((ground, group, obj.ident))
        staged.sort(key=lambda item: item[0])
        return staged


Truth = Tuple[int, int, int, int, int, int, float]
"""One ground-truth object of a frame: ``(id, class, x1, y1, x2, y2, visibility)``."""


def render_sequence(seed: int, index: int, frames: int, width: int = 320, height: int = 256,
                    objects: int = 6, fps: float | None = None,
                    ) -> tuple[float, Iterator[tuple[np.ndarray, list[Truth]]]]:
    """``(frame rate, frames)`` of sequence ``index`` of stream ``seed``: each frame is
    ``(BGR image, [Truth ...])``. Deterministic in its arguments.

    Raises:
        ConfigError: bad size, counts or frame rate.
    """
    check_size(width, height)
    if frames < 1 or objects < 0 or int(seed) < 0 or int(index) < 0:
        raise ConfigError(f'sequence: frames {frames} must be >= 1, objects {objects}, seed '
                          f'{seed} and index {index} >= 0')
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _SEQUENCE_TAG]))
    rate = float(fps) if fps else float(FRAME_RATES[int(rng.integers(len(FRAME_RATES)))])
    if not 0.5 <= rate <= 240:
        raise ConfigError(f'--fps {rate:g}: expected 0.5 to 240 frames per second')
    pan_range = int(width * rng.uniform(0.0, 1.5))
    world = _World(rng, width, height, objects, pan_range)
    panorama = _background(rng, width + pan_range, height, world.horizon)
    camera_seed = int(rng.integers(1 << 62))

    def generate() -> Iterator[tuple[np.ndarray, list[Truth]]]:
        for frame in range(frames):
            if frame:
                world.step(1.0 / rate)
            offset = int(round(min(max(world.pan, 0.0), pan_range)))
            canvas = panorama[:, offset:offset + width].copy()
            staged = world.layers()
            layers = [layer for _, group, _ in staged for layer in group]
            owners = [ident for _, group, ident in staged for _ in group]
            truth = [(int(owners[i] or 0), int(cls or 0), *box, fraction)
                     for i, cls, box, fraction
                     in visible_objects(canvas, layers, TRACK_MIN_VISIBLE, MIN_BOX_SIDE)]
            image = _camera(np.random.default_rng(camera_seed), canvas)  # fixed optics
            noise = rng.normal(0.0, 2.0, image.shape).astype(np.int16)  # per-frame noise
            yield np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8), truth

    return rate, generate()


def _seqinfo(name: str, rate: float, frames: int, width: int, height: int, seed: int,
             index: int, objects: int) -> str:
    ini = configparser.ConfigParser()
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini['Sequence'] = {
        'name': name, 'imDir': 'img1', 'frameRate': f'{rate:g}', 'seqLength': str(frames),
        'imWidth': str(width), 'imHeight': str(height), 'imExt': '.jpg',
        'generator': 'darknet53 synth --sequences', 'seed': str(seed), 'index': str(index),
        'objects': str(objects)}
    text = io.StringIO()
    ini.write(text, space_around_delimiters=False)
    return text.getvalue()


def write_sequence(out_dir: str | os.PathLike[str], seed: int, index: int, frames: int,
                   width: int = 320, height: int = 256, objects: int = 6,
                   fps: float | None = None, progress: bool = False) -> dict[str, object]:
    """Write one sequence (MOTChallenge layout, see module docstring) under ``out_dir``; it is
    built in a hidden folder and swapped in whole. Returns a summary dict."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = sequence_name(seed, index)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f'.{name}.', suffix='.tmp'))
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 95]
    ids: set[int] = set()
    boxes = 0
    try:
        (tmp / 'img1').mkdir()
        (tmp / 'gt').mkdir()
        rate, stream = render_sequence(seed, index, frames, width, height, objects, fps)
        lines = []
        for number, (image, truth) in enumerate(progress_iter(stream, progress, name, frames,
                                                              'frame'), 1):
            ok, data = cv2.imencode('.jpg', image, params)
            if not ok:
                raise DatasetError(f'{tmp / "img1"}/{number:06d}.jpg: encoding failed')
            (tmp / 'img1' / f'{number:06d}.jpg').write_bytes(data.tobytes())
            for ident, cls, x1, y1, x2, y2, vis in sorted(truth):
                lines.append(f'{number},{ident},{x1 + 1},{y1 + 1},{x2 - x1},{y2 - y1},1,'
                             f'{cls + 1},{vis:.3f}\n')
                ids.add(ident)
                boxes += 1
        (tmp / 'gt' / 'gt.txt').write_text(''.join(lines), encoding='utf-8')
        (tmp / 'seqinfo.ini').write_text(
            _seqinfo(name, rate, frames, width, height, seed, index, objects), encoding='utf-8')
        replace_path(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {'name': name, 'frames': frames, 'fps': rate, 'ids': len(ids), 'boxes': boxes}


def write_seqmap(out_dir: str | os.PathLike[str]) -> Path:
    """``seqmaps/SYNTH-all.txt``: every sequence folder (with a ``seqinfo.ini``) in
    ``out_dir``, for TrackEval's MotChallenge2DBox dataset."""
    root = Path(out_dir)
    names = sorted(p.name for p in root.iterdir() if (p / 'seqinfo.ini').is_file())
    path = root / 'seqmaps' / f'{BENCHMARK}-all.txt'
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, 'name\n' + ''.join(f'{n}\n' for n in names))
    return path


def write_sequences(out_dir: str | os.PathLike[str], count: int, seed: int, frames: int,
                    width: int = 320, height: int = 256, objects: int = 6,
                    fps: float | None = None, progress: bool = False,
                    ) -> list[dict[str, object]]:
    """Write sequences ``0..count-1`` of stream ``seed`` and the seqmap; returns their
    summaries (:func:`write_sequence`)."""
    if count < 1:
        raise ConfigError(f'--sequences {count}: must be >= 1')
    done = [write_sequence(out_dir, seed, index, frames, width, height, objects, fps, progress)
            for index in range(count)]
    write_seqmap(out_dir)
    return done
