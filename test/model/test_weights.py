"""Tests for darknet53_ros.model.weights: byte-exact round trips, header versions, bad files."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.errors import DarknetError
from darknet53_ros.model.cfg import parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.weights import (
    BN_EPSILON,
    DarknetWeights,
    conv_layers,
    expected_size,
    fold_batchnorm,
    parse_weights,
    random_weights,
    read_weights,
    serialize_weights,
    write_weights,
)

from ..hypo import given, settings, st

NET = parse_cfg(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125),
                source='small.cfg')


def _file_bytes(major: int, minor: int, seen: int, seed: int = 0) -> bytes:
    weights = random_weights(NET, seed)
    weights.major, weights.minor, weights.seen = major, minor, seen
    return serialize_weights(NET, weights)


@pytest.mark.parametrize('major, minor, header', [(0, 2, 20), (0, 1, 16), (1, 0, 20),
                                                  (0, 0, 16)])
def test_round_trip_is_byte_identical(tmp_path, major, minor, header):
    data = _file_bytes(major, minor, seen=123456)
    assert len(data) == expected_size(NET, header == 20)
    path = tmp_path / 'a.weights'
    path.write_bytes(data)
    weights = read_weights(path, NET)
    assert (weights.major, weights.minor, weights.seen) == (major, minor, 123456)
    write_weights(tmp_path / 'b.weights', NET, weights)
    assert (tmp_path / 'b.weights').read_bytes() == data


def test_seen_is_64_bit_from_version_0_2():
    big = 2**40 + 7
    assert parse_weights(_file_bytes(0, 2, big), NET).seen == big


def test_layer_order_is_bn_then_kernel():
    data = _file_bytes(0, 2, 0)
    floats = np.frombuffer(data, '<f4', offset=20)
    weights = parse_weights(data, NET)
    first = weights.layers[0]
    n = first.biases.size
    assert np.array_equal(floats[:n], first.biases)
    assert np.array_equal(floats[n:2 * n], first.scales)
    assert np.array_equal(floats[2 * n:3 * n], first.rolling_mean)
    assert np.array_equal(floats[3 * n:4 * n], first.rolling_var)
    assert np.array_equal(floats[4 * n:4 * n + first.weights.size], first.weights.ravel())
    head = weights.layers[NET.yolo_layers()[0].index - 1]
    assert not head.batch_normalize and head.weights.shape[0] == 21


def test_truncated_and_padded_files_give_both_sizes(tmp_path):
    data = _file_bytes(0, 2, 0)
    for bad, word in ((data[:-4], 'truncated'), (data + b'\0' * 4, 'too long')):
        path = tmp_path / 'bad.weights'
        path.write_bytes(bad)
        with pytest.raises(DarknetError) as info:
            read_weights(path, NET)
        message = str(info.value)
        assert word in message and str(len(data)) in message and str(len(bad)) in message
        assert str(path) in message


def test_garbage_header_and_missing_file(tmp_path):
    with pytest.raises(DarknetError, match='too short'):
        parse_weights(b'\1\2', NET)
    with pytest.raises(DarknetError, match='invalid header'):
        parse_weights(np.array([5000, 1, 0, 0, 0], '<i4').tobytes(), NET)
    with pytest.raises(DarknetError, match='not found'):
        read_weights(tmp_path / 'none.weights', NET)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_wrong_length_is_rejected(data):
    good = _file_bytes(0, 2, 0)
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(DarknetError):
        parse_weights(good[:cut], NET)


def test_write_rejects_mismatched_weights_and_keeps_old_file(tmp_path):
    path = tmp_path / 'a.weights'
    good = _file_bytes(0, 2, 0)
    path.write_bytes(good)
    weights = parse_weights(good, NET)
    weights.layers[0].biases = weights.layers[0].biases[:-1]
    with pytest.raises(DarknetError, match='layer 0'):
        write_weights(path, NET, weights)
    with pytest.raises(DarknetError, match='no weights'):
        write_weights(path, NET, DarknetWeights())
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ['a.weights']


def test_fold_batchnorm_matches_darknet_formula():
    conv = random_weights(NET, 3).layers[0]
    kernel, bias = fold_batchnorm(conv)
    x = np.random.default_rng(0).normal(size=conv.weights.shape[1:]).astype(np.float64)
    raw = np.tensordot(conv.weights.astype(np.float64), x, axes=3)
    expected = (conv.scales * (raw - conv.rolling_mean)
                / (np.sqrt(conv.rolling_var) + BN_EPSILON) + conv.biases)
    folded = np.tensordot(kernel.astype(np.float64), x, axes=3) + bias
    assert np.allclose(folded, expected, rtol=1e-5, atol=1e-5)
    conv.rolling_var[0] = -1.0
    with pytest.raises(DarknetError, match='rolling_var'):
        fold_batchnorm(conv)


def test_size_mismatch_says_which_model_the_file_fits():
    """Issue 13.11: "truncated" for another cfg's weights names the likelier cause."""
    other = parse_cfg(yolov3_cfg(classes=5, width=64, height=64, width_multiplier=0.125))
    data = serialize_weights(other, random_weights(other))
    with pytest.raises(DarknetError, match='fits this cfg with classes=5'):
        parse_weights(data, NET, 'five.weights')
    full = serialize_weights(NET, random_weights(NET))
    backbone = full[:20 + 4 * sum(layer.num_params for layer in conv_layers(NET)[:52])]
    with pytest.raises(DarknetError, match='is truncated.*layers 0-73 of this cfg: a backbone'):
        parse_weights(backbone, NET, 'darknet53.conv.74')
    with pytest.raises(DarknetError, match='is truncated.*cut off'):
        parse_weights(full[:-3], NET, 'cut.weights')
    with pytest.raises(DarknetError, match='is truncated.*belongs to a different cfg'):
        parse_weights(full[:-4], NET, 'other.weights')
