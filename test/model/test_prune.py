"""Tests for darknet53_ros.model.prune and ``darknet53 prune``."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.errors import ConfigError
from darknet53_ros.model.cfg import load_cfg, parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.layers import Convolutional
from darknet53_ros.model.prune import apply_pruning, masked_weights, prunable_layers, prune
from darknet53_ros.model.weights import (
    random_weights,
    read_weights,
    serialize_weights,
    write_weights,
)

NET = parse_cfg(yolov3_cfg(classes=3, width=96, height=64, width_multiplier=0.5),
                source='half.cfg')
WEIGHTS = random_weights(NET, 5)
X = np.random.default_rng(1).uniform(size=(2, 3, 64, 96)).astype(np.float32)


def _run(network, weights):
    pytest.importorskip('onnx', reason='onnx not installed (the model is exported with it)')
    from darknet53_ros.model.onnx_export import export_onnx

    session = ort.InferenceSession(export_onnx(network, weights).SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    return session.run(['boxes', 'scores'], {'images': X})


def test_prunable_layers_keep_residual_structure():
    layers = prunable_layers(NET)
    for index in layers:
        layer = NET.layers[index]
        assert isinstance(layer, Convolutional) and isinstance(NET.layers[index + 1],
                                                               Convolutional)
    # Inner 1x1 conv of each of the 23 residual blocks, the stem, and per head scale the
    # four convs that feed only the next conv, plus the 3x3 before each head output.
    inner = [i for i in layers if i < 75 and NET.layers[i].size == 1]
    assert len(inner) == 23
    shortcut_inputs = {i - 1 for i, layer in enumerate(NET.layers)
                       if layer.kind == 'shortcut'}
    assert not shortcut_inputs & set(layers)
    assert 61 not in layers and 36 not in layers  # routed to the head


def test_ratio_zero_is_numerically_identical():
    result = prune(NET, WEIGHTS, 0.0)
    assert result.network.num_params == NET.num_params
    assert serialize_weights(result.network, result.weights) == serialize_weights(NET, WEIGHTS)
    ours, ref = _run(result.network, result.weights), _run(NET, WEIGHTS)
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize('method, ratio', [('l1', 0.3), ('l1', 0.5), ('bn-gamma', 0.5)])
def test_pruned_matches_masked_reference(method, ratio):
    result = prune(NET, WEIGHTS, ratio, method)
    assert result.network.num_params < NET.num_params * (1.0 - ratio / 2)
    ours = _run(result.network, result.weights)
    ref = _run(NET, masked_weights(NET, WEIGHTS, result.kept))
    assert np.allclose(ours[0], ref[0], atol=1e-3)
    assert np.allclose(ours[1], ref[1], atol=1e-5)
    # ... and the masked filters really mattered: the unmasked model differs.
    unmasked = _run(NET, WEIGHTS)
    assert not np.allclose(unmasked[1], ref[1], atol=1e-5)


def test_floors_and_channel_multiple():
    result = prune(NET, WEIGHTS, 0.95, 'l1', min_keep_fraction=0.25, channel_multiple=8)
    for index, keep in result.kept.items():
        filters = NET.layers[index].filters
        assert len(keep) >= 0.25 * filters
        assert len(keep) % 8 == 0 or len(keep) == filters


def test_errors():
    with pytest.raises(ConfigError, match='ratio'):
        prune(NET, WEIGHTS, 1.0)
    with pytest.raises(ConfigError, match='method'):
        prune(NET, WEIGHTS, 0.3, 'random')
    with pytest.raises(ConfigError, match='layer 4 cannot be pruned'):
        apply_pruning(NET, WEIGHTS, {4: np.arange(8)})


def test_cli_writes_a_valid_smaller_pair(tmp_path, capsys):
    cfg = tmp_path / 'm.cfg'
    cfg.write_text(yolov3_cfg(classes=3, width=96, height=64, width_multiplier=0.5))
    weights = tmp_path / 'm.weights'
    write_weights(weights, NET, WEIGHTS)
    out = tmp_path / 'pruned'
    assert main(['prune', '--cfg', str(cfg), '--weights', str(weights), '--ratio', '0.5',
                 '-o', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'parameters:' in text and 'BFLOPs' in text
    pruned = load_cfg(tmp_path / 'pruned.cfg')
    assert pruned.num_params < NET.num_params
    read_weights(tmp_path / 'pruned.weights', pruned)  # sizes agree exactly
    assert main(['info', str(tmp_path / 'pruned.cfg')]) == 0
    assert main(['prune', '--cfg', str(cfg), '--weights', str(weights), '--ratio', '1.5',
                 '-o', str(out)]) == 2
