"""Tests for darknet53_ros.inference.preprocess against OpenCV (blobFromImage) and Darknet's
formulas."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.errors import ImageError
from darknet53_ros.inference.preprocess import (
    PAD_VALUE,
    LetterboxTransform,
    Preprocessor,
    check_image,
    letterbox_transform,
    preprocess,
)

from ..conftest import optional_module, requires
from ..hypo import given, settings, st

pytestmark = requires('cv2')
cv2 = optional_module('cv2')


def image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def darknet_letterbox(src_w: int, src_h: int, net_w: int, net_h: int) -> tuple[int, ...]:
    """Darknet's letterbox_image size and offsets, transcribed from image.c's arithmetic."""
    if net_w / src_w < net_h / src_h:
        new_w, new_h = net_w, (src_h * net_w) // src_w
    else:
        new_h, new_w = net_h, (src_w * net_h) // src_h
    return new_w, new_h, (net_w - new_w) // 2, (net_h - new_h) // 2


def reference_letterbox(img: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Letterbox through cv2.dnn.blobFromImage on the resized image and a grey canvas."""
    new_w, new_h, dx, dy = darknet_letterbox(img.shape[1], img.shape[0], net_w, net_h)
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    blob = cv2.dnn.blobFromImage(resized, 1 / 255, swapRB=True)
    canvas = np.full((3, net_h, net_w), 0.5, np.float32)
    canvas[:, dy:dy + new_h, dx:dx + new_w] = blob[0]
    return canvas


def test_darknet_letterbox_geometry() -> None:
    t = letterbox_transform(640, 480, 416, 416)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (0.65, 0.65, 0.0, 52.0)
    t = letterbox_transform(480, 640, 416, 256)
    assert (round(t.scale_x * 480), round(t.scale_y * 640), t.pad_x, t.pad_y) == (192, 256,
                                                                                  112, 0)
    t = letterbox_transform(640, 480, 416, 256, letterbox=False)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (416 / 640, 256 / 480, 0, 0)


@pytest.mark.parametrize('size', [(480, 640), (640, 480), (416, 416), (100, 37), (1, 1)])
@pytest.mark.parametrize('net', [(416, 416), (416, 256), (256, 608)])
def test_letterbox_matches_reference(size: tuple[int, int], net: tuple[int, int]) -> None:
    img = image(*size)
    batch, (transform,) = preprocess(img, *net)
    assert batch.shape == (1, 3, net[1], net[0]) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], reference_letterbox(img, *net), atol=1e-6)
    new_w, new_h, dx, dy = darknet_letterbox(size[1], size[0], *net)
    assert (transform.pad_x, transform.pad_y) == (dx, dy)
    assert (round(transform.scale_x * size[1]), round(transform.scale_y * size[0])) == (new_w,
                                                                                        new_h)


@pytest.mark.parametrize('net', [(416, 416), (416, 256)])
def test_plain_resize_matches_blob_from_image(net: tuple[int, int]) -> None:
    img = image(480, 640, seed=3)
    batch, (transform,) = preprocess(img, *net, letterbox=False)
    blob = cv2.dnn.blobFromImage(img, 1 / 255, net, swapRB=True, crop=False)
    np.testing.assert_allclose(batch, blob, atol=1e-6)
    assert (transform.pad_x, transform.pad_y) == (0, 0)


def test_grey_and_bgra_inputs() -> None:
    grey = image(300, 200, channels=1)
    expected, _ = preprocess(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 416, 416)
    np.testing.assert_array_equal(preprocess(grey, 416, 416)[0], expected)
    np.testing.assert_array_equal(preprocess(grey[:, :, None], 416, 416)[0], expected)
    bgr = image(300, 200, seed=1)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(preprocess(bgra, 416, 416)[0], preprocess(bgr, 416, 416)[0])


def test_mixed_batch_reuses_buffer_and_refreshes_padding() -> None:
    pre = Preprocessor(416, 256)
    wide, tall, small = image(100, 400, 1), image(400, 100, 2), image(256, 416, 3)
    batch, transforms = pre([wide, tall, small])
    assert batch.shape == (3, 3, 256, 416) and len(transforms) == 3
    for i, img in enumerate((wide, tall, small)):
        np.testing.assert_array_equal(batch[i], preprocess(img, 416, 256)[0][0])
    # Reversed order into the same buffer: stale pixels of other sizes must not survive.
    again, _ = pre([small, tall, wide])
    assert np.shares_memory(again, batch)
    for i, img in enumerate((small, tall, wide)):
        np.testing.assert_array_equal(again[i], preprocess(img, 416, 256)[0][0])
    # A [B, H, W, C] stack and a fixed batch size larger than the number of images.
    stack = np.stack([wide, wide])
    padded, transforms = pre(stack, batch_size=4)
    assert padded.shape[0] == 4 and len(transforms) == 2
    assert pre.buffer(4).shape == (4, 3, 256, 416)


def test_non_contiguous_image() -> None:
    img = image(200, 300)
    view = img[:, ::-1]
    np.testing.assert_array_equal(preprocess(view, 416, 416)[0],
                                  preprocess(view.copy(), 416, 416)[0])


