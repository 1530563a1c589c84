"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy BGR conversion, without ROS.

The functions read plain message fields (``height``, ``width``, ``encoding``, ``step``,
``is_bigendian``, ``data``), so they accept rclpy messages, rosbags messages or anything with
those attributes. ``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array``
(rclpy) or a uint8 numpy array (rosbags).

Decisions:

- Row padding: ``step`` is honoured; rows are sliced out of a zero-copy view of ``data``.
  ``bgr8`` is returned as such a view (no copy; possibly read-only and non-contiguous), every
  other encoding returns a new array. Pass ``copy=True`` to always get a writable array.
- ``mono16`` (and ``16UC1``) is scaled to 8 bit by dropping the low byte (``value >> 8``):
  exact, cheap, maps 0 -> 0 and 65535 -> 255 with 256 equal bins. Byte order follows
  ``is_bigendian``. (``cv_bridge`` scales by 255/65535 instead; results differ by at most 1.)
- Bayer: ROS names the 2x2 pattern by its first row (``bayer_rggb8``: R at (0, 0)); OpenCV's
  legacy Bayer codes name the pattern by the second row's second/third pixel, so ROS ``rggb``
  is OpenCV ``BayerBG``, ``bggr`` -> ``BayerRG``, ``gbrg`` -> ``BayerGR``, ``grbg`` ->
  ``BayerGB``. Demosaicing is OpenCV's bilinear ``cvtColor``.
