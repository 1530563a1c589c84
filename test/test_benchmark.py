"""Tests for ``darknet53 bench`` (figures are printed, never asserted as timings)."""
from __future__ import annotations

import json

import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.tools.bench import Timing, time_call

from .conftest import requires
from .planted import export_planted


def test_timing_statistics():
    timing = Timing([1.0, 2.0, 3.0, 4.0, 100.0])
    assert timing.median == 3.0 and timing.stat(99) > 90
    calls = []
    timing, result = time_call(lambda: calls.append(1) or len(calls), 3, 2)
    assert len(timing.samples) == 3 and result == 5


@requires('matplotlib')
def test_bench_prints_stages_ratios_and_json(tmp_path, capsys):
    model = export_planted(tmp_path / 'planted.onnx')
    out = tmp_path / 'bench.json'
    plot = tmp_path / 'bench.png'
    assert main(['bench', '--model', str(model), '--sizes', 'none', '--batches', '1,2',
                 '--iterations', '2', '--warmup', '1', '--json', str(out), '--plot',
                 str(plot)]) == 0
    text = capsys.readouterr().out
    assert 'preprocess' in text and 'ratios' in text and 'bare session.run' in text
    rows = json.loads(out.read_text())
    assert [(r['batch'], r['precision'], r['width']) for r in rows] == [(1, 'fp32', 64),
                                                                      (2, 'fp32', 64)]
    assert set(rows[0]['stages_ms']) >= {'preprocess', 'infer', 'postprocess', 'bare_run'}
    assert 'baseline_ms' in rows[0] and rows[0]['fps'] > 0
    assert plot.read_bytes()[:4] == b'\x89PNG'


def test_bench_exports_cfg_at_sizes(tmp_path, capsys):
    from darknet53_ros.model.generator import yolov3_cfg

    cfg = tmp_path / 's.cfg'
    cfg.write_text(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125))
    assert main(['bench', '--cfg', str(cfg), '--sizes', '64,96x64', '--batches', '1',
                 '--iterations', '1', '--warmup', '0', '--no-baseline']) == 0
    text = capsys.readouterr().out
    assert '64x64' in text and '96x64' in text


@pytest.mark.parametrize('argv', [['--sizes', '100'], ['--batches', '0'],
                                  ['--sizes', 'none']])
def test_bench_bad_options(argv, tmp_path):
    assert main(['bench', '--cfg', str(tmp_path / 'x.cfg'), *argv]) == 2
