"""Tests for darknet53_ros.io.cdr: the CDR reader/writer of sensor_msgs/Image and
CompressedImage, against independent serializers (rosbags' CDR serializer where installed,
rclpy's serialize_message/deserialize_message with a sourced ROS 2), for every encoding the
decoder supports, both byte orders and awkward alignments."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.io.cdr import (
    CdrError,
    CdrHeader,
    CdrTime,
    CdrUnsupportedError,
    read_compressed_image,
    read_image,
    write_compressed_image,
    write_image,
)
from darknet53_ros.io.encodings import SUPPORTED_ENCODINGS, image_msg_to_bgr

from ..conftest import missing_modules

STAMP = (1_700_000_123, 456_789_012)
# Bytes per pixel of each supported encoding (aliases included).
_BPP = {'bgr8': 3, 'rgb8': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1, 'mono16': 2, 'uyvy': 2,
        'yuv422': 2, 'yuyv': 2, 'yuv422_yuy2': 2, '8UC1': 1, '8UC3': 3, '8UC4': 4, '16UC1': 2}


def _bpp(encoding: str) -> int:
    return _BPP.get(encoding, 1)  # Bayer: one byte


def _image_fields(encoding: str, width: int = 6, height: int = 3, pad: int = 3,
                  seed: int = 0) -> dict:
    step = width * _bpp(encoding) + pad  # padded rows: step is honoured
    data = np.random.default_rng(seed).integers(0, 255, height * step, dtype=np.uint8)
    return {'height': height, 'width': width, 'encoding': encoding, 'step': step,
            'data': data, 'is_bigendian': 1 if encoding in ('mono16',) else 0}


@pytest.fixture(scope='module')
def rosbags_types():
    pytest.importorskip('rosbags', reason='rosbags not installed: no independent CDR '
                                          'serializer to compare with')
    from darknet53_ros.io.messages import MessageTypes

    return MessageTypes.from_rosbags('humble')


def _rosbags_image(types, frame_id: str, fields: dict):
    header = types.Header(stamp=types.Time(sec=STAMP[0], nanosec=STAMP[1]), frame_id=frame_id)
    return types.Image(header=header, **fields)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize('little_endian', [True, False])
def test_image_parity_with_rosbags(rosbags_types, encoding: str, little_endian: bool) -> None:
    fields = _image_fields(encoding)
    for frame_id in ('', 'a', 'cam', 'front_camera_optical_frame', 'ü'):  # every alignment
        msg = _rosbags_image(rosbags_types, frame_id, fields)
        reference = bytes(rosbags_types.typestore.serialize_cdr(
            msg, 'sensor_msgs/msg/Image', little_endian=little_endian))
        header = CdrHeader(CdrTime(*STAMP), frame_id)
        assert write_image(header, little_endian=little_endian, **fields) == reference
        back = read_image(reference)
        assert back.header == header
        assert (back.height, back.width, back.encoding, back.step, back.is_bigendian) == (
            fields['height'], fields['width'], encoding, fields['step'],
            fields['is_bigendian'])
        np.testing.assert_array_equal(back.data, fields['data'])
        if encoding in ('bgr8', 'rgb8', 'mono8', 'mono16', 'bayer_rggb8', 'yuyv'):
            np.testing.assert_array_equal(image_msg_to_bgr(back), image_msg_to_bgr(msg))


@pytest.mark.parametrize('little_endian', [True, False])
def test_compressed_parity_with_rosbags(rosbags_types, little_endian: bool) -> None:
    types = rosbags_types
    for fmt, size in (('jpeg', 0), ('png', 1), ('bgr8; jpeg compressed bgr8', 7), ('', 13)):
        data = np.arange(size, dtype=np.uint8)
        header = types.Header(stamp=types.Time(sec=STAMP[0], nanosec=STAMP[1]), frame_id='l')
        msg = types.CompressedImage(header=header, format=fmt, data=data)
        reference = bytes(types.typestore.serialize_cdr(
            msg, 'sensor_msgs/msg/CompressedImage', little_endian=little_endian))
        assert write_compressed_image(header, fmt, data, little_endian) == reference
        back = read_compressed_image(reference)
        assert (back.format, back.header.frame_id, back.header.stamp.sec) == (fmt, 'l',
                                                                              STAMP[0])
        np.testing.assert_array_equal(back.data, data)
        theirs = types.typestore.deserialize_cdr(
            write_compressed_image(header, fmt, data, little_endian),
            'sensor_msgs/msg/CompressedImage')
        assert theirs.format == fmt and bytes(theirs.data) == bytes(data)


def test_pixels_are_a_zero_copy_view() -> None:
    fields = _image_fields('bgr8', 640, 4, 0)
    payload = write_image(CdrHeader(CdrTime(1, 2), 'f'), **fields)
    back = read_image(payload)
    assert np.shares_memory(back.data, np.frombuffer(payload, np.uint8))
    assert not back.data.flags.writeable
    image = image_msg_to_bgr(back)  # bgr8: still a view of the received bytes
    assert np.shares_memory(image, np.frombuffer(payload, np.uint8))


def test_xcdr2_plain_encapsulation_reads_the_same() -> None:
    """Plain XCDR2 (0x0006/0x0007) caps alignment at 4 bytes: the same layout here."""
    fields = _image_fields('mono8')
    payload = write_image(CdrHeader(CdrTime(*STAMP), 'x'), **fields)
    xcdr2, big = b'\x00\x07' + payload[2:], write_image(
        CdrHeader(CdrTime(*STAMP), 'x'), little_endian=False, **fields)
    for other in (read_image(xcdr2), read_image(b'\x00\x06' + big[2:])):
        assert other.header == read_image(payload).header and other.step == fields['step']
        np.testing.assert_array_equal(other.data, fields['data'])


def test_malformed_payloads_name_the_field() -> None:
    payload = write_image(CdrHeader(CdrTime(*STAMP), 'cam'), **_image_fields('bgr8'))
    with pytest.raises(CdrError, match='field data: truncated'):
        read_image(payload[:-1])
    with pytest.raises(CdrError, match='field header.frame_id: truncated'):
        read_image(payload[:16])
    with pytest.raises(CdrError, match='too short'):
        read_image(b'\x00\x01')
    with pytest.raises(CdrUnsupportedError, match='encapsulation 0x0009'):
        read_image(b'\x00\x09' + payload[2:])  # delimited XCDR2: the RMW's deserializer
    bad = bytearray(write_compressed_image(CdrHeader(CdrTime(0, 0), ''), '\xff', b''))
    bad[-6] = 0xFF  # the format's byte is not UTF-8
    with pytest.raises(CdrError, match='format: not UTF-8'):
        read_compressed_image(bytes(bad))


def test_hypothesis_round_trip() -> None:
    hypothesis = pytest.importorskip('hypothesis', reason='hypothesis not installed')
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 2**32 - 1),
                      frame_id=st.text(max_size=20), encoding=st.text(max_size=12),
                      height=st.integers(0, 2**32 - 1), width=st.integers(0, 2**32 - 1),
                      step=st.integers(0, 2**32 - 1), big=st.integers(0, 255),
                      data=st.binary(max_size=64), little=st.booleans())
    def check(sec, nanosec, frame_id, encoding, height, width, step, big, data, little):
        header = CdrHeader(CdrTime(sec, nanosec), frame_id.replace('\x00', ''))
        payload = write_image(header, height, width, encoding.replace('\x00', ''), step, data,
                              big, little)
        back = read_image(payload)
        assert back.header == header and back.data.tobytes() == data
        assert (back.height, back.width, back.step, back.is_bigendian) == (height, width, step,
                                                                           big)
        for cut in (len(payload) - 1, len(payload) // 2, 5):  # the data comes last
            with pytest.raises(CdrError):
                read_image(payload[:cut])

    check()


# -- against rclpy (a sourced ROS 2) -----------------------------------------------------------
_RCLPY = ('rclpy', 'sensor_msgs.msg')


@pytest.mark.skipif(bool(missing_modules(*_RCLPY)),
                    reason='rclpy/sensor_msgs not importable: needs a sourced ROS 2')
@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_image_parity_with_rclpy(encoding: str) -> None:
    """Issue 21.4: what the node reads with raw=True equals rclpy's deserialisation, and what
    it writes, rclpy's serialisation, for every supported encoding."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    fields = _image_fields(encoding, 7, 5, 1)
    for frame_id in ('', 'ab', 'front_optical'):
        msg = Image(header=Header(frame_id=frame_id), height=fields['height'],
                    width=fields['width'], encoding=encoding, step=fields['step'],
                    is_bigendian=fields['is_bigendian'], data=fields['data'].tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP
        payload = serialize_message(msg)
        back = read_image(payload)
        assert (back.header.stamp.sec, back.header.stamp.nanosec) == STAMP
        assert back.header.frame_id == frame_id and back.encoding == encoding
        assert (back.height, back.width, back.step, back.is_bigendian) == (
            msg.height, msg.width, msg.step, msg.is_bigendian)
        assert back.data.tobytes() == bytes(msg.data)
        ours = write_image(back.header, back.height, back.width, back.encoding, back.step,
                           back.data, back.is_bigendian)
        assert ours == payload
        again = deserialize_message(ours, Image)
        assert again == msg


@pytest.mark.skipif(bool(missing_modules(*_RCLPY)),
                    reason='rclpy/sensor_msgs not importable: needs a sourced ROS 2')
@pytest.mark.parametrize('fmt', ['jpeg', 'png', 'bgr8; jpeg compressed bgr8', ''])
def test_compressed_parity_with_rclpy(fmt: str) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt, data=bytes(range(11)))
    msg.header.frame_id = 'left_optical'
    msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP
    payload = serialize_message(msg)
    back = read_compressed_image(payload)
    assert back.format == fmt and back.header.frame_id == 'left_optical'
    assert back.data.tobytes() == bytes(msg.data)
    ours = write_compressed_image(back.header, fmt, back.data)
    assert ours == payload and deserialize_message(ours, CompressedImage) == msg
