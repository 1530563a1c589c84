"""Decoding camera frames for a detector whose input is smaller than the frames.

:class:`FrameDecoder` turns an ``Image`` / ``CompressedImage`` message (rclpy, rosbags or
:mod:`darknet53_ros.io.cdr`) into BGR with the package's decoder
(:mod:`darknet53_ros.io.encodings`), two ways cheaper than a plain full-size decode:

- **reduced-scale JPEG**: when the network input is at most half the frame (after the
  letterbox, :func:`jpeg_reduction`), JPEG frames are decoded at 1/2, 1/4 or 1/8 of their size
  by the decoder itself (``IMREAD_REDUCED_COLOR_n``: DCT scaling, no full-size pass). Never
  below the size the network sees, so no detail the network could use is lost. The
  :class:`DecodedFrame` remembers the source size, and :meth:`DecodedFrame.to_source` maps
  boxes back: every published box is in **source pixels**, whatever the decode scale.
- **reused buffers** (:class:`BufferPool`): colour conversions of raw frames (``rgb8``,
  Bayer, YUV, mono) write into a small per-camera pool of arrays, reused once nothing holds
  them any more, instead of a fresh multi-megabyte allocation (page faults, zeroing) per
  frame. ``bgr8`` stays a zero-copy view of the message.
"""
from __future__ import annotations

from dataclasses import dataclass
import sys
import threading
from typing import Any

import numpy as np

from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.cdr import UnreadableFrame
from darknet53_ros.io.encodings import (
    DEFAULT_MAX_IMAGE_PIXELS,
    REDUCTIONS,
    compressed_dimensions,
    compressed_to_bgr,
    image_to_bgr,
    is_compressed_msg,
)

__all__ = ['BufferPool', 'DecodedFrame', 'FrameDecoder', 'jpeg_reduction']


def jpeg_reduction(width: int, height: int, net_width: int, net_height: int,
                   letterbox: bool = True) -> int:
    """The largest divisor in :data:`~darknet53_ros.io.encodings.REDUCTIONS` that keeps a
    ``width x height`` frame at least as large as the network will resize it to.

    With the letterbox the frame is scaled by ``s = min(net_w / w, net_h / h)``; stretched,
    each axis by its own ratio (the larger counts). Reducing by ``n`` is allowed while
    ``n * s <= 1``: 1920x1080 into 320x256 (``s = 1/6``) decodes at 1/4 (480x270).
    """
    if width <= 0 or height <= 0:
        return 1
    ratios = (net_width / width, net_height / height)
    scale = min(ratios) if letterbox else max(ratios)
    return max(n for n in REDUCTIONS if n * scale <= 1.0 + 1e-9) if scale <= 0.5 else 1


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame: ``image`` (BGR, possibly reduced) and its source size."""

    image: np.ndarray
    source_width: int
    source_height: int
    reduce: int = 1
    """The JPEG reduction used (1: full size)."""

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per decoded pixel, ``(x, y)``."""
        height, width = self.image.shape[:2]
        return self.source_width / width, self.source_height / height

    def to_source(self, det: Detections) -> Detections:
        """``det`` (in decoded pixels) with its boxes in source pixels (clipped to the
        source); returned as it is for full-size decodes."""
        sx, sy = self.scale
        if sx == 1.0 and sy == 1.0:
            return det
        boxes = np.asarray(det.boxes, dtype=np.float32) * np.array([sx, sy, sx, sy],
                                                                  np.float32)
        np.clip(boxes[:, 0::2], 0, self.source_width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, self.source_height, out=boxes[:, 1::2])
        return Detections(boxes, det.scores, det.class_ids, det.names)


class BufferPool:
    """At most ``size`` arrays kept for reuse; an array is handed out again only when no one
    else references it (CPython reference counts: a consumer still holding the array, or a
    view of it, keeps it out of the pool). Thread-safe."""

    def __init__(self, size: int = 4) -> None:
        """Keep at most ``size`` arrays."""
        self.size = int(size)
        self.allocations = 0
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A free array of ``shape`` (contents undefined): reused, or newly allocated."""
        dtype = np.dtype(dtype)
        with self._lock:
            for index in range(len(self._arrays)):
                array = self._arrays[index]
                # References: the list, ``array`` and getrefcount's argument.
                if array.shape == shape and array.dtype == dtype \
                        and sys.getrefcount(array) <= 3:
                    return array
                del array
            fresh = np.empty(shape, dtype)
            self.allocations += 1
            if len(self._arrays) >= self.size:
                self._arrays.pop(0)  # the oldest (of another shape, or still in use) goes
            self._arrays.append(fresh)
            return fresh


class FrameDecoder:
    """Decode frames for a network of ``net_width x net_height`` (see the module doc).

    Args:
        net_width, net_height: the detector's input size.
        letterbox: whether the detector letterboxes (else it stretches).
        reduced: decode JPEG at reduced scale when the network input allows it.
        max_pixels: frames over this many pixels are refused before decoding.
        pool_size: reused conversion buffers per camera (0: none).
    """

    def __init__(self, net_width: int, net_height: int, letterbox: bool = True,
                 reduced: bool = True, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 pool_size: int = 4) -> None:
        """Create the decoder (no buffers yet)."""
        self.net_width = int(net_width)
        self.net_height = int(net_height)
        self.letterbox = bool(letterbox)
        self.reduced = bool(reduced)
        self.max_pixels = max_pixels
        self.pool_size = int(pool_size)
        self._pools: dict[str, BufferPool] = {}
        self._lock = threading.Lock()

    def pool(self, key: str) -> BufferPool:
        """The buffer pool of one camera (created on first use)."""
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = BufferPool(self.pool_size)
            return pool

    def decode(self, msg: Any, key: str = '') -> DecodedFrame:
        """Decode one ``Image`` or ``CompressedImage`` (``key``: the camera, for its buffer
        pool).

        Raises:
            ImageError: undecodable, unsupported or too large (see
                :func:`~darknet53_ros.io.encodings.msg_to_bgr`).
        """
        if isinstance(msg, UnreadableFrame):
            raise msg.error
        if is_compressed_msg(msg):
            return self._decode_compressed(msg)
        height, width = int(msg.height), int(msg.width)
        out = self.pool(key).get((height, width, 3)) \
            if self.pool_size > 0 and height > 0 and width > 0 \
            and str(msg.encoding).lower() not in ('bgr8', '8uc3') else None
        image = image_to_bgr(height, width, msg.encoding, msg.step, msg.data,
                             getattr(msg, 'is_bigendian', False), max_pixels=self.max_pixels,
                             out=out)
        return DecodedFrame(image, image.shape[1], image.shape[0])

    def _decode_compressed(self, msg: Any) -> DecodedFrame:
        reduce, size = 1, None
        if self.reduced:
            declared = compressed_dimensions(msg.data)
            if declared is not None and declared[0] == 'JPEG' and declared[1] is not None:
                size = declared[1]
                reduce = jpeg_reduction(size[0], size[1], self.net_width, self.net_height,
                                        self.letterbox)
        image = compressed_to_bgr(msg.format, msg.data, self.max_pixels, reduce)
        height, width = image.shape[:2]
        if reduce == 1 or size is None:
            return DecodedFrame(image, width, height)
        source_w, source_h = size
        if -(-source_w // reduce) != width and -(-source_h // reduce) == width:
            source_w, source_h = source_h, source_w  # rotated by EXIF orientation
        return DecodedFrame(image, source_w, source_h, reduce)
