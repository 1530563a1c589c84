"""``darknet53 track`` and ``track-eval``: MOTChallenge sequences, det.txt, bags with ids."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.io.bags import BagReader
from darknet53_ros.io.mot import find_sequences, read_mot_file
from darknet53_ros.tools.track import read_detections
from darknet53_ros.training.synthetic.sequences import write_sequences

from ..conftest import requires

pytestmark = requires('cv2')


@pytest.fixture(scope='module')
def sequences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic sequences whose det/det.txt are their ground truth (score 0.9)."""
    root = tmp_path_factory.mktemp('mot')
    write_sequences(root, 2, 21, 30, 160, 128, objects=4)
    for info in find_sequences(root):
        (info.folder / 'det').mkdir()
        lines = (info.folder / 'gt' / 'gt.txt').read_text().splitlines()
        (info.folder / 'det' / 'det.txt').write_text(''.join(
            ','.join([f[0], '-1', *f[2:6], '0.9', f[7], '-1', '-1']) + '\n'
            for f in (line.split(',') for line in lines)))
    return root


def test_track_det_files_gives_ground_truth_ids(sequences: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'tracks'
    assert main(['track', '--source', str(sequences), '--detections', 'det', '--output',
                 str(out), '--no-progress', '--save-detections',
                 '--tracker', 'kalman_boxes=false']) == 0  # the detections' boxes: gt's
    assert 'tracked 60 frames' in capsys.readouterr().out
    for info in find_sequences(sequences):
        result = read_mot_file(out / f'{info.folder.name}.txt')
        gt = read_mot_file(info.folder / 'gt' / 'gt.txt')
        pairs: Counter = Counter()
        for frame, rows in result.items():
            assert rows.shape[1] == 10 and (rows[:, 7:] == -1).all()
            truth = {tuple(np.round(r[2:6], 2)): int(r[1]) for r in gt[frame]}
            for row in rows:  # each output box is a ground-truth box (x, y 1-based as gt)
                pairs[truth[tuple(np.round(row[2:6], 2))], int(row[1])] += 1
        # perfect detections: most boxes are tracked, and each track follows one identity
        # (mostly: an object entering where another just left may continue its track)
        tracked = sum(pairs.values())
        assert tracked >= 0.8 * sum(len(r) for r in gt.values())
        majority = sum(max(n for (g, t), n in pairs.items() if t == track)
                       for track in {t for _, t in pairs})
        assert majority >= 0.85 * tracked
        saved = read_detections(out / 'det' / f'{info.folder.name}.txt', info)
        assert sum(len(f.scores) for f in saved) == sum(len(r) for r in gt.values())


def test_track_eval_table(sequences: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip('trackeval')
    out = tmp_path / 'tracks'
    assert main(['track', '--source', str(sequences), '--detections', 'det', '--output',
                 str(out), '--no-progress']) == 0
    capsys.readouterr()
    assert main(['track-eval', '--gt', str(sequences), '--results', str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ['sequence', 'HOTA', 'DetA', 'AssA', 'IDF1', 'MOTA']
    combined = table[-1].split()
    assert combined[0] == 'COMBINED' and float(combined[4]) > 70.0  # IDF1, perfect detections


def test_track_eval_without_trackeval_is_one_line(sequences: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import sys
    monkeypatch.setitem(sys.modules, 'trackeval', None)
    assert main(['track-eval', '--gt', str(sequences), '--results', str(tmp_path)]) == 2
    assert 'trackeval' in caplog.text


def test_track_needs_a_model_for_images(sequences: Path, tmp_path: Path) -> None:
    assert main(['track', '--source', str(sequences), '--output', str(tmp_path / 'o')]) == 2
    assert main(['track', '--source', str(sequences), '--detections', 'det', '--output',
                 str(tmp_path / 'o'), '--tracker', 'max_lost=2']) == 2


@requires('rosbags', 'onnxruntime')
def test_track_bag_fills_detection_ids(planted_model: Path, tmp_path: Path) -> None:
    from .test_runner import _two_camera_bag

    bag = tmp_path / 'cams'
    _two_camera_bag(bag)
    out = tmp_path / 'out'
    assert main(['track', '--model', str(planted_model), '--source', str(bag), '--output',
                 str(out), '--no-progress', '--conf', '0.25']) == 0
    with BagReader(out / 'cams_detections') as reader:
        topics = ['/front/image_raw/detections', '/left/image_raw/detections']
        ids = {t: [] for t in topics}  # type: dict[str, list[str]]
        for topic, _, msg in reader.messages(topics):
            ids[topic] += [d.id for d in msg.detections]
    assert ids == {t: ['1', '1', '1'] for t in topics}
    front = read_mot_file(out / 'front_image_raw.txt')
    assert sorted(front) == [1, 2, 3] and {int(r[0, 1]) for r in front.values()} == {1}


def test_track_writes_kalman_filtered_boxes_by_default(sequences: Path, tmp_path: Path) -> None:
    from darknet53_ros.tracking.geometry import iou_matrix

    out = tmp_path / 'tracks'
    assert main(['track', '--source', str(sequences), '--detections', 'det', '--output',
                 str(out), '--no-progress']) == 0
    info = find_sequences(sequences)[0]
    result = read_mot_file(out / f'{info.folder.name}.txt')
    gt = read_mot_file(info.folder / 'gt' / 'gt.txt')
    moved = best = 0
    for frame, rows in result.items():
        truth = gt[frame][:, 2:6].copy()
        boxes = rows[:, 2:6].copy()
        truth[:, 2:] += truth[:, :2]
        boxes[:, 2:] += boxes[:, :2]
        overlap = iou_matrix(boxes, truth).max(axis=1)
        best += int((overlap > 0.7).sum())
        moved += int((overlap < 0.999).sum())
    rows_total = sum(len(r) for r in result.values())
    assert moved > 0  # filtered, not the detections' (= ground truth) boxes
    assert best >= 0.95 * rows_total  # ... and close to them
