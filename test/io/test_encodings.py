"""Tests for darknet53_ros.io.encodings against OpenCV and rosbags-image as references."""
import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import ImageError
from darknet53_ros.io.encodings import (
    bgr_to_compressed_fields,
    bgr_to_image_fields,
    compressed_msg_to_bgr,
    compressed_to_bgr,
    image_msg_to_bgr,
    image_to_bgr,
    is_compressed_msg,
    msg_to_bgr,
)

from ..hypo import given, settings, st

# Channels and bytes per channel of each encoding's raw buffer.
LAYOUT = {
    'bgr8': (3, 1), 'rgb8': (3, 1), 'bgra8': (4, 1), 'rgba8': (4, 1), 'mono8': (1, 1),
    'mono16': (1, 2), 'bayer_rggb8': (1, 1), 'bayer_bggr8': (1, 1), 'bayer_gbrg8': (1, 1),
    'bayer_grbg8': (1, 1), 'uyvy': (2, 1), 'yuv422': (2, 1), 'yuyv': (2, 1),
    'yuv422_yuy2': (2, 1),
}
# Independent OpenCV reference per encoding (new-style Bayer aliases name the ROS pattern).
REFERENCE = {
    'bgr8': lambda a: a,
    'rgb8': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2BGR),
    'bgra8': lambda a: cv2.cvtColor(a, cv2.COLOR_BGRA2BGR),
    'rgba8': lambda a: cv2.cvtColor(a, cv2.COLOR_RGBA2BGR),
    'mono8': lambda a: cv2.cvtColor(a, cv2.COLOR_GRAY2BGR),
    'mono16': lambda a: cv2.cvtColor((a // 256).astype(np.uint8), cv2.COLOR_GRAY2BGR),
    'bayer_rggb8': lambda a: cv2.cvtColor(a, cv2.COLOR_BayerRGGB2BGR),
    'bayer_bggr8': lambda a: cv2.cvtColor(a, cv2.COLOR_BayerBGGR2BGR),
    'bayer_gbrg8': lambda a: cv2.cvtColor(a, cv2.COLOR_BayerGBRG2BGR),
    'bayer_grbg8': lambda a: cv2.cvtColor(a, cv2.COLOR_BayerGRBG2BGR),
    'uyvy': lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2BGR_UYVY),
    'yuv422': lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2BGR_UYVY),
    'yuyv': lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2BGR_YUY2),
    'yuv422_yuy2': lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2BGR_YUY2),
}


def _raw(encoding, height, width, seed=0):
    """A random image in the encoding's native layout (uint16 for mono16)."""
    rng = np.random.default_rng(seed)
    channels, itemsize = LAYOUT[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if itemsize == 2:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _msg(encoding, raw, pad=0, bigendian=False, data_type='bytes'):
    """An Image-like object holding ``raw`` with ``pad`` bytes of padding per row."""
    height, width = raw.shape[:2]
    if raw.dtype == np.uint16:
        raw = raw.astype('>u2' if bigendian else '<u2')
    rows = raw.reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    data = padded.tobytes()
    if data_type == 'array':
        data = array.array('B', data)
    elif data_type == 'numpy':
        data = np.frombuffer(data, np.uint8).copy()
    return SimpleNamespace(height=height, width=width, encoding=encoding,
                           is_bigendian=int(bigendian), step=padded.shape[1], data=data)


@pytest.mark.parametrize('encoding', sorted(LAYOUT))
def test_every_encoding_matches_opencv_reference(encoding):
    raw = _raw(encoding, 6, 8)
    out = image_msg_to_bgr(_msg(encoding, raw))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, REFERENCE[encoding](raw))


@pytest.mark.parametrize('encoding', sorted(LAYOUT))
def test_every_encoding_matches_rosbags_image(encoding):
    rosbags_image = pytest.importorskip('rosbags.image')

    raw = _raw(encoding, 4, 6, seed=1)
    msg = _msg(encoding, raw, data_type='numpy')
    try:
        expected = rosbags_image.message_to_cvimage(msg, 'bgr8')
    except Exception as exc:  # ImageFormatError; rosbags-image 0.9 (Python 3.8): no yuyv
        if 'not supported' not in str(exc):
            raise
        pytest.skip(f'rosbags-image {encoding}: {exc} (checked against OpenCV above)')
    got = image_msg_to_bgr(msg)
    if encoding == 'mono16':  # rosbags-image scales by 255/65535, we shift by 8 bits
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_pattern_recovers_flat_colour(pattern):
    # Mosaic a flat colour following the ROS pattern name (first row, then second row).
    colour = {'r': 200, 'g': 100, 'b': 30}
    h, w = 8, 10
    mosaic = np.zeros((h, w), np.uint8)
    for (dy, dx), channel in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        mosaic[dy::2, dx::2] = colour[channel]
    out = image_to_bgr(h, w, f'bayer_{pattern}8', w, mosaic.tobytes())
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to([30, 100, 200], (4, 6, 3)))