- YUV 4:2:2: ``uyvy`` and ``yuv422`` (ROS' name for UYVY) use ``COLOR_YUV2BGR_UYVY``;
  ``yuyv`` and ``yuv422_yuy2`` use ``COLOR_YUV2BGR_YUY2``. The width must be even.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from darknet53_ros.errors import ImageError

__all__ = [
    'COMPRESSED_FORMATS',
    'SUPPORTED_ENCODINGS',
    'bgr_to_compressed_fields',
    'bgr_to_image_fields',
    'compressed_msg_to_bgr',
    'compressed_to_bgr',
    'image_msg_to_bgr',
    'image_to_bgr',
    'is_compressed_msg',
    'msg_to_bgr',
]


@dataclass(frozen=True)
class _Encoding:
    channels: int
    itemsize: int  # bytes per channel
    convert: Callable[[np.ndarray], np.ndarray] | None  # None: already BGR


def _cvt(code_name: str) -> Callable[[np.ndarray], np.ndarray]:
    def convert(img: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.cvtColor(img, getattr(cv2, code_name))

    return convert


def _mono16(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor((img >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)


_ENCODINGS: dict[str, _Encoding] = {
    'bgr8': _Encoding(3, 1, None),
    'rgb8': _Encoding(3, 1, _cvt('COLOR_RGB2BGR')),
    'bgra8': _Encoding(4, 1, _cvt('COLOR_BGRA2BGR')),
    'rgba8': _Encoding(4, 1, _cvt('COLOR_RGBA2BGR')),
    'mono8': _Encoding(1, 1, _cvt('COLOR_GRAY2BGR')),
    'mono16': _Encoding(1, 2, _mono16),
    # ROS pattern (first row) -> OpenCV legacy code (second row, shifted): see module doc.
    'bayer_rggb8': _Encoding(1, 1, _cvt('COLOR_BayerBG2BGR')),
    'bayer_bggr8': _Encoding(1, 1, _cvt('COLOR_BayerRG2BGR')),
    'bayer_gbrg8': _Encoding(1, 1, _cvt('COLOR_BayerGR2BGR')),
    'bayer_grbg8': _Encoding(1, 1, _cvt('COLOR_BayerGB2BGR')),
    'uyvy': _Encoding(2, 1, _cvt('COLOR_YUV2BGR_UYVY')),
    'yuv422': _Encoding(2, 1, _cvt('COLOR_YUV2BGR_UYVY')),
    'yuyv': _Encoding(2, 1, _cvt('COLOR_YUV2BGR_YUY2')),
    'yuv422_yuy2': _Encoding(2, 1, _cvt('COLOR_YUV2BGR_YUY2')),
}
# OpenCV-style type names some drivers publish (cv_bridge reads 3/4 channels as BGR/BGRA).
_ALIASES = {'8uc1': 'mono8', '8uc3': 'bgr8', '8uc4': 'bgra8', '16uc1': 'mono16'}
_YUV = {'uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2'}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS) + tuple(e.upper() for e in _ALIASES)
"""Encodings accepted by :func:`image_to_bgr` (case-insensitive)."""

COMPRESSED_FORMATS: tuple[str, ...] = ('jpeg', 'png')
"""Compression formats written by :func:`bgr_to_compressed_fields` (any format OpenCV can
decode is read)."""

_OUTPUT_ENCODINGS = ('bgr8', 'rgb8', 'bgra8', 'rgba8', 'mono8', 'mono16')


def _normalize_encoding(encoding: Any) -> str:
    name = str(encoding).strip().lower()
    return _ALIASES.get(name, name)


def _as_uint8(data: Any, field: str = 'data') -> np.ndarray:
    """A flat uint8 view of ``data`` (no copy for buffers and contiguous arrays)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ImageError(f'image field {field!r}: not a byte buffer ({exc})') from None


def image_to_bgr(height: int, width: int, encoding: str, step: int, data: Any,
                 is_bigendian: bool | int = False, copy: bool = False) -> np.ndarray:
    """Convert raw ``sensor_msgs/Image`` fields to a uint8 BGR array of shape [h, w, 3].

    Raises:
        ImageError: unknown ``encoding``, zero ``height``/``width``, ``step`` smaller than a
            row, ``data`` shorter than ``height * step``, odd ``width`` for YUV 4:2:2, or an
            OpenCV conversion failure. The message names the field at fault.
    """
    name = _normalize_encoding(encoding)
    spec = _ENCODINGS.get(name)
    if spec is None:
        raise ImageError(f'image field encoding: unsupported encoding {encoding!r} '
                         f'(supported: {", ".join(sorted(_ENCODINGS))})')
    height, width, step = int(height), int(width), int(step)
    if height <= 0:
        raise ImageError(f'image field height: must be positive, got {height}')
    if width <= 0:
        raise ImageError(f'image field width: must be positive, got {width}')
    row_bytes = width * spec.channels * spec.itemsize
    if step < row_bytes:
        raise ImageError(f'image field step: {step} is smaller than one row of {width} '
                         f'{name} pixels ({row_bytes} bytes)')
    if name in _YUV and width % 2:
        raise ImageError(f'image field width: {name} needs an even width, got {width}')
    buf = _as_uint8(data)
    if buf.size < height * step:
        raise ImageError(f'image field data: {buf.size} bytes, expected at least '
                         f'height*step = {height}*{step} = {height * step}')
    rows = buf[:height * step].reshape(height, step)[:, :row_bytes]
    img: np.ndarray
    if spec.itemsize == 2:
        img = rows.view('>u2' if is_bigendian else '<u2').reshape(height, width)
    elif spec.channels == 1:
        img = rows
    else:
        img = rows.reshape(height, width, spec.channels)
    if spec.convert is None:
        return np.array(img, copy=True) if copy else img
    try:
        out = spec.convert(img)
    except Exception as exc:  # cv2.error and friends
        raise ImageError(f'image field encoding: cannot convert {height}x{width} {name} '
                         f'image to bgr8 ({exc})') from None
    return out


def image_msg_to_bgr(msg: Any, copy: bool = False) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` message (rclpy or rosbags) to uint8 BGR [h, w, 3].

    See :func:`image_to_bgr`; ``bgr8`` input is returned as a view of ``msg.data`` unless
    ``copy`` is true.
    """
    return image_to_bgr(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                        getattr(msg, 'is_bigendian', False), copy=copy)


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` fields (``format``, ``data``) to uint8 BGR.

    ``fmt`` may be ``'jpeg'``, ``'png'`` or image_transport's ``'rgb8; jpeg compressed bgr8'``
    form; the payload is decoded by content with ``cv2.imdecode`` (always to BGR, 16-bit PNG
    scaled to 8 bit). ``compressedDepth`` payloads are rejected.

    Raises:
        ImageError: empty or undecodable ``data``, or an unsupported ``format``.
    """
    import cv2

    if 'compresseddepth' in str(fmt).lower().replace(' ', ''):
        raise ImageError(f'compressed image field format: {fmt!r} (compressedDepth) is not '
                         'supported')
    buf = _as_uint8(data)
    if buf.size == 0:
        raise ImageError(f'compressed image field data: empty payload (format {fmt!r})')
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f'compressed image field data: cannot decode {fmt!r} ({exc})') from None
    if img is None or img.size == 0:
        raise ImageError(f'compressed image field data: cannot decode {buf.size} bytes '
                         f'as {fmt!r}')
    return img


def compressed_msg_to_bgr(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` message (rclpy or rosbags) to uint8 BGR."""
    return compressed_to_bgr(msg.format, msg.data)


def is_compressed_msg(msg: Any) -> bool:
    """True for ``CompressedImage``-like messages (they have ``format`` and no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def msg_to_bgr(msg: Any, copy: bool = False) -> np.ndarray:
    """Convert an ``Image`` or ``CompressedImage`` message to uint8 BGR [h, w, 3]."""
    if is_compressed_msg(msg):
        return compressed_msg_to_bgr(msg)
    return image_msg_to_bgr(msg, copy=copy)


def bgr_to_image_fields(bgr: np.ndarray, encoding: str = 'bgr8') -> dict[str, Any]:
    """``sensor_msgs/Image`` fields for a uint8 BGR image (e.g. an annotated frame).

    Returns a dict with ``height``, ``width``, ``encoding``, ``is_bigendian`` (0), ``step``
    (no padding) and ``data`` (flat contiguous uint8 numpy array). ``encoding`` is one of
    bgr8, rgb8, bgra8, rgba8, mono8, mono16 (mono16 = gray * 257, so ``>> 8`` round-trips).
    Accepts [h, w, 3] BGR or [h, w] grey input.

    Raises:
        ImageError: unsupported ``encoding`` or a non-image array.
    """
    import cv2

    name = _normalize_encoding(encoding)
    if name not in _OUTPUT_ENCODINGS:
        raise ImageError(f'image field encoding: cannot write {encoding!r} '
                         f'(supported: {", ".join(_OUTPUT_ENCODINGS)})')
    img = np.asarray(bgr)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0 or (
            img.ndim == 3 and img.shape[2] != 3):
        raise ImageError(f'image field data: expected a non-empty uint8 [h, w, 3] BGR or '
                         f'[h, w] grey image, got {img.dtype} {img.shape}')
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if name == 'bgr8':
        out = img
    elif name == 'rgb8':
        out = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif name == 'bgra8':
        out = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    elif name == 'rgba8':
        out = cv2.cvtColor(img, cv2.COLOR_BGR2RGBA)
    elif name == 'mono8':
        out = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    else:  # mono16, little endian
        out = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype('<u2') * 257).view(np.uint8)
    out = np.ascontiguousarray(out)
    height, width = img.shape[:2]
    return {
        'height': int(height),
        'width': int(width),
        'encoding': name,
        'is_bigendian': 0,
        'step': int(out.size // height),
        'data': out.reshape(-1),
    }


def bgr_to_compressed_fields(bgr: np.ndarray, fmt: str = 'jpeg',
                             quality: int = 90) -> dict[str, Any]:
    """``sensor_msgs/CompressedImage`` fields (``format``, ``data``) for a uint8 BGR image.

    ``format`` follows image_transport: ``'bgr8; jpeg compressed bgr8'`` or
    ``'bgr8; png compressed bgr8'``; ``data`` is a flat uint8 numpy array.

    Raises:
        ImageError: unsupported ``fmt`` or encoding failure.
    """
    import cv2

    kind = str(fmt).strip().lower()
    kind = {'jpg': 'jpeg'}.get(kind, kind)
    if kind not in COMPRESSED_FORMATS:
        raise ImageError(f'compressed image field format: cannot write {fmt!r} '
                         f'(supported: {", ".join(COMPRESSED_FORMATS)})')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if kind == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if kind == 'jpeg' else '.png', np.asarray(bgr), params)
    if not ok:
        raise ImageError(f'compressed image field data: cannot encode image as {kind}')
    return {'format': f'bgr8; {kind} compressed bgr8', 'data': encoded.reshape(-1)}
