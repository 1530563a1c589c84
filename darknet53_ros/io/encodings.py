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
- Size limit: an image larger than ``max_pixels`` (default :data:`DEFAULT_MAX_IMAGE_PIXELS`) is
  rejected *before* decoding: ``Image`` by ``width * height``, compressed data by the size its
  header declares (PNG ``IHDR``, JPEG ``SOF``, BMP), so a small decompression bomb costs
  nothing. Other compressed formats are decoded first (OpenCV's own 2^30-pixel cap applies)
  and then checked.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from darknet53_ros.errors import ImageError

__all__ = [
    'COMPRESSED_FORMATS',
    'DEFAULT_MAX_IMAGE_PIXELS',
    'SUPPORTED_ENCODINGS',
    'bgr_to_compressed_fields',
    'bgr_to_image_fields',
    'compressed_msg_to_bgr',
    'check_image_pixels',
    'compressed_dimensions',
    'compressed_to_bgr',
    'decode_bounded',
    'image_msg_to_bgr',
    'image_to_bgr',
    'is_compressed_msg',
    'msg_to_bgr',
]


@dataclass(frozen=True)
class _Encoding:
    channels: int
    itemsize: int  # bytes per channel
    # (image, dst or None) -> BGR, written into dst when it fits; None: already BGR
    convert: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None


def _cvt(code_name: str) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    def convert(img: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        import cv2

        return cv2.cvtColor(img, getattr(cv2, code_name), dst=dst)

    return convert


def _mono16(img: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    import cv2

    return cv2.cvtColor((img >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR, dst=dst)


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

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 4320
"""Default pixel limit: the largest 8K frame (DCI 8192x4320, 35.4 Mpixel; 8K UHD 7680x4320
fits); a decoded BGR frame at the limit is 101 MiB."""

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


def check_image_pixels(width: int, height: int, max_pixels: int | None,
                       what: str = 'image:') -> None:
    """Raise :class:`ImageError` when ``width * height`` exceeds ``max_pixels`` (None: no
    limit); ``what`` names the field or file in the message."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f'{what} {width}x{height} ({width * height} pixels), over the '
                         f'max_image_pixels limit of {max_pixels}')


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, progressive, lossless ...; not DHT/JPG/DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(buf: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(buf[pos + 2:pos + 4], 'big')
        if marker in _JPEG_SOF:
            if pos + 9 > len(buf):
                return None
            height = int.from_bytes(buf[pos + 5:pos + 7], 'big')
            width = int.from_bytes(buf[pos + 7:pos + 9], 'big')
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def compressed_dimensions(data: Any) -> tuple[str, tuple[int, int] | None] | None:
    """``(format, (width, height))`` declared by a PNG, JPEG or BMP header, without decoding.

    Returns None for other formats and ``(format, None)`` when the format is recognised but its
    header is truncated or malformed.
    """
    head = _as_uint8(data)[:1 << 16].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b'IHDR':
            return 'PNG', None
        return 'PNG', (int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big'))
    if head.startswith(b'\xff\xd8'):
        return 'JPEG', _jpeg_dimensions(head)
    if head.startswith(b'BM'):
        if len(head) < 26:
            return 'BMP', None
        return 'BMP', (abs(int.from_bytes(head[18:22], 'little', signed=True)),
                       abs(int.from_bytes(head[22:26], 'little', signed=True)))
    return None


REDUCTIONS = (1, 2, 4, 8)
"""Scale divisors of :func:`decode_bounded`'s ``reduce`` (JPEG's DCT scaling: the decoder
skips the work rather than resizing afterwards; other formats are resized by OpenCV)."""


def decode_bounded(buf: np.ndarray, max_pixels: int | None, what: str,
                   reduce: int = 1) -> np.ndarray | None:
    """``cv2.imdecode`` (BGR) of encoded bytes after checking the declared size against
    ``max_pixels``; None when OpenCV cannot decode them. ``reduce`` 2, 4 or 8 decodes at that
    fraction of the size (``IMREAD_REDUCED_COLOR_<n>``: ``ceil(width / n)`` for JPEG).

    Raises:
        ImageError: the declared (or, for other formats, decoded) size exceeds ``max_pixels``,
            or a PNG/JPEG/BMP header is unreadable while a limit is set.
    """
    import cv2

    declared = compressed_dimensions(buf) if max_pixels is not None else None
    if declared is not None:
        kind, size = declared
        if size is None:
            raise ImageError(f'{what}: {kind} header is truncated or malformed')
        check_image_pixels(size[0], size[1], max_pixels, f'{what}: {kind} header declares')
    if reduce not in REDUCTIONS:
        raise ImageError(f'{what}: reduce {reduce} is not one of {REDUCTIONS}')
    flags = cv2.IMREAD_COLOR if reduce == 1 else getattr(cv2, f'IMREAD_REDUCED_COLOR_{reduce}')
    image = cv2.imdecode(buf, flags)
    if image is not None and image.ndim >= 2:
        check_image_pixels(image.shape[1] * reduce, image.shape[0] * reduce, max_pixels,
                           f'{what}: decoded')
    return image


def _field_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ImageError(f'image field {name}: expected an integer, got {value!r}') from None


def image_to_bgr(height: int, width: int, encoding: str, step: int, data: Any,
                 is_bigendian: bool | int = False, copy: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Convert raw ``sensor_msgs/Image`` fields to a uint8 BGR array of shape [h, w, 3].

    ``out``: a uint8 [h, w, 3] array the conversion writes into when it has that shape (a
    reused buffer; unused for ``bgr8``, which is returned as a view).

    Raises:
        ImageError: unknown ``encoding``, zero or non-integer ``height``/``width``, more
            than ``max_pixels`` pixels, ``step`` smaller than a row, ``data`` shorter than
            ``height * step``, odd ``width`` for YUV 4:2:2, or an OpenCV conversion failure.
            The message names the field at fault.
    """
    name = _normalize_encoding(encoding)
    spec = _ENCODINGS.get(name)
    if spec is None:
        raise ImageError(f'image field encoding: unsupported encoding {encoding!r} '
                         f'(supported: {", ".join(sorted(_ENCODINGS))})')
    height, width = _field_int('height', height), _field_int('width', width)
    step = _field_int('step', step)
    if height <= 0:
        raise ImageError(f'image field height: must be positive, got {height}')
    if width <= 0:
        raise ImageError(f'image field width: must be positive, got {width}')
    check_image_pixels(width, height, max_pixels, 'image field width x height:')
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
        dst = out if out is not None and out.shape == (height, width, 3) \
            and out.dtype == np.uint8 else None
        converted = spec.convert(img, dst)
    except Exception as exc:  # cv2.error and friends
        raise ImageError(f'image field encoding: cannot convert {height}x{width} {name} '
                         f'image to bgr8 ({exc})') from None
    return converted


def image_msg_to_bgr(msg: Any, copy: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` message (rclpy or rosbags) to uint8 BGR [h, w, 3].

    See :func:`image_to_bgr`; ``bgr8`` input is returned as a view of ``msg.data`` unless
    ``copy`` is true.
    """
    return image_to_bgr(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                        getattr(msg, 'is_bigendian', False), copy=copy,
                        max_pixels=max_pixels)


def compressed_to_bgr(fmt: str, data: Any,
                      max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                      reduce: int = 1) -> np.ndarray:
    """Decode ``sensor_msgs/CompressedImage`` fields (``format``, ``data``) to uint8 BGR
    (at ``1 / reduce`` of the size, see :func:`decode_bounded`).

    ``fmt`` may be ``'jpeg'``, ``'png'`` or image_transport's ``'rgb8; jpeg compressed bgr8'``
    form; the payload is decoded by content with ``cv2.imdecode`` (always to BGR, 16-bit PNG
    scaled to 8 bit). ``compressedDepth`` payloads are rejected.

    Raises:
        ImageError: empty or undecodable ``data``, an unsupported ``format``, or an image
            larger than ``max_pixels`` (checked on the header before decoding).
    """
    import cv2

    if 'compresseddepth' in str(fmt).lower().replace(' ', ''):
        raise ImageError(f'compressed image field format: {fmt!r} (compressedDepth) is not '
                         'supported')
    buf = _as_uint8(data)
    if buf.size == 0:
        raise ImageError(f'compressed image field data: empty payload (format {fmt!r})')
    try:
        img = decode_bounded(buf, max_pixels, 'compressed image field data', reduce)
    except cv2.error as exc:
        raise ImageError(f'compressed image field data: cannot decode {fmt!r} ({exc})') from None
    if img is None or img.size == 0:
        raise ImageError(f'compressed image field data: cannot decode {buf.size} bytes '
                         f'as {fmt!r}')
    return img


def compressed_msg_to_bgr(msg: Any,
                          max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` message (rclpy or rosbags) to uint8 BGR."""
    return compressed_to_bgr(msg.format, msg.data, max_pixels)


def is_compressed_msg(msg: Any) -> bool:
    """True for ``CompressedImage``-like messages (they have ``format`` and no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def msg_to_bgr(msg: Any, copy: bool = False,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Convert an ``Image`` or ``CompressedImage`` message to uint8 BGR [h, w, 3].

    Images over ``max_pixels`` (None: no limit) raise :class:`ImageError` before decoding.
    """
    if is_compressed_msg(msg):
        return compressed_msg_to_bgr(msg, max_pixels)
    return image_msg_to_bgr(msg, copy=copy, max_pixels=max_pixels)


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