@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_shift_and_byte_order(bigendian):
    raw = np.array([[0, 255, 256, 65535], [1000, 32768, 40000, 257]], np.uint16)
    out = image_msg_to_bgr(_msg('mono16', raw, bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 0], raw >> 8)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(sorted(LAYOUT)), height=st.integers(2, 12),
       half_width=st.integers(1, 8), pad=st.integers(0, 9), bigendian=st.booleans(),
       data_type=st.sampled_from(['bytes', 'array', 'numpy']), seed=st.integers(0, 1000))
def test_step_padding_is_honoured(encoding, height, half_width, pad, bigendian, data_type,
                                  seed):
    width = 2 * half_width
    raw = _raw(encoding, height, width, seed)
    out = image_msg_to_bgr(_msg(encoding, raw, pad, bigendian, data_type))
    np.testing.assert_array_equal(out, REFERENCE[encoding](raw))


def test_bgr8_is_zero_copy_view_unless_copy():
    raw = _raw('bgr8', 5, 4)
    msg = _msg('bgr8', raw, pad=3, data_type='numpy')
    view = image_msg_to_bgr(msg)
    assert np.shares_memory(view, msg.data)
    copied = image_msg_to_bgr(msg, copy=True)
    assert not np.shares_memory(copied, msg.data) and copied.flags.writeable
    np.testing.assert_array_equal(view, copied)


def test_opencv_type_aliases():
    raw = _raw('bgr8', 3, 4)
    np.testing.assert_array_equal(image_msg_to_bgr(_msg('8UC3', raw)), raw)


@pytest.mark.parametrize('kwargs, field', [
    ({'encoding': 'bayer_xyz8'}, 'encoding'),
    ({'encoding': '32FC1'}, 'encoding'),
    ({'height': 0}, 'height'),
    ({'width': 0}, 'width'),
    ({'step': 11}, 'step'),
    ({'data': b'\0' * 47}, 'data'),
    ({'data': b''}, 'data'),
    ({'encoding': 'uyvy', 'width': 3, 'step': 6}, 'width'),
])
def test_errors_name_the_field(kwargs, field):
    fields = {'height': 4, 'width': 4, 'encoding': 'bgr8', 'step': 12, 'data': b'\0' * 48}
    fields.update(kwargs)
    with pytest.raises(ImageError, match=field):
        image_to_bgr(**fields)


