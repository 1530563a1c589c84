"""Calibration image sources: a folder of images, a video file, or a rosbag2 image topic.

Every source yields :class:`CalibrationImage` items (a key naming where the image came from and
the BGR ``uint8`` pixels) lazily, so large sources are never held in memory. Frames that cannot
be decoded are dropped, counted and logged, never fatal. Bags are read with ``rosbags``
(``sensor_msgs/msg/Image`` in ``bgr8``/``rgb8``/``mono8``/``bgra8``/``rgba8`` and
``sensor_msgs/msg/CompressedImage``); this module keeps to what calibration needs.

:func:`image_digest` hashes the decoded pixels; quantisation reports list it for every image so
evaluation can check that calibration and evaluation data are disjoint.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, ImageError, SourceError

_LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm',
                            '.pgm'})
VIDEO_SUFFIXES = frozenset({'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg'})
BAG_SUFFIXES = frozenset({'.mcap', '.db3'})
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


@dataclass(frozen=True)
class CalibrationImage:
    """One calibration image: ``key`` (path, ``video#frame=N`` or ``bag:topic@stamp``), BGR."""

    key: str
    image: np.ndarray


def image_digest(image: np.ndarray) -> str:
    """sha256 of an image's dtype, shape and pixels (independent of the file it came from)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR ``uint8`` (colour), raising :class:`ImageError` if unreadable."""
    import cv2

    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    if data is None:
        raise ImageError(f'{path}: image file not found')
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f'{path}: cannot decode image')
    return image


def folder_images(path: str | Path, recursive: bool = False) -> Iterator[CalibrationImage]:
    """Images in a folder, sorted by path; unreadable files are skipped and logged."""
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f'{root}: not a folder')
    files = sorted(p for p in (root.rglob('*') if recursive else root.iterdir())
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f'{root}: no images ({", ".join(sorted(IMAGE_SUFFIXES))})')
    dropped = 0
    for file in files:
        try:
            yield CalibrationImage(str(file), load_image(file))
        except ImageError as exc:
            dropped += 1
            _LOG.warning('dropped %s', exc)
    if dropped:
        _LOG.warning('%s: %d unreadable image(s) dropped', root, dropped)


def video_frames(path: str | Path, step: int = 1) -> Iterator[CalibrationImage]:
    """Every ``step``-th frame of a video file (OpenCV ``VideoCapture``)."""
    import cv2

    if step < 1:
        raise ConfigError(f'frame step {step}: must be >= 1')
    if not Path(path).is_file():
        raise SourceError(f'{path}: video file not found')
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f'{path}: OpenCV cannot open this video')
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0 and frame is not None:
                yield CalibrationImage(f'{path}#frame={index}', frame)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise SourceError(f'{path}: no frames could be read')


