"""Tests for the trade-off study (darknet53_ros.tools.study) on a tiny model and dataset."""
from __future__ import annotations

import json
import shutil

from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.weights import random_weights, write_weights

from ..conftest import optional_module, requires
from ..hypo import given, st

pytestmark = requires('pycocotools', 'onnx')
# tools.study exports models to ONNX: the module needs onnx (no rosdep key).
study = optional_module('darknet53_ros.tools.study')


def _point(latency: float, map50: float) -> study.StudyPoint:
    return study.StudyPoint(0.0, 416, 416, 'fp32', 1, 1.0, map50, map50 / 2, latency, latency, 1.0)


@given(st.lists(st.tuples(st.floats(1, 100), st.floats(0, 1)), min_size=1, max_size=20))
def test_pareto_front_properties(pairs):
    points = [_point(*p) for p in pairs]
    front = study.pareto_front(points)
    assert front
    for p in front:  # nothing beats a front point on both axes
        assert not any(q.latency_ms < p.latency_ms and q.map50 > p.map50 for q in points)
    for p in points:  # every point is matched or beaten by a front point
        assert any(f.latency_ms <= p.latency_ms and f.map50 >= p.map50 for f in front)
    assert [p.latency_ms for p in front] == sorted(p.latency_ms for p in front)


def test_markdown_table_ratios():
    base, fast = _point(20.0, 0.8), _point(10.0, 0.7)
    table = study.markdown_table([base, fast], base)
    assert '| 2.00x | -10.0 |' in table and '| 1.00x | +0.0 |' in table


def test_study_grid_on_tiny_model(tmp_path, caplog):
    from darknet53_ros.training.synthetic import write_dataset

    data = tmp_path / 'data'
    write_dataset(data, 6, seed=0, width=96, height=64, split_name='train')
    write_dataset(data, 3, seed=1, width=96, height=64, split_name='val')
    cfg = tmp_path / 'tiny.cfg'
    cfg.write_text(yolov3_cfg(classes=5, width=64, height=64, width_multiplier=0.25))
    network = load_cfg(cfg)
    weights = tmp_path / 'tiny.weights'
    write_weights(weights, network, random_weights(network, 3))
    tuned = []

    def finetune(cfg_path, weights_path, data_path, epochs, out, extra):
        tuned.append((cfg_path.name, epochs))
        shutil.copy(weights_path, out)
        return out

    out = tmp_path / 'study'
    points = study.run_study(cfg, weights, data, out, sizes=[(64, 64), (96, 64)],
                       prune_ratios=[0.0, 0.5], calib_count=4, iterations=2,
                       finetune_epochs=2, finetune=finetune)
    assert tuned == [('pruned50.cfg', 2)]
    assert len(points) == 2 * 2 * 2
    assert {(p.prune_ratio, p.width, p.height, p.precision) for p in points} == {
        (r, w, h, prec) for r in (0.0, 0.5) for w, h in ((64, 64), (96, 64))
        for prec in ('fp32', 'int8')}
    pruned = [p for p in points if p.prune_ratio == 0.5]
    assert all(p.params < points[0].params for p in pruned)
    assert all(0.0 <= p.map50 <= 1.0 and p.latency_ms > 0 for p in points)
    saved = json.loads((out / 'study.json').read_text())
    assert len(saved['points']) == 8 and saved['seconds'] > 0
    table = (out / 'study.md').read_text()
    assert table.count('\n') == 2 + 8 and '96x64' in table
    assert (out / 'pareto.png').read_bytes()[:4] == b'\x89PNG'
    assert all((out / p['model']).is_file() for p in saved['points'])

    # --retime: the same models timed again, evaluation figures untouched.
    from darknet53_ros.cli.main import main

    (out / 'pareto.png').unlink()
    assert main(['study', '--retime', '--iterations', '3', '-o', str(out)]) == 0
    again = json.loads((out / 'study.json').read_text())
    assert [p['map50'] for p in again['points']] == [p['map50'] for p in saved['points']]
    assert all(p['latency_ms'] > 0 for p in again['points'])
    assert again['timing_iterations'] == 3 and (out / 'pareto.png').is_file()
    (out / again['points'][0]['model']).unlink()
    assert main(['study', '--retime', '-o', str(out)]) != 0
    assert 'study models missing' in caplog.text
