"""End-to-end tests of the offline runner (``darknet53 detect``) with a planted model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.errors import SourceError
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.bag_writer import SyntheticFrame, write_synthetic_bag
from darknet53_ros.io.bags import BagReader
from darknet53_ros.io.sources import iter_images, source_kind

from ..conftest import optional_module, requires
from ..planted import SCORE, expected_box, quadrant_image

pytestmark = requires('cv2')
cv2 = optional_module('cv2')


def test_detector_finds_the_planted_box(planted_model):
    with Detector.from_model(planted_model) as detector:
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


@requires('rosbags')
def test_detect_on_two_camera_bag(planted_model, tmp_path, capsys):
    bag = tmp_path / 'cams'
    sent = _two_camera_bag(bag)
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(planted_model),
                 '--source', str(bag), '--output', str(out),
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


def test_folder_with_bad_files_is_counted_and_skipped(planted_model, tmp_path, capsys):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), quadrant_image(1, 1))
    (folder / 'b.jpg').write_bytes(b'not a jpeg')
    (folder / 'c.png').write_bytes(b'')
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(planted_model),
                 '--source', str(folder), '--output',
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
    assert main(['detect', '--model', str(planted_model),
                 '--source', str(folder), '--output',
                 str(tmp_path / 'none'), '--no-progress']) == 1


def _write_clip(video):
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10.0, (128, 128))
    if not writer.isOpened():
        pytest.skip('OpenCV cannot write mp4v video here')
    for i in range(4):
        writer.write(quadrant_image(i % 2, 0))
    writer.release()


def test_video_source(planted_model, tmp_path):
    video = tmp_path / 'clip.mp4'
    _write_clip(video)
    out = tmp_path / 'out'
    assert main(['detect', '--model', str(planted_model),
                 '--source', str(video), '--output', str(out),
                 '--no-progress']) == 0
    results = json.loads((out / 'detections.json').read_text())
    assert len(results) == 4
    assert (out / 'clip_annotated.mp4').stat().st_size > 0
    assert not [p for p in out.iterdir() if '.tmp' in p.name]


@requires('rosbags')
def test_bag_with_bad_message_and_unknown_topic(planted_model, tmp_path):
    bag = tmp_path / 'cams'
    frames = [SyntheticFrame('/cam/image_raw/compressed', 'cam', 1000 + i, quadrant_image(0, 0),
                             'png') for i in range(2)]
    write_synthetic_bag(bag, frames)
    from darknet53_ros.tools.runner import OfflineRunner

    with Detector.from_model(planted_model) as detector:
        runner = OfflineRunner(detector, tmp_path / 'out', progress=False)
        with pytest.raises(SourceError, match='/nope'):
            runner.run(bag, ['/nope'])
    with pytest.raises(SourceError, match='no such file'):
        source_kind(tmp_path / 'missing.mcap')
    odd = tmp_path / 'data.bin'
    odd.write_bytes(b'1234')
    with pytest.raises(SourceError, match='not an image, video or rosbag2'):
        source_kind(odd)


@requires('rosbags')
def test_corrupt_compressed_frame_is_dropped(planted_model, tmp_path, monkeypatch):
    from darknet53_ros.tools import runner as runner_module
    from darknet53_ros.tools.runner import OfflineRunner

    bag = tmp_path / 'cams'
    write_synthetic_bag(bag, [SyntheticFrame('/cam/image_raw/compressed', 'cam', 1000 + i,
                                             quadrant_image(0, 0), 'png') for i in range(3)])
    original = runner_module.iter_bag

    def corrupting(reader, topics, *args):
        for k, frame in enumerate(original(reader, topics, *args)):
            if k == 1:
                frame.image, frame.error = None, 'ImageError: corrupt data'
            yield frame
    monkeypatch.setattr(runner_module, 'iter_bag', corrupting)
    with Detector.from_model(planted_model) as detector:
        summary = OfflineRunner(detector, tmp_path / 'out', progress=False).run(bag)
    assert summary.processed == 2 and summary.failures == [
        ('/cam/image_raw/compressed', 1, 'ImageError: corrupt data')]


def _detect(model, source, out, *extra):
    return main(['detect', '--model', str(model), '--source', str(source), '--output',
                 str(out), '--no-progress', *extra])


def test_folder_named_like_an_image_and_same_stems(planted_model, tmp_path, capsys):
    """Issues 13.4 and 13.5: a folder x.jpg does not abort the run; x.jpg and x.png both get
    an annotated image."""
    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'x.jpg'), quadrant_image(1, 1))
    cv2.imwrite(str(folder / 'x.png'), quadrant_image(0, 1))
    (folder / 'dir.jpg').mkdir()
    out = tmp_path / 'out'
    assert _detect(planted_model, folder, out) == 0
    assert sorted(p.name for p in (out / 'annotated').iterdir()) == ['x.jpg', 'x_png.jpg']
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['processed'] == 2 and summary['failed'] == 0
    assert next(iter_images([folder / 'dir.jpg'])).error.startswith('cannot read file')


def test_existing_output_needs_overwrite_and_is_replaced_whole(planted_model, tmp_path,
                                                               caplog):
    """Issue 13.6: earlier results were silently mixed with new ones."""
    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), quadrant_image(1, 1))
    cv2.imwrite(str(folder / 'b.png'), quadrant_image(0, 1))
    out = tmp_path / 'out'
    assert _detect(planted_model, folder, out) == 0
    (folder / 'b.png').unlink()
    before = (out / 'detections.json').read_bytes()
    assert _detect(planted_model, folder, out) == 2
    assert '--overwrite' in caplog.records[-1].getMessage()
    assert (out / 'detections.json').read_bytes() == before
    # leftovers of killed runs: beside the output and inside it
    (tmp_path / '.out.999999999.abc.partial').mkdir()
    (out / '.detections.json.x1y2.tmp').write_bytes(b'partial')
    assert _detect(planted_model, folder, out, '--overwrite') == 0
    assert sorted(p.name for p in (out / 'annotated').iterdir()) == ['a.jpg']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
    assert not [p for p in out.iterdir() if p.name.startswith('.')]
    assert _detect(planted_model, folder, tmp_path, '--overwrite') == 2
    assert 'holds the source' in caplog.records[-1].getMessage()


def test_incomplete_annotated_video_is_not_kept(planted_model, tmp_path, monkeypatch, caplog):
    """Issue 13.3: cv2.VideoWriter.write fails silently on a full disk; the sink renamed the
    partial file anyway."""
    video = tmp_path / 'clip.mp4'
    _write_clip(video)
    real = cv2.VideoWriter

    class Losing:
        """Drops every second frame, as a full disk does, without saying so."""

        def __init__(self, *args):
            self.inner, self.n = real(*args), 0

        def isOpened(self):  # noqa: N802 - the OpenCV name
            return self.inner.isOpened()

        def write(self, image):
            self.n += 1
            if self.n % 2:
                self.inner.write(image)

        def release(self):
            self.inner.release()

    Losing.fourcc = real.fourcc
    monkeypatch.setattr(cv2, 'VideoWriter', Losing)
    out = tmp_path / 'out'
    assert _detect(planted_model, video, out) == 2
    assert 'holds 2 of the 4 frames written' in caplog.records[-1].getMessage()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
