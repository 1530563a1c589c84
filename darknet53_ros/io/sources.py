"""Frame sources: one image, a folder of images, a video file, or a rosbag2's image topics.

Every source yields :class:`Frame` items lazily; a frame that cannot be read or decoded comes
with ``image`` None and ``error`` saying why, so callers count and skip it. :func:`read_image`
is the package's one image-file loader.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import Darknet53Error, ImageError, SourceError
from darknet53_ros.io.bags import detect_storage
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS, decode_bounded, msg_to_bgr
from darknet53_ros.io.messages import stamp_to_ns

__all__ = ['BAG_SUFFIXES', 'IMAGE_SUFFIXES', 'VIDEO_SUFFIXES', 'Frame', 'folder_images',
           'iter_bag', 'iter_images', 'iter_video', 'read_image', 'source_kind', 'video_info']

IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.pgm',
                            '.ppm', '.pnm'})
VIDEO_SUFFIXES = frozenset({'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg',
                            '.mpeg'})
BAG_SUFFIXES = frozenset({'.mcap', '.db3'})
ANNOTATED_FORMATS = ('compressed', 'raw', 'none')


@dataclass
class Frame:
    """One input frame; ``image`` is None and ``error`` says why when it could not be read."""

    source: str
    index: int
    image: np.ndarray | None
    error: str = ''
    topic: str | None = None
    stamp_ns: int | None = None
    log_time_ns: int | None = None
    header: Any = None


def source_kind(path: str | os.PathLike) -> str:
    """``'image'``, ``'folder'``, ``'video'`` or ``'bag'``; SourceError if none fits."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f'{path}: no such file or folder')
    if path.is_dir():
        if (path / 'metadata.yaml').exists() or any(
                p.suffix in BAG_SUFFIXES for p in path.iterdir()):
            return 'bag'
        return 'folder'
    suffix = path.suffix.lower()
    if suffix in BAG_SUFFIXES:
        return 'bag'
    if suffix in IMAGE_SUFFIXES:
        return 'image'
    if suffix in VIDEO_SUFFIXES:
        return 'video'
    try:
        detect_storage(path)
        return 'bag'
    except Darknet53Error:
        raise SourceError(f'{path}: not an image, video or rosbag2 (by suffix or content)'
                          ) from None


def read_image(path: Path, index: int,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Frame:
    """One image file as a Frame (``image`` None and ``error`` set when unreadable, not a
    file, or larger than ``max_pixels``, checked on the header before decoding)."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as exc:  # a folder named *.jpg, permissions, I/O errors
        return Frame(str(path), index, None, f'cannot read file: {exc.strerror or exc}')
    try:
        image = decode_bounded(data, max_pixels, 'image file') if data.size else None
    except ImageError as exc:
        return Frame(str(path), index, None, str(exc))
    if image is None or image.size == 0:
        return Frame(str(path), index, None, 'unreadable or empty image file')
    return Frame(str(path), index, image)


def iter_images(paths: Sequence[Path],
                max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[Frame]:
    """Frames of image files, in the given order."""
    for index, path in enumerate(paths):
        yield read_image(path, index, max_pixels)


def folder_images(folder: Path) -> list[Path]:
    """Image files (not folders) of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def iter_video(path: Path) -> Iterator[Frame]:
    """Frames of a video file. A decode failure mid-way ends the video; the frames the
    container declares but that could not be read come as failed frames saying so."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f'{path}: cannot open video')
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    index = 0
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            stamp = int(index * 1e9 / fps) if fps > 0 else None
            if image is None or image.size == 0:
                yield Frame(str(path), index, None, 'empty video frame', stamp_ns=stamp)
            else:
                yield Frame(str(path), index, image, stamp_ns=stamp)
            index += 1
    finally:
        capture.release()
    if index == 0 and declared <= 0:
        yield Frame(str(path), 0, None, 'no frame could be decoded')
    for lost in range(index, declared if declared < 1 << 24 else index):
        yield Frame(str(path), lost, None, f'video ends early: read {index} of the {declared} '
                    'frames the container declares')


def video_info(path: Path) -> tuple[float, int]:
    """(frames per second, frame count) of a video; 0 where unknown."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return (capture.get(cv2.CAP_PROP_FPS) or 0.0,
                int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()


def iter_bag(reader: Any, topics: Sequence[str],
             max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[Frame]:
    """Frames of the image topics of an open :class:`~darknet53_ros.io.bags.BagReader`.

    Messages that cannot be deserialised or decoded, and messages the bag's index declares
    but the storage did not deliver, come as failed frames with the reason."""
    index: Counter = Counter()
    for topic, log_time, msg in reader.messages(topics, strict=False):
        i = index[topic]
        index[topic] += 1
        header = getattr(msg, 'header', None)
        stamp = stamp_to_ns(header) if header is not None else log_time
        try:
            image = msg_to_bgr(msg, max_pixels=max_pixels)
        except Darknet53Error as exc:
            yield Frame(topic, i, None, str(exc), topic, stamp, log_time, header)
            continue
        yield Frame(topic, i, image, '', topic, stamp, log_time, header)
    for topic, counts in reader.counts.items():
        for k in range(counts.undecodable):
            yield Frame(topic, -1 - k, None, f'undecodable message ({counts.last_error})',
                        topic)
    missing = _missing_messages(reader, topics)
    for topic, (count, declared) in missing.items():
        reason = (reader.storage_error or 'storage delivered fewer messages than its index')
        for k in range(count):
            yield Frame(topic, index[topic] + k, None,
                        f'missing message: {count} of the {declared} messages the bag index '
                        f'declares were not read ({reason})', topic)
    if reader.storage_error and not missing:
        yield Frame(str(reader.path), -1, None, reader.storage_error)


def _missing_messages(reader: Any, topics: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Topic -> (messages not read, messages declared) where the bag index declares more
    than were read or found undecodable."""
    out = {}
    declared_by_topic = {name: info.count for name, info in reader.topics.items()}
    for topic in topics:
        declared = declared_by_topic.get(topic, 0)
        counts = reader.counts.get(topic)
        seen = (counts.read + counts.undecodable) if counts is not None else 0
        if declared > seen:
            out[topic] = (declared - seen, declared)
    return out
