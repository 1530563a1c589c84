"""End-to-end tests of the offline runner (``darknet53 detect``) with a planted model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.errors import SourceError
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.bags import BagReader, SyntheticFrame, write_synthetic_bag
from darknet53_ros.tools.runner import source_kind

from .conftest import optional_module, requires
from .planted import SCORE, expected_box, export_planted, quadrant_image

pytestmark = requires('cv2')
cv2 = optional_module('cv2')


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return export_planted(tmp_path_factory.mktemp('planted') / 'planted.onnx')


def test_detector_finds_the_planted_box(model):
    with Detector.from_model(model) as detector:
        results = detector.detect_batch([quadrant_image(1, 0), quadrant_image(0, 1),
                                         np.zeros((128, 128, 3), np.uint8)])
    for det, (col, row) in zip(results[:2], [(1, 0), (0, 1)]):
        assert len(det) == 1 and det.labels == ['target']
        assert np.allclose(det.boxes[0], expected_box(col, row), atol=0.5)
        assert det.scores[0] == pytest.approx(SCORE, abs=1e-4)
    assert len(results[2]) == 0


def _two_camera_bag(path):
    frames = []
    for i in range(3):
        stamp = 1_700_000_000_000_000_000 + i * 100_000_000
        frames.append(SyntheticFrame('/front/image_raw', 'front_optical', stamp,
                                     quadrant_image(1, 0), 'bgr8'))
        frames.append(SyntheticFrame('/left/image_raw/compressed', 'left_optical', stamp + 7,
                                     quadrant_image(0, 1), 'png'))
    write_synthetic_bag(path, frames)
    return frames


def test_detect_on_two_camera_bag(model, tmp_path, capsys):
    bag = tmp_path / 'cams'
    sent = _two_camera_bag(bag)
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(model), '--source', str(bag), '--output', str(out),
                 '--batch', '2', '--no-progress']) == 0
    assert 'processed 6 frames' in capsys.readouterr().out
    expected = {'/front/image_raw/detections': ('front_optical', expected_box(1, 0)),
                '/left/image_raw/detections': ('left_optical', expected_box(0, 1))}
    stamps = {f.topic.replace('/compressed', '') + '/detections': [] for f in sent}
    for frame in sent:
        stamps[frame.topic.replace('/compressed', '') + '/detections'].append(frame.stamp_ns)
    with BagReader(out / 'cams_detections') as reader:
        topics = set(reader.topics)
        assert set(expected) <= topics
        from darknet53_ros.io.bags import annotated_topic
        assert annotated_topic('/front/image_raw') + '/compressed' in topics
        seen = {topic: [] for topic in expected}
        for topic, log_time, msg in reader.messages(list(expected)):
            frame_id, box = expected[topic]
            assert msg.header.frame_id == frame_id
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert log_time == stamp
            seen[topic].append(stamp)
            assert len(msg.detections) == 1
            det = msg.detections[0]
            assert det.header.frame_id == frame_id
            assert det.results[0].hypothesis.class_id == 'target'
            assert det.results[0].hypothesis.score == pytest.approx(SCORE, abs=1e-4)
            center = det.bbox.center.position
            assert (center.x, center.y) == pytest.approx(((box[0] + box[2]) / 2,
                                                          (box[1] + box[3]) / 2), abs=0.5)
            assert (det.bbox.size_x, det.bbox.size_y) == pytest.approx((64, 64), abs=0.5)
    assert seen == stamps
    results = json.loads((out / 'detections.json').read_text())
    assert len(results) == 6 and {r['category_id'] for r in results} == {1}


def test_folder_with_bad_files_is_counted_and_skipped(model, tmp_path, capsys):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), quadrant_image(1, 1))
    (folder / 'b.jpg').write_bytes(b'not a jpeg')
    (folder / 'c.png').write_bytes(b'')
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(model), '--source', str(folder), '--output',
                 str(out), '--no-progress']) == 0
    text = capsys.readouterr().out
    assert 'processed 1 frames' in text and 'skipped 2 frames' in text
    assert 'b.jpg' in text
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['failed'] == 2 and summary['processed'] == 1
    results = json.loads((out / 'detections.json').read_text())
    assert len(results) == 1
    assert results[0]['bbox'] == pytest.approx([64, 64, 64, 64], abs=0.5)
    assert (out / 'annotated' / 'a.jpg').exists()
    # Nothing readable at all: non-zero exit.
    (folder / 'a.png').unlink()
    assert main(['detect', '--model', str(model), '--source', str(folder), '--output',
                 str(tmp_path / 'none'), '--no-progress']) == 1


def test_video_source(model, tmp_path):
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (128, 128))
    if not writer.isOpened():
        pytest.skip('OpenCV cannot write mp4v video here')
    for i in range(4):
        writer.write(quadrant_image(i % 2, 0))
    writer.release()
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(model), '--source', str(video), '--output', str(out),
                 '--no-progress']) == 0
    results = json.loads((out / 'detections.json').read_text())
    assert len(results) == 4
    assert (out / 'clip_annotated.mp4').stat().st_size > 0
    assert not [p for p in out.iterdir() if '.tmp' in p.name]


def test_bag_with_bad_message_and_unknown_topic(model, tmp_path):
    bag = tmp_path / 'cams'
    frames = [SyntheticFrame('/cam/image_raw/compressed', 'cam', 1000 + i, quadrant_image(0, 0),
                             'png') for i in range(2)]
    write_synthetic_bag(bag, frames)
    from darknet53_ros.tools.runner import OfflineRunner

    with Detector.from_model(model) as detector:
        runner = OfflineRunner(detector, tmp_path / 'out', progress=False)
        with pytest.raises(SourceError, match='/nope'):
            runner.run(bag, ['/nope'])
    with pytest.raises(SourceError, match='no such file'):
        source_kind(tmp_path / 'missing.mcap')
    odd = tmp_path / 'data.bin'
    odd.write_bytes(b'1234')
    with pytest.raises(SourceError, match='not an image, video or rosbag2'):
        source_kind(odd)


def test_corrupt_compressed_frame_is_dropped(model, tmp_path, monkeypatch):
    from darknet53_ros.tools import runner as runner_module
    from darknet53_ros.tools.runner import OfflineRunner

    bag = tmp_path / 'cams'
    write_synthetic_bag(bag, [SyntheticFrame('/cam/image_raw/compressed', 'cam', 1000 + i,
                                             quadrant_image(0, 0), 'png') for i in range(3)])
    original = runner_module.iter_bag

    def corrupting(reader, topics):
        for k, frame in enumerate(original(reader, topics)):
            if k == 1:
                frame.image, frame.error = None, 'ImageError: corrupt data'
            yield frame
    monkeypatch.setattr(runner_module, 'iter_bag', corrupting)
    with Detector.from_model(model) as detector:
        summary = OfflineRunner(detector, tmp_path / 'out', progress=False).run(bag)
    assert summary.processed == 2 and summary.failures == [
        ('/cam/image_raw/compressed', 1, 'ImageError: corrupt data')]