def test_image_fields_round_trip_through_opencv_and_rosbags():
    message_to_cvimage = pytest.importorskip('rosbags.image').message_to_cvimage

    bgr = _raw('bgr8', 7, 5, seed=3)
    for encoding in ('bgr8', 'rgb8', 'bgra8', 'rgba8'):
        fields = bgr_to_image_fields(bgr, encoding)
        msg = SimpleNamespace(**fields)
        np.testing.assert_array_equal(image_msg_to_bgr(msg), bgr)
        np.testing.assert_array_equal(message_to_cvimage(msg, 'bgr8'), bgr)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for encoding in ('mono8', 'mono16'):
        msg = SimpleNamespace(**bgr_to_image_fields(bgr, encoding))
        np.testing.assert_array_equal(image_msg_to_bgr(msg)[..., 1], grey)
    assert bgr_to_image_fields(bgr, 'mono16')['step'] == 10
    with pytest.raises(ImageError, match='encoding'):
        bgr_to_image_fields(bgr, 'uyvy')
    with pytest.raises(ImageError, match='data'):
        bgr_to_image_fields(bgr.astype(np.float32))


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_round_trip(fmt):
    bgr = np.zeros((16, 24, 3), np.uint8)
    bgr[:, :12] = (255, 0, 0)
    bgr[:, 12:] = (0, 0, 255)
    fields = bgr_to_compressed_fields(bgr, fmt, quality=100)
    assert fields['format'] == f'bgr8; {fmt} compressed bgr8'
    msg = SimpleNamespace(**fields)
    assert is_compressed_msg(msg)
    out = compressed_msg_to_bgr(msg)
    reference = cv2.imdecode(np.frombuffer(fields['data'].tobytes(), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(out, reference)
    error = np.abs(out.astype(int) - bgr)[:, np.r_[0:8, 16:24]]  # away from the colour edge
    assert error.max() <= (0 if fmt == 'png' else 8)
    np.testing.assert_array_equal(msg_to_bgr(msg), out)


def test_compressed_rgb8_format_string_and_errors():
    bgr = _raw('bgr8', 8, 8)
    ok, png = cv2.imencode('.png', bgr)
    np.testing.assert_array_equal(compressed_to_bgr('rgb8; png compressed bgr8', png.tobytes()),
                                  bgr)
    with pytest.raises(ImageError, match='data'):
        compressed_to_bgr('jpeg', b'not an image')
    with pytest.raises(ImageError, match='data'):
        compressed_to_bgr('jpeg', b'')
    with pytest.raises(ImageError, match='format'):
        compressed_to_bgr('16UC1; compressedDepth png', png.tobytes())


# -- size limit, checked before decoding (issue 13) --------------------------------------------
@pytest.mark.parametrize('ext', ['.png', '.jpg', '.bmp'])
def test_compressed_dimensions_read_the_header(ext):
    from darknet53_ros.io.encodings import compressed_dimensions

    img = np.zeros((37, 53, 3), np.uint8)
    data = cv2.imencode(ext, img)[1]
    kind, size = compressed_dimensions(data)
    assert kind == {'.png': 'PNG', '.jpg': 'JPEG', '.bmp': 'BMP'}[ext] and size == (53, 37)
    assert compressed_dimensions(b'GIF89a....') is None


def test_compressed_bomb_rejected_without_decoding(monkeypatch):
    from ..toy import png_declaring

    def imdecode(*args):
        raise AssertionError('decoded a bomb')

    monkeypatch.setattr(cv2, 'imdecode', imdecode)
    with pytest.raises(ImageError, match=r'PNG header declares 30000x30000 .*max_image_pixels'):
        compressed_to_bgr('png', png_declaring(30000, 30000))
    jpeg = bytearray(cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = jpeg.index(b'\xff\xc0')
    jpeg[sof + 5:sof + 9] = (20000).to_bytes(2, 'big') * 2
    with pytest.raises(ImageError, match='JPEG header declares 20000x20000'):
        compressed_to_bgr('jpeg', bytes(jpeg))
    with pytest.raises(ImageError, match='PNG header is truncated'):
        compressed_to_bgr('png', png_declaring(4, 4)[:20])


def test_max_pixels_applies_to_raw_images_and_none_disables_it():
    img = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ImageError, match=r'width x height: 5x4 \(20 pixels\)'):
        image_to_bgr(4, 5, 'bgr8', 15, img.reshape(-1), max_pixels=19)
    assert image_to_bgr(4, 5, 'bgr8', 15, img.reshape(-1), max_pixels=None).shape == (4, 5, 3)
    data = cv2.imencode('.png', img)[1]
    with pytest.raises(ImageError, match='over the max_image_pixels limit of 19'):
        compressed_to_bgr('png', data, max_pixels=19)
    assert compressed_to_bgr('png', data, max_pixels=20).shape == (4, 5, 3)


@pytest.mark.parametrize('field', ['height', 'width', 'step'])
def test_non_integer_dimensions_are_image_errors(field):
    values = {'height': 2, 'width': 2, 'step': 6}
    values[field] = float('nan')
    with pytest.raises(ImageError, match=f'image field {field}: expected an integer'):
        image_to_bgr(values['height'], values['width'], 'bgr8', values['step'], bytes(12))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=96), st.sampled_from([b'', b'\x89PNG\r\n\x1a\n', b'\xff\xd8',
                                                 b'BM']))
def test_fuzz_compressed_decoding_raises_only_image_errors(payload, magic):
    """Byte-level fuzz of the header reader and decoder (fixed budget: 150 examples)."""
    try:
        img = compressed_to_bgr('png', magic + payload, max_pixels=1 << 20)
    except ImageError:
        return
    assert img.ndim == 3 and img.shape[0] * img.shape[1] <= 1 << 20