def decode_image_msg(msg: Any, msgtype: str) -> np.ndarray:
    """Decode a deserialised ``sensor_msgs`` Image or CompressedImage to BGR ``uint8``."""
    import cv2

    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray)
                         else msg.data.tobytes(), np.uint8)
    if msgtype.endswith('CompressedImage'):
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError(f'CompressedImage ({msg.format!r}): cannot decode')
        return image
    channels = {'bgr8': 3, 'rgb8': 3, 'mono8': 1, 'bgra8': 4, 'rgba8': 4}
    encoding = str(msg.encoding).lower()
    if encoding not in channels:
        raise ImageError(f'Image encoding {msg.encoding!r}: expected one of '
                         f'{", ".join(channels)}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels[encoding]
    if height == 0 or width == 0 or step < row or data.size < step * (height - 1) + row:
        raise ImageError(f'Image {width}x{height} {encoding} step {step}: {data.size} bytes '
                         'do not match')
    if data.size < step * height:
        data = np.concatenate([data, np.zeros(step * height - data.size, np.uint8)])
    pixels = data[:step * height].reshape(height, step)[:, :row]
    pixels = pixels.reshape(height, width, channels[encoding])
    if encoding == 'bgr8':
        return np.ascontiguousarray(pixels)
    if encoding == 'rgb8':
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == 'mono8':
        return cv2.cvtColor(pixels[..., 0], cv2.COLOR_GRAY2BGR)
    if encoding == 'rgba8':
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(pixels[..., :3])


def bag_images(path: str | Path, topic: str | None = None,
               step: int = 1) -> Iterator[CalibrationImage]:
    """Every ``step``-th image message on ``topic`` of a rosbag2 (folder, .mcap or .db3).

    With ``topic=None`` the bag must have exactly one image topic.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if step < 1:
        raise ConfigError(f'message step {step}: must be >= 1')
    bag = Path(path)
    if not bag.exists():
        raise SourceError(f'{bag}: rosbag2 not found')
    if bag.is_file() and (bag.parent / 'metadata.yaml').is_file():
        bag = bag.parent
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several reader errors
        raise SourceError(f'{bag}: cannot open rosbag2: {exc}') from exc
    try:
        images = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
        if topic is None:
            if len(images) != 1:
                raise SourceError(f'{bag}: {len(images)} image topics '
                                  f'({", ".join(sorted(images)) or "none"}); pass a topic')
            topic = next(iter(images))
        if topic not in images:
            raise SourceError(f'{bag}: no image topic {topic!r} (image topics: '
                              f'{", ".join(sorted(images)) or "none"})')
        connections = [c for c in reader.connections if c.topic == topic]
        dropped = 0
        for index, (conn, stamp, raw) in enumerate(reader.messages(connections=connections)):
            if index % step:
                continue
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                image = decode_image_msg(msg, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - a bad frame is dropped, never fatal
                dropped += 1
                _LOG.warning('%s %s@%d: dropped frame: %s', bag, topic, stamp, exc)
                continue
            yield CalibrationImage(f'{bag}:{topic}@{stamp}', image)
        if dropped:
            _LOG.warning('%s %s: %d undecodable frame(s) dropped', bag, topic, dropped)
    finally:
        reader.close()


def source_kind(source: str | Path) -> str:
    """``'folder'``, ``'video'``, ``'bag'`` or ``'image'`` for a calibration source path."""
    path = Path(source)
    if path.is_dir():
        if (path / 'metadata.yaml').is_file() or any(
                p.suffix in BAG_SUFFIXES for p in path.iterdir()):
            return 'bag'
        return 'folder'
    if not path.exists():
        raise SourceError(f'{path}: calibration source not found')
    suffix = path.suffix.lower()
    if suffix in BAG_SUFFIXES:
        return 'bag'
    if suffix in IMAGE_SUFFIXES:
        return 'image'
    if suffix in VIDEO_SUFFIXES:
        return 'video'
    raise SourceError(f'{path}: unknown calibration source type (expected a folder of images, '
                      'a video file or a rosbag2)')


def calibration_images(source: str | Path, topic: str | None = None, step: int = 1,
                       ) -> Iterator[CalibrationImage]:
    """Images from any supported source (see :func:`source_kind`), lazily."""
    kind = source_kind(source)
    if kind == 'folder':
        return folder_images(source)
    if kind == 'video':
        return video_frames(source, step)
    if kind == 'bag':
        return bag_images(source, topic, step)
    return iter([CalibrationImage(str(source), load_image(source))])


def split_images(images: Iterable[CalibrationImage], count: int | None = None,
                 held_out: int = 0) -> tuple[Iterator[CalibrationImage], list[CalibrationImage]]:
    """Split a source into held-out images (the first ``held_out``) and calibration images.

    The held-out list is read at once (it is small); the calibration images (at most
    ``count``, all the rest when ``None``) are streamed. Repeated images (same pixels) are
    skipped, so the two sets are disjoint.
    """
    if count is not None and count < 1:
        raise ConfigError(f'calibration count {count}: must be >= 1')
    if held_out < 0:
        raise ConfigError(f'held-out count {held_out}: must be >= 0')
    stream = iter(images)
    seen: set[str] = set()
    held: list[CalibrationImage] = []
    for item in stream:
        if len(held) >= held_out:
            stream = _chain_one(item, stream)
            break
        digest = image_digest(item.image)
        if digest not in seen:
            seen.add(digest)
            held.append(item)

    def calibration() -> Iterator[CalibrationImage]:
        taken = 0
        for item in stream:
            if count is not None and taken >= count:
                return
            digest = image_digest(item.image)
            if digest in seen:
                continue
            seen.add(digest)
            taken += 1
            yield item
    return calibration(), held


def _chain_one(first: CalibrationImage,
               rest: Iterator[CalibrationImage]) -> Iterator[CalibrationImage]:
    yield first
    yield from rest
