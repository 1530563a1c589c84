"""Tests for darknet53_ros.io.sources: bad files are counted frames, losses are reported."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from darknet53_ros.io.bags import TopicCounts, TopicInfo
from darknet53_ros.io.sources import folder_images, iter_bag, iter_video, read_image

from ..conftest import optional_module, requires

pytestmark = requires('cv2')
cv2 = optional_module('cv2')


def test_folder_listing_keeps_files_and_read_errors_are_frames(tmp_path):
    """Issue 13.4: a folder named x.jpg is not listed; reading one is a failed frame."""
    cv2.imwrite(str(tmp_path / 'a.jpg'), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'b.jpg').mkdir()
    assert folder_images(tmp_path) == [tmp_path / 'a.jpg']
    frame = read_image(tmp_path / 'b.jpg', 3)
    assert frame.image is None and frame.index == 3 and frame.error.startswith('cannot read')


def test_read_image_checks_the_pixel_limit_before_decoding(tmp_path):
    from ..toy import png_declaring

    (tmp_path / 'bomb.png').write_bytes(png_declaring(30000, 30000))
    frame = read_image(tmp_path / 'bomb.png', 0)
    assert frame.image is None and 'PNG header declares 30000x30000' in frame.error
    cv2.imwrite(str(tmp_path / 'ok.png'), np.zeros((8, 8, 3), np.uint8))
    assert read_image(tmp_path / 'ok.png', 0, max_pixels=63).image is None
    assert read_image(tmp_path / 'ok.png', 0, max_pixels=64).image is not None


def _video(path, frames=6):
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*'mp4v'), 10, (64, 48))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()


def test_video_shortfall_is_reported(tmp_path):
    """Issue 13.7: a corrupt mp4 reports the frames its container declares but lacks."""
    good = tmp_path / 'v.mp4'
    _video(good)
    assert [f.error for f in iter_video(good)] == [''] * 6
    data = good.read_bytes()
    start, end = data.index(b'mdat') + 4, data.index(b'moov') - 4
    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(data[:start] + bytes(end - start) + data[end:])
    frames = list(iter_video(corrupt))
    lost = [f for f in frames if f.image is None]
    assert len(frames) == 6 and lost
    assert all('video ends early' in f.error and 'of the 6 frames' in f.error for f in lost)


class _Reader:
    """A BagReader stand-in whose index declares more messages than it delivers."""

    path = 'bag'

    def __init__(self, msgs, declared, storage_error=''):
        self.msgs = msgs
        self.topics = {'/cam': TopicInfo('/cam', 'sensor_msgs/msg/Image', declared)}
        self.counts = {}
        self.storage_error = storage_error

    def messages(self, topics, strict=True):
        for msg in self.msgs:
            self.counts.setdefault('/cam', TopicCounts()).read += 1
            yield '/cam', 5, msg


def test_bag_messages_missing_from_the_storage_are_reported():
    img = SimpleNamespace(height=2, width=2, encoding='mono8', step=2, data=bytes(4))
    frames = list(iter_bag(_Reader([img, img], declared=3), ['/cam']))
    assert [f.image is not None for f in frames] == [True, True, False]
    assert frames[2].index == 2 and '1 of the 3 messages' in frames[2].error
    frames = list(iter_bag(_Reader([img], 3, 'rosbag2 bag: storage x.mcap is corrupt'),
                           ['/cam']))
    assert len(frames) == 3 and 'corrupt' in frames[2].error
