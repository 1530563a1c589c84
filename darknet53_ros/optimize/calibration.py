"""Calibration image sources: a folder of images, a video file, or a rosbag2 image topic.

Every source yields :class:`CalibrationImage` items (a key naming where the image came from and
the BGR ``uint8`` pixels) lazily, so large sources are never held in memory. Reading and
decoding are the offline runner's (:mod:`darknet53_ros.tools.runner`, every ``sensor_msgs``
encoding
of :mod:`darknet53_ros.io.encodings`); frames that cannot be decoded are dropped, counted and
logged, never fatal.

:func:`image_digest` hashes the decoded pixels; quantisation reports list it for every image so
evaluation can check that calibration and evaluation data are disjoint.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
import hashlib
import logging
from pathlib import Path

import numpy as np

from darknet53_ros.errors import ConfigError, ImageError, SourceError
from darknet53_ros.io.sources import Frame, source_kind

_LOG = logging.getLogger(__name__)

__all__ = ['CalibrationImage', 'bag_images', 'calibration_images', 'folder_images',
           'image_digest', 'load_image', 'source_kind', 'split_images', 'video_frames']


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
    from darknet53_ros.io.sources import read_image

    if not Path(path).is_file():
        raise ImageError(f'{path}: image file not found')
    frame = read_image(Path(path), 0)
    if frame.image is None:
        raise ImageError(f'{path}: {frame.error}')
    return frame.image


def _keep(frames: Iterable[Frame], what: str, step: int,
          key: Callable[[Frame], str]) -> Iterator[CalibrationImage]:
    """Every ``step``-th readable frame as a CalibrationImage; bad ones logged and counted."""
    if step < 1:
        raise ConfigError(f'{what} step {step}: must be >= 1')
    dropped = 0
    for n, frame in enumerate(frames):
        if n % step:
            continue
        if frame.image is None:
            dropped += 1
            _LOG.warning('%s [%d]: dropped: %s', frame.source, frame.index, frame.error)
            continue
        yield CalibrationImage(key(frame), frame.image)
    if dropped:
        _LOG.warning('%d undecodable %s(s) dropped', dropped, what)


def folder_images(path: str | Path) -> Iterator[CalibrationImage]:
    """Images in a folder, sorted by name; unreadable files are skipped and logged."""
    from darknet53_ros.io.sources import folder_images as image_files
    from darknet53_ros.io.sources import iter_images

    root = Path(path)
    if not root.is_dir():
        raise SourceError(f'{root}: not a folder')
    files = image_files(root)
    if not files:
        raise SourceError(f'{root}: no images in this folder')
    return _keep(iter_images(files), 'image', 1, lambda f: f.source)


def video_frames(path: str | Path, step: int = 1) -> Iterator[CalibrationImage]:
    """Every ``step``-th frame of a video file (OpenCV ``VideoCapture``)."""
    from darknet53_ros.io.sources import iter_video

    if not Path(path).is_file():
        raise SourceError(f'{path}: video file not found')
    return _keep(iter_video(Path(path)), 'frame', step,
                 lambda f: f'{f.source}#frame={f.index}')


def bag_images(path: str | Path, topic: str | None = None,
               step: int = 1) -> Iterator[CalibrationImage]:
    """Every ``step``-th image message on ``topic`` of a rosbag2 (folder, .mcap or .db3).

    With ``topic=None`` the bag must have exactly one image topic.
    """
    from darknet53_ros.io.bags import BagReader
    from darknet53_ros.io.sources import iter_bag

    if step < 1:
        raise ConfigError(f'message step {step}: must be >= 1')
    with BagReader(path) as reader:
        topics = sorted(t.name for t in reader.image_topics())
        if topic is None:
            if len(topics) != 1:
                raise SourceError(f'{path}: {len(topics)} image topics '
                                  f'({", ".join(topics) or "none"}); pass a topic')
            topic = topics[0]
        if topic not in topics:
            raise SourceError(f'{path}: no image topic {topic!r} (image topics: '
                              f'{", ".join(topics) or "none"})')
        yield from _keep(iter_bag(reader, [topic]), 'message', step,
                         lambda f: f'{path}:{f.topic}@{f.stamp_ns}')


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
