"""The CDR wire format of ``sensor_msgs/Image`` and ``CompressedImage``, read and written here.

The node subscribes with rclpy's ``raw=True`` and reads the serialized payload itself: rclpy's
message conversion copies every pixel into a Python ``array`` (the ingest ceiling at 1080p);
:func:`read_image` / :func:`read_compressed_image` parse the few header fields with ``struct``
and return the pixel bytes as a **zero-copy** NumPy view of the received buffer. The writers
(:func:`write_image`, :func:`write_compressed_image`) build the payload ``rclpy``'s
``Publisher.publish(bytes)`` sends as it is (the annotated outputs; the throughput benchmark's
pre-serialised frames).

Layout (OMG CDR as ROS 2's RMWs and rosbag2 write it; the same for Humble and Jazzy):

- a 4-byte encapsulation header: ``00 00`` (big endian) or ``00 01`` (little endian) plain CDR,
  or ``00 06`` / ``00 07`` plain XCDR2; then two option bytes (ignored: trailing padding);
- every primitive aligned to its size, counted from the end of the encapsulation header
  (XCDR2 caps alignment at 4 bytes, which changes nothing here: no field is wider);
- ``string``: ``uint32`` length including the terminating NUL, the bytes, the NUL;
- ``uint8[]``: ``uint32`` count, then the bytes.

``Image`` = ``Header`` (``int32 sec``, ``uint32 nanosec``, ``string frame_id``), ``uint32
height``, ``uint32 width``, ``string encoding``, ``uint8 is_bigendian``, ``uint32 step``,
``uint8[] data``; ``CompressedImage`` = ``Header``, ``string format``, ``uint8[] data``.

Any other encapsulation (delimited or parameter-list XCDR2, which an RMW could choose for
appendable types) raises :class:`CdrUnsupportedError`, so callers fall back to the RMW's own
deserialisation; malformed payloads raise :class:`CdrError` naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import Any

import numpy as np

from darknet53_ros.errors import ImageError

__all__ = [
    'CdrCompressedImage',
    'CdrError',
    'CdrHeader',
    'CdrImage',
    'CdrTime',
    'CdrUnsupportedError',
    'UnreadableFrame',
    'read_compressed_image',
    'read_image',
    'write_compressed_image',
    'write_image',
]

_PLAIN = {0x0000: False, 0x0001: True, 0x0006: False, 0x0007: True}
"""Supported representation identifiers -> little endian."""


class CdrError(ImageError):
    """A serialized image message is truncated or malformed (names the field)."""


class CdrUnsupportedError(CdrError):
    """An encapsulation this reader does not parse (use the RMW's deserialisation)."""


@dataclass(frozen=True)
class CdrTime:
    """``builtin_interfaces/Time``."""

    sec: int
    nanosec: int


@dataclass(frozen=True)
class CdrHeader:
    """``std_msgs/Header`` as read from CDR (duck-types the message's attributes)."""

    stamp: CdrTime
    frame_id: str


@dataclass(frozen=True, eq=False)
class CdrImage:
    """``sensor_msgs/Image`` fields; ``data`` is a read-only uint8 view of the payload."""

    header: CdrHeader
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


@dataclass(frozen=True, eq=False)
class CdrCompressedImage:
    """``sensor_msgs/CompressedImage`` fields; ``data`` is a uint8 view of the payload."""

    header: CdrHeader
    format: str
    data: np.ndarray


@dataclass(frozen=True)
class UnreadableFrame:
    """A payload neither this reader nor the RMW could read: decoding it raises ``error``
    (so the frame is dropped and counted like any undecodable frame)."""

    error: CdrError


class _Reader:
    """Sequential reader over one payload (alignment relative to the encapsulation end)."""

    def __init__(self, buf: Any, what: str) -> None:
        self.view = memoryview(buf).cast('B')
        self.what = what
        if len(self.view) < 4:
            raise CdrError(f'{what}: {len(self.view)} bytes, too short for a CDR header')
        kind = (self.view[0] << 8) | self.view[1]
        little = _PLAIN.get(kind)
        if little is None:
            raise CdrUnsupportedError(f'{what}: encapsulation 0x{kind:04x} is not plain CDR')
        self.order = '<' if little else '>'
        self.pos = 4

    def _take(self, size: int, align: int, field: str) -> int:
        pos = self.pos + (-(self.pos - 4) % align)
        end = pos + size
        if end > len(self.view):
            raise CdrError(f'{self.what} field {field}: truncated at byte {pos} '
                           f'(payload {len(self.view)} bytes)')
        self.pos = end
        return pos

    def u32(self, field: str) -> int:
        pos = self._take(4, 4, field)
        value: int = struct.unpack_from(self.order + 'I', self.view, pos)[0]
        return value

    def i32(self, field: str) -> int:
        pos = self._take(4, 4, field)
        value: int = struct.unpack_from(self.order + 'i', self.view, pos)[0]
        return value

    def u8(self, field: str) -> int:
        return int(self.view[self._take(1, 1, field)])

    def string(self, field: str) -> str:
        length = self.u32(field)
        pos = self._take(length, 1, field)
        raw = bytes(self.view[pos:pos + length])
        if raw.endswith(b'\x00'):
            raw = raw[:-1]
        try:
            return raw.decode('utf-8')
        except UnicodeDecodeError as exc:
            raise CdrError(f'{self.what} field {field}: not UTF-8 ({exc})') from None

    def bytes_view(self, field: str) -> np.ndarray:
        count = self.u32(field)
        pos = self._take(count, 1, field)
        return np.frombuffer(self.view, np.uint8, count=count, offset=pos)

    def header(self) -> CdrHeader:
        sec = self.i32('header.stamp.sec')
        nanosec = self.u32('header.stamp.nanosec')
        return CdrHeader(CdrTime(sec, nanosec), self.string('header.frame_id'))


def read_image(buf: Any) -> CdrImage:
    """Parse a serialized ``sensor_msgs/Image`` (``bytes``, ``bytearray``, ``memoryview``);
    ``data`` views ``buf`` (no copy).

    Raises:
        CdrUnsupportedError: not plain CDR (use the RMW's deserialisation instead).
        CdrError: truncated or malformed, naming the field.
    """
    reader = _Reader(buf, 'sensor_msgs/Image')
    header = reader.header()
    height = reader.u32('height')
    width = reader.u32('width')
    encoding = reader.string('encoding')
    is_bigendian = reader.u8('is_bigendian')
    step = reader.u32('step')
    return CdrImage(header, height, width, encoding, is_bigendian, step,
                    reader.bytes_view('data'))


def read_compressed_image(buf: Any) -> CdrCompressedImage:
    """Parse a serialized ``sensor_msgs/CompressedImage``; ``data`` views ``buf``.

    Raises:
        CdrUnsupportedError, CdrError: as :func:`read_image`.
    """
    reader = _Reader(buf, 'sensor_msgs/CompressedImage')
    header = reader.header()
    fmt = reader.string('format')
    return CdrCompressedImage(header, fmt, reader.bytes_view('data'))


# -- writing -----------------------------------------------------------------------------------
class _Writer:
    def __init__(self, little_endian: bool) -> None:
        self.order = '<' if little_endian else '>'
        self.parts: list[Any] = [b'\x00\x01\x00\x00' if little_endian else b'\x00\x00\x00\x00']
        self.size = 0  # bytes after the encapsulation header

    def _put(self, data: Any, align: int, size: int) -> None:
        pad = -self.size % align
        if pad:
            self.parts.append(b'\x00' * pad)
        self.parts.append(data)
        self.size += pad + size

    def u32(self, value: int) -> None:
        self._put(struct.pack(self.order + 'I', int(value)), 4, 4)

    def i32(self, value: int) -> None:
        self._put(struct.pack(self.order + 'i', int(value)), 4, 4)

    def u8(self, value: int) -> None:
        self._put(bytes((int(value) & 0xFF,)), 1, 1)

    def string(self, value: str) -> None:
        raw = value.encode('utf-8') + b'\x00'
        self.u32(len(raw))
        self._put(raw, 1, len(raw))

    def blob(self, data: Any) -> None:
        if isinstance(data, (bytes, bytearray)):
            view = memoryview(data)
        else:
            array: Any = np.ascontiguousarray(data, dtype=np.uint8)
            view = memoryview(array).cast('B')
        self.u32(len(view))
        self._put(view, 1, len(view))

    def header(self, header: Any) -> None:
        stamp = header.stamp
        self.i32(stamp.sec)
        self.u32(stamp.nanosec)
        self.string(str(header.frame_id))

    def payload(self) -> bytes:
        return b''.join(self.parts)


def write_image(header: Any, height: int, width: int, encoding: str, step: int, data: Any,
                is_bigendian: int = 0, little_endian: bool = True) -> bytes:
    """A serialized ``sensor_msgs/Image`` (``header``: anything with ``stamp.sec``,
    ``stamp.nanosec`` and ``frame_id``; ``data``: bytes or a uint8 array, copied once)."""
    writer = _Writer(little_endian)
    writer.header(header)
    writer.u32(height)
    writer.u32(width)
    writer.string(encoding)
    writer.u8(is_bigendian)
    writer.u32(step)
    writer.blob(data)
    return writer.payload()


def write_compressed_image(header: Any, fmt: str, data: Any,
                           little_endian: bool = True) -> bytes:
    """A serialized ``sensor_msgs/CompressedImage`` (see :func:`write_image`)."""
    writer = _Writer(little_endian)
    writer.header(header)
    writer.string(fmt)
    writer.blob(data)
    return writer.payload()