def test_padding_value_is_darknet_grey() -> None:
    batch, _ = preprocess(np.zeros((100, 400, 3), np.uint8), 416, 416)
    assert PAD_VALUE == 0.5
    assert batch[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5]
    assert batch[0, :, 208, 208].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize('bad, match', [
    (np.zeros((0, 10, 3), np.uint8), r'images\[1\]: zero-sized'),
    (np.zeros((10, 0), np.uint8), r'images\[1\]: zero-sized'),
    (np.zeros((10, 10, 3), np.float32), r'images\[1\]: dtype float32, expected uint8'),
    (np.zeros((10, 10, 3), np.uint16), r'images\[1\]: dtype uint16'),
    (np.zeros((10, 10, 2), np.uint8), r'images\[1\]: shape'),
    (np.zeros((2, 10, 10, 3), np.uint8), r'images\[1\]: shape'),
    ([[1, 2]], r'images\[1\]: expected a numpy array'),
])
def test_bad_images_name_the_field(bad: object, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        Preprocessor(416, 416)([image(10, 10), bad])


def test_check_image_default_name() -> None:
    assert check_image(image(5, 7)) == (5, 7, 3)
    with pytest.raises(ImageError, match='^image:'):
        check_image(np.zeros((5, 5), bool))


net_sizes = st.integers(1, 32).map(lambda n: n * 32)
src_sizes = st.integers(1, 4000)
unit = st.floats(0, 1, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(net_sizes, net_sizes, src_sizes, src_sizes, st.booleans(), unit, unit, unit, unit)
def test_letterbox_round_trip(net_w: int, net_h: int, src_w: int, src_h: int, letterbox: bool,
                              a: float, b: float, c: float, d: float) -> None:
    t = letterbox_transform(src_w, src_h, net_w, net_h, letterbox)
    new_w, new_h = round(t.scale_x * src_w), round(t.scale_y * src_h)
    # The resized image lies inside the network input, centred as Darknet does.
    assert 1 <= new_w <= net_w and 1 <= new_h <= net_h
    assert t.pad_x == (net_w - new_w) // 2 and t.pad_y == (net_h - new_h) // 2
    if letterbox:
        assert new_w == net_w or new_h == net_h
    box = np.array([[min(a, b) * src_w, min(c, d) * src_h, max(a, b) * src_w,
                     max(c, d) * src_h]], np.float32)
    net_box = t.to_network(box)
    assert np.all(net_box[:, 0::2] >= t.pad_x - 1e-3)
    assert np.all(net_box[:, 0::2] <= t.pad_x + new_w + 1e-3 * net_w)
    back = t.to_source(net_box)
    tolerance = 1e-5 * max(src_w, src_h, net_w, net_h) + 1e-4
    np.testing.assert_allclose(back, box, atol=tolerance)
    # The letterboxed image's corners map to the source corners.
    corners = np.array([t.pad_x, t.pad_y, t.pad_x + new_w, t.pad_y + new_h], np.float32)
    np.testing.assert_allclose(t.to_source(corners, clip=False), [0, 0, src_w, src_h],
                               atol=tolerance)


@settings(max_examples=100, deadline=None)
@given(net_sizes, net_sizes, src_sizes, src_sizes,
       st.lists(st.floats(-2000, 2000, allow_nan=False, width=32), min_size=4, max_size=4))
def test_to_source_clips_to_image(net_w: int, net_h: int, src_w: int, src_h: int,
                                  coords: list[float]) -> None:
    t = letterbox_transform(src_w, src_h, net_w, net_h)
    out = t.to_source(np.array([coords], np.float32))
    assert out.dtype == np.float32
    assert np.all(out[:, 0::2] >= 0) and np.all(out[:, 0::2] <= src_w)
    assert np.all(out[:, 1::2] >= 0) and np.all(out[:, 1::2] <= src_h)


def test_transform_keeps_input_and_shape() -> None:
    t = LetterboxTransform(0.5, 0.5, 10.0, 0.0, 100, 100)
    boxes = np.zeros((2, 3, 4), np.float32)
    assert t.to_network(boxes).shape == (2, 3, 4)
    assert t.to_source(boxes).shape == (2, 3, 4)
    assert np.all(boxes == 0)


def test_padding_written_once_per_slot_geometry() -> None:
    pre = Preprocessor(416, 416)
    wide, tall = image(300, 400, 4), image(400, 300, 5)
    batch, _ = pre([wide])
    batch[0, :, 0, 0] = -1.0  # padding of slot 0; same geometry next time: left alone
    pre([wide])
    assert batch[0, 0, 0, 0] == -1.0
    pre([tall])  # geometry changed: the whole padding is rewritten
    np.testing.assert_array_equal(pre([tall])[0][0], preprocess(tall, 416, 416)[0][0])
    np.testing.assert_array_equal(pre([wide])[0][0], preprocess(wide, 416, 416)[0][0])
    # A caller's array is always padded in full.
    mine = np.full((3, 416, 416), -1.0, np.float32)
    pre.write(wide, mine)
    np.testing.assert_array_equal(mine, preprocess(wide, 416, 416)[0][0])
