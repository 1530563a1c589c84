"""Tests for darknet53_ros.optimize.calibration: calibration image sources (folder, video,
rosbag2, one image file) and the disjoint calibration/held-out split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.errors import ImageError, SourceError
from darknet53_ros.optimize.calibration import (
    CalibrationImage,
    bag_images,
    calibration_images,
    folder_images,
    image_digest,
    image_file,
    source_kind,
    split_images,
    video_frames,
)

from ..conftest import optional_module, requires
from ..toy import smooth_images

pytestmark = requires('cv2')
cv2 = optional_module('cv2')


def test_folder_source_and_split(tmp_path: Path) -> None:
    images = smooth_images(4)
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / f'{i}.png'), img)
    cv2.imwrite(str(tmp_path / 'dup.png'), images[0])
    (tmp_path / 'broken.jpg').write_bytes(b'not an image')
    (tmp_path / 'notes.txt').write_text('ignored')
    items = list(folder_images(tmp_path))
    assert len(items) == 5 and all(i.image.dtype == np.uint8 for i in items)
    assert source_kind(tmp_path) == 'folder'
    calib, held = split_images(calibration_images(tmp_path), count=10, held_out=1)
    calib = list(calib)
    assert len(held) == 1 and len(calib) == 3  # duplicate skipped
    assert not {image_digest(i.image) for i in calib} & {image_digest(held[0].image)}
    with pytest.raises(SourceError):
        list(folder_images(tmp_path / 'missing'))


def test_video_source(tmp_path: Path) -> None:
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip('OpenCV has no MJPG writer here')
    for img in smooth_images(6):
        writer.write(img)
    writer.release()
    frames = list(video_frames(path, step=2))
    assert [f.key.rsplit('=', 1)[1] for f in frames] == ['0', '2', '4']
    assert frames[0].image.shape == (48, 64, 3)
    assert source_kind(path) == 'video'


def test_bag_source(tmp_path: Path) -> None:
    pytest.importorskip('rosbags')
    from darknet53_ros.io.bag_writer import BagWriter
    from darknet53_ros.io.messages import MessageTypes
    from darknet53_ros.io.rosbags_compat import writes_mcap

    types = MessageTypes.from_rosbags('humble')
    store = types.typestore
    Image = store.types['sensor_msgs/msg/Image']
    Compressed = store.types['sensor_msgs/msg/CompressedImage']
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    img = smooth_images(1)[0]
    header = Header(stamp=Time(sec=0, nanosec=0), frame_id='cam')

    def raw(encoding: str, pixels: np.ndarray, pad: int = 0) -> object:
        h, w = pixels.shape[:2]
        rows = pixels.reshape(h, -1)
        data = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1).ravel()
        return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                     step=rows.shape[1] + pad, data=data)

    ok, jpg = cv2.imencode('.png', img)
    msgs = [raw('bgr8', img, pad=4), raw('rgb8', img[..., ::-1].copy()),
            raw('mono8', img[..., 1].copy()), raw('32FC1', img)]
    bag = tmp_path / 'bag'
    with BagWriter(bag, types=types, version=9 if writes_mcap() else 8) as writer:
        for i, msg in enumerate(msgs):
            writer.write('/cam/image', i, msg)
        for i, data in enumerate([jpg.ravel(), np.frombuffer(b'garbage', np.uint8)]):
            writer.write('/cam/compressed', 10 + i,
                         Compressed(header=header, format='png', data=data))
    assert source_kind(bag) == 'bag'
    frames = list(bag_images(bag, '/cam/image'))
    assert len(frames) == 3  # the 32FC1 frame is dropped
    np.testing.assert_array_equal(frames[0].image, img)
    np.testing.assert_array_equal(frames[1].image, img)
    np.testing.assert_array_equal(frames[2].image[..., 0], img[..., 1])
    compressed = list(calibration_images(bag, topic='/cam/compressed'))
    assert len(compressed) == 1
    np.testing.assert_array_equal(compressed[0].image, img)
    with pytest.raises(SourceError, match='image topics'):
        list(bag_images(bag))
    with pytest.raises(SourceError, match='no image topic'):
        list(bag_images(bag, '/other'))


def test_calibration_image_key() -> None:
    assert CalibrationImage('k', np.zeros((1, 1, 3), np.uint8)).key == 'k'


def test_single_image_file_source(tmp_path: Path) -> None:
    img = smooth_images(1)[0]
    path = tmp_path / 'one.png'
    cv2.imwrite(str(path), img)
    (item,) = list(calibration_images(path))
    assert item.key == str(path) and image_digest(item.image) == image_digest(img)
    with pytest.raises(ImageError, match='not found'):
        image_file(tmp_path / 'missing.png')
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    with pytest.raises(ImageError, match='unreadable'):
        image_file(tmp_path / 'bad.png')
