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

from darknet53_ros.errors import Darknet53Error, SourceError
from darknet53_ros.io.bags import detect_storage
from darknet53_ros.io.encodings import msg_to_bgr
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


def read_image(path: Path, index: int) -> Frame:
    """One image file as a Frame (``image`` None and ``error`` set when unreadable)."""
    import cv2

    data = np.fromfile(str(path), np.uint8) if path.stat().st_size else np.zeros(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        return Frame(str(path), index, None, 'unreadable or empty image file')
    return Frame(str(path), index, image)


def iter_images(paths: Sequence[Path]) -> Iterator[Frame]:
    """Frames of image files, in the given order."""
    for index, path in enumerate(paths):
        yield read_image(path, index)


def folder_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def iter_video(path: Path) -> Iterator[Frame]:
    """Frames of a video file; a decode failure mid-way ends the video with an error."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f'{path}: cannot open video')
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
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


def video_info(path: Path) -> tuple[float, int]:
    """(frames per second, frame count) of a video; 0 where unknown."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return (capture.get(cv2.CAP_PROP_FPS) or 0.0,
                int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()


def iter_bag(reader: Any, topics: Sequence[str]) -> Iterator[Frame]:
    """Frames of the image topics of an open :class:`~darknet53_ros.io.bags.BagReader`."""
    index: Counter = Counter()
    for topic, log_time, msg in reader.messages(topics, strict=False):
        i = index[topic]
        index[topic] += 1
        header = getattr(msg, 'header', None)
        stamp = stamp_to_ns(header) if header is not None else log_time
        try:
            image = msg_to_bgr(msg)
        except Darknet53Error as exc:
            yield Frame(topic, i, None, str(exc), topic, stamp, log_time, header)
            continue
        yield Frame(topic, i, image, '', topic, stamp, log_time, header)
    for topic, counts in reader.counts.items():
        for k in range(counts.undecodable):
            yield Frame(topic, -1 - k, None, f'undecodable message ({counts.last_error})',
                        topic)
    if reader.storage_error:
        yield Frame(str(reader.path), -1, None, reader.storage_error)
