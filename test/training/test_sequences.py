"""Synthetic tracking sequences: deterministic, MOTChallenge layout, identities that persist."""
from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.errors import ConfigError
from darknet53_ros.io.mot import find_sequences, read_mot_file
from darknet53_ros.training.synthetic.sequences import (
    FRAME_RATES,
    render_sequence,
    sequence_name,
    write_sequences,
)


def _frames(seed: int, index: int, frames: int = 12, **kw: object) -> list:
    rate, stream = render_sequence(seed, index, frames, 160, 128, **kw)  # type: ignore[arg-type]
    return [rate] + list(stream)


def test_sequences_are_deterministic_and_differ_by_seed() -> None:
    first, again, other = _frames(3, 1), _frames(3, 1), _frames(4, 1)
    assert first[0] in FRAME_RATES
    for (a_img, a_gt), (b_img, b_gt) in zip(first[1:], again[1:]):
        assert np.array_equal(a_img, b_img) and a_gt == b_gt
    assert not np.array_equal(first[1][0], other[1][0])


def test_identities_move_plausibly() -> None:
    """Boxes of one id move by less than their size between frames at 30 fps."""
    frames = _frames(11, 0, 30, objects=5, fps=30.0)[1:]
    last: dict[int, tuple] = {}
    moves = []
    for _, truth in frames:
        for ident, cls, x1, y1, x2, y2, vis in truth:
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 128 and 0.1 <= vis <= 1.0
            assert 0 <= cls < 5
            if ident in last:
                px1, py1, px2, py2 = last[ident]
                moves.append(abs((x1 + x2) - (px1 + px2)) / 2 / max(x2 - x1, px2 - px1))
            last[ident] = (x1, y1, x2, y2)
    assert moves and float(np.median(moves)) < 0.5


def test_write_layout_and_cli(tmp_path: Path) -> None:
    assert main(['synth', '--sequences', '2', '--frames', '6', '--seed', '7', '--size',
                 '96x64', '--out', str(tmp_path), '--no-progress']) == 0
    infos = find_sequences(tmp_path)
    assert [i.name for i in infos] == [sequence_name(7, 0), sequence_name(7, 1)]
    info = infos[0]
    assert (info.length, info.width, info.height) == (6, 96, 64)
    assert info.image_path(6).is_file() and not info.image_path(7).exists()
    ini = configparser.ConfigParser()
    ini.read(info.folder / 'seqinfo.ini')
    assert ini['Sequence']['imDir'] == 'img1' and ini['Sequence']['seqLength'] == '6'
    gt = read_mot_file(info.folder / 'gt' / 'gt.txt')
    rows = np.concatenate(list(gt.values()))
    assert rows.shape[1] == 9 and set(rows[:, 6]) == {1.0} and rows[:, 0].min() >= 1
    assert set(rows[:, 7]) <= {1.0, 2.0, 3.0, 4.0, 5.0} and (rows[:, 2:4] >= 1).all()
    seqmap = (tmp_path / 'seqmaps' / 'SYNTH-all.txt').read_text().split()
    assert seqmap == ['name', sequence_name(7, 0), sequence_name(7, 1)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        render_sequence(0, 0, 0)
    with pytest.raises(ConfigError):
        render_sequence(0, 0, 5, fps=1000.0)
    with pytest.raises(ConfigError):
        write_sequences('unused', 0, 0, 5)
    assert main(['synth', '--sequences', '1', '--train', '3', '--out', 'x']) == 2


def test_trackeval_reads_sequences_unchanged(tmp_path: Path) -> None:
    """TrackEval's own MotChallenge2DBox, configured as its README says (seqmap in
    GT_FOLDER/seqmaps), reads the ground truth and scores it against itself as perfect."""
    trackeval = pytest.importorskip('trackeval')
    write_sequences(tmp_path / 'gt', 2, 5, 8, 96, 64, objects=3)
    results = tmp_path / 'trackers' / 'copy'
    results.mkdir(parents=True)
    for seq in find_sequences(tmp_path / 'gt'):
        lines = (seq.folder / 'gt' / 'gt.txt').read_text().splitlines()
        (results / f'{seq.name}.txt').write_text(''.join(
            ','.join(line.split(',')[:6]) + ',1,-1,-1,-1\n' for line in lines))
    dataset = trackeval.datasets.MotChallenge2DBox({
        'GT_FOLDER': str(tmp_path / 'gt'), 'TRACKERS_FOLDER': str(tmp_path / 'trackers'),
        'TRACKER_SUB_FOLDER': '', 'SKIP_SPLIT_FOL': True, 'BENCHMARK': 'SYNTH',
        'SPLIT_TO_EVAL': 'all', 'DO_PREPROC': False, 'PRINT_CONFIG': False})
    evaluator = trackeval.Evaluator({'USE_PARALLEL': False, 'PRINT_CONFIG': False,
                                     'PRINT_RESULTS': False, 'OUTPUT_SUMMARY': False,
                                     'OUTPUT_DETAILED': False, 'PLOT_CURVES': False})
    output, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA()])
    combined = output['MotChallenge2DBox']['copy']['COMBINED_SEQ']['pedestrian']
    assert float(np.mean(combined['HOTA']['HOTA'])) == pytest.approx(1.0)
