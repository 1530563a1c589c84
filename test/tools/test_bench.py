"""Tests for ``darknet53 bench`` (figures are printed, never asserted as timings)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from darknet53_ros.cli.main import main

from ..conftest import requires

try:  # --plot needs matplotlib (the eval extra); the figures are tested without it
    import matplotlib  # noqa: F401
    PLOTS = True
except ImportError:
    PLOTS = False


def _plot_args(plot) -> list:
    return ['--plot', str(plot)] if PLOTS else []



def _opencv_reads(model):
    """Whether OpenCV DNN loads ``model`` (apt's OpenCV 4.5/4.6 on Humble robots cannot)."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(model))
        net.setInput(np.zeros((1, 3, 64, 64), np.float32))
        net.forward(['boxes', 'scores'])
    except cv2.error:
        return False
    return True


def test_bench_prints_stages_ratios_and_json(planted_model, tmp_path, capsys):
    model = planted_model
    out = tmp_path / 'bench.json'
    plot = tmp_path / 'bench.png'
    assert main(['bench', '--model', str(model), '--sizes', 'none', '--batches', '1,2',
                 '--iterations', '2', '--warmup', '1', '--json', str(out),
                 *_plot_args(plot)]) == 0
    text = capsys.readouterr().out
    assert 'preprocess' in text and 'paired ratios' in text and 'bare session.run' in text
    assert 'load average' in text
    rows = json.loads(out.read_text())
    assert [(r['batch'], r['precision'], r['width']) for r in rows] == [(1, 'fp32', 64),
                                                                      (2, 'fp32', 64)]
    assert set(rows[0]['stages_ms']) >= {'preprocess', 'infer', 'postprocess', 'bare_run'}
    assert rows[0]['fps'] > 0
    if not _opencv_reads(model):  # the OpenCV DNN baseline needs OpenCV >= 4.7 for this model
        assert set(rows[0]['ratios']) == {'infer_vs_bare_run'}
        return
    assert 'baseline detections agree with ours: yes' in text and 'baseline_ms' in rows[0]
    assert set(rows[0]['ratios']) == {'preprocess', 'postprocess', 'pre+post', 'end_to_end',
                                      'infer_vs_bare_run'}
    assert rows[0]['baseline_detections_agree'] is True
    assert not PLOTS or plot.read_bytes()[:4] == b'\x89PNG'


@requires('onnx')
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


def test_compare_int8_is_paired(planted_model, tmp_path):
    import shutil

    from darknet53_ros.tools.bench import compare_int8

    other = tmp_path / 'copy.onnx'
    shutil.copy(planted_model, other)
    ratios = compare_int8([planted_model, other], batch=1, iterations=3, warmup=1)
    assert set(ratios) == {'copy.onnx'} and ratios['copy.onnx'].median > 0


@requires('rosbags')
def test_bench_cameras_table_plot_json(planted_model, tmp_path, capsys):
    out, plot = tmp_path / 'cams.json', tmp_path / 'cams.png'
    assert main(['bench', '--cameras', '1,2', '--model', str(planted_model), '--rate', '20',
                 '--duration', '0.5', '--json', str(out), *_plot_args(plot)]) == 0
    text = capsys.readouterr().out
    assert 'det/s/cam' in text and 'per-camera' in text
    rows = json.loads(out.read_text())
    assert [(r['cameras'], r['design']) for r in rows] == [
        (1, 'shared'), (1, 'per-camera'), (2, 'shared'), (2, 'per-camera')]
    assert all(r['delivered_hz'] > 0 and r['rss_mib'] > 0 for r in rows)
    assert not PLOTS or plot.read_bytes()[:4] == b'\x89PNG'


@pytest.mark.parametrize('argv', [['--cameras', 'x'], ['--cameras', '0']])
def test_bench_cameras_bad_counts(argv):
    assert main(['bench', *argv]) == 2
