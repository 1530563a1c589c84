"""Tests for darknet53_ros.io.frame_decoder: reduced-scale JPEG decoding (sizes, boxes back in
source pixels) and the reused conversion buffers."""
from __future__ import annotations

import gc

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import ImageError
from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.cdr import (
    CdrCompressedImage,
    CdrError,
    CdrHeader,
    CdrImage,
    CdrTime,
    UnreadableFrame,
)
from darknet53_ros.io.frame_decoder import (
    BufferPool,
    DecodedFrame,
    FrameDecoder,
    jpeg_reduction,
)

HEADER = CdrHeader(CdrTime(1, 2), 'cam')


def _scene(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def _jpeg(image: np.ndarray, quality: int = 95) -> CdrCompressedImage:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return CdrCompressedImage(HEADER, 'jpeg', data.reshape(-1))


@pytest.mark.parametrize('size, net, letterbox, expected', [
    ((1920, 1080), (320, 256), True, 4),   # s = 1/6: 480x270 still >= 320x180
    ((1920, 1080), (416, 416), True, 4),   # s = 0.217
    ((1920, 1080), (640, 640), True, 2),   # s = 1/3
    ((640, 480), (320, 256), True, 2),     # s = 1/2 exactly
    ((640, 480), (416, 416), True, 1),     # s = 0.65: more than half
    ((1920, 1080), (320, 256), False, 4),  # stretched: s = max(1/6, 0.237)
    ((1920, 1080), (640, 512), False, 2),  # stretched: s = 0.474
    ((7680, 4320), (320, 256), True, 8),
    ((96, 96), (96, 96), True, 1),
    ((0, 10), (96, 96), True, 1),
])
def test_jpeg_reduction(size, net, letterbox, expected) -> None:
    assert jpeg_reduction(*size, *net, letterbox=letterbox) == expected
    if 0 in size:
        return
    reduce = expected
    scale = min(net[0] / max(size[0], 1), net[1] / max(size[1], 1)) if letterbox else \
        max(net[0] / max(size[0], 1), net[1] / max(size[1], 1))
    # Never below what the network sees; the next reduction would be.
    assert reduce * scale <= 1.0 + 1e-9
    if reduce < 8 and scale <= 0.5:
        assert 2 * reduce * scale > 1.0


def test_reduced_jpeg_decode_and_boxes_in_source_pixels() -> None:
    box = (480, 240, 800, 520)
    image = _scene(720, 1280, box)
    decoder = FrameDecoder(320, 256)
    frame = decoder.decode(_jpeg(image))
    assert frame.reduce == 4 and frame.image.shape == (180, 320, 3)
    assert (frame.source_width, frame.source_height) == (1280, 720)
    reference = cv2.imdecode(np.asarray(_jpeg(image).data), cv2.IMREAD_REDUCED_COLOR_4)
    np.testing.assert_array_equal(frame.image, reference)
    # A box found in the decoded pixels maps back onto the object in source pixels.
    ys, xs = np.nonzero(frame.image[:, :, 0] > 150)
    found = Detections(np.float32([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]),
                       np.float32([0.9]), np.int64([0]))
    mapped = frame.to_source(found)
    np.testing.assert_allclose(mapped.boxes[0], box, atol=4 + 1)
    assert mapped.scores is found.scores
    # Clipped to the source.
    outside = Detections(np.float32([[-5, -5, 400, 300]]), np.float32([1]), np.int64([0]))
    np.testing.assert_allclose(frame.to_source(outside).boxes[0], [0, 0, 1280, 720])
    # Full size when disabled, and for PNG (its decoder cannot skip work).
    assert FrameDecoder(320, 256, reduced=False).decode(_jpeg(image)).image.shape == (720, 1280,
                                                                                       3)
    ok, png = cv2.imencode('.png', image)
    full = decoder.decode(CdrCompressedImage(HEADER, 'png', png.reshape(-1)))
    assert full.reduce == 1 and full.image.shape == (720, 1280, 3)
    assert full.to_source(found) is found


def test_odd_sizes_round_up_and_scale_per_axis() -> None:
    image = _scene(483, 1283, (0, 0, 10, 10))
    frame = FrameDecoder(160, 96).decode(_jpeg(image))
    assert frame.reduce == 8 and frame.image.shape == (61, 161, 3)  # ceil(483/8), ceil(1283/8)
    assert frame.scale == pytest.approx((1283 / 161, 483 / 61))


def test_size_limit_still_checked_on_the_header() -> None:
    with pytest.raises(ImageError, match='max_image_pixels'):
        FrameDecoder(32, 32, max_pixels=1000).decode(_jpeg(_scene(64, 64, (0, 0, 1, 1))))


def test_unreadable_frame_raises_its_reason() -> None:
    with pytest.raises(CdrError, match='field data: truncated'):
        FrameDecoder(32, 32).decode(UnreadableFrame(CdrError('sensor_msgs/Image field data: '
                                                             'truncated at byte 9')))


def test_buffer_pool_reuses_only_free_arrays() -> None:
    pool = BufferPool(2)
    first = pool.get((4, 5, 3))
    first_id = id(first)
    held = pool.get((4, 5, 3))  # ``first`` is still referenced here: a new one
    assert held is not first and pool.allocations == 2
    del first
    gc.collect()
    again = pool.get((4, 5, 3))
    assert id(again) == first_id and pool.allocations == 2
    view = again[1:]  # a view keeps its base busy
    del again
    assert pool.get((4, 5, 3)) is not view.base and pool.allocations == 3
    assert len(pool._arrays) == 2  # bounded


def test_raw_conversions_write_into_reused_buffers() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), np.uint8)
    msg = CdrImage(HEADER, 6, 8, 'rgb8', 0, 24, rgb.reshape(-1))
    decoder = FrameDecoder(96, 96)
    ids = set()
    for _ in range(4):
        frame = decoder.decode(msg, 'front')
        np.testing.assert_array_equal(frame.image, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        ids.add(id(frame.image))
        del frame
    assert len(ids) == 1 and decoder.pool('front').allocations == 1
    kept = [decoder.decode(msg, 'front') for _ in range(3)]  # all held: all distinct
    assert len({id(k.image) for k in kept}) == 3
    bgr = CdrImage(HEADER, 6, 8, 'bgr8', 0, 24, rgb.reshape(-1))
    assert np.shares_memory(decoder.decode(bgr, 'front').image, bgr.data)  # zero copy


def test_decoded_frame_scale() -> None:
    frame = DecodedFrame(np.zeros((270, 480, 3), np.uint8), 1920, 1080, 4)
    assert frame.scale == (4.0, 4.0)
