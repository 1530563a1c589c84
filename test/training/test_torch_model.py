"""Tests of darknet53_ros.training.torch_model: layers, .weights round trip, ONNX parity,
fine-tuning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..conftest import optional_module, requires

pytestmark = requires('torch')
torch = optional_module('torch')
if torch is not None:  # else every test skips (pytestmark); no module-level skip
    from darknet53_ros.errors import DarknetError
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.weights import (
        DarknetWeights,
        random_weights,
        read_weights,
        write_weights,
    )
    from darknet53_ros.training.torch_model import DarknetModel
    from darknet53_ros.training.torch_weights import (
        build_model,
        load_darknet_weights,
        load_pretrained,
        save_darknet_weights,
        to_darknet_weights,
    )

# Every layer kind: BN and plain convs, grouped conv, shortcut with activation, route with
# groups, asymmetric maxpool (size 2, stride 1), upsample with scale, two yolo heads.
EVERY_LAYER_CFG = """
[net]
width=64
height=64
channels=3
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
groups=4
activation=mish

[shortcut]
from=-2
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[maxpool]
size=2
stride=1

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=swish

[maxpool]
size=2
stride=2

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=3,4,5
anchors=6,8, 10,12, 14,20, 20,24, 30,36, 40,48
classes=2
num=6
ignore_thresh=.6

[route]
layers=-4

[upsample]
stride=2
scale=0.5

[route]
layers=-1,3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=relu

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=logistic

[yolo]
mask=0,1,2
anchors=6,8, 10,12, 14,20, 20,24, 30,36, 40,48
classes=2
num=6
"""


def _network():  # type: ignore[no-untyped-def]
    return parse_cfg(EVERY_LAYER_CFG, 'every.cfg')


def _onnx_outputs(network, weights, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip('onnxruntime')
    from darknet53_ros.model.onnx_export import export_onnx

    model = export_onnx(network, weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    boxes, scores = session.run(['boxes', 'scores'], {'images': x})
    return boxes, scores


def test_shapes_follow_the_parser() -> None:
    network = _network()
    model = build_model(network)
    model.eval()
    heads = model(torch.rand(2, 3, 64, 64))
    yolos = network.yolo_layers()
    assert [tuple(h.shape[1:]) for h in heads] == [y.in_shape for y in yolos]
    assert [h.ignore_thresh for h in model.heads] == [0.6, 0.7]
    boxes, scores = model.predict(torch.rand(1, 3, 64, 64))
    n = sum(len(y.mask) * y.in_shape[1] * y.in_shape[2] for y in yolos)
    assert boxes.shape == (1, n, 4) and scores.shape == (1, n, 2)
    # Fully convolutional: another input size works (multi-scale training).
    assert model(torch.rand(1, 3, 96, 128))[0].shape[2:] == (12, 16)


def test_weights_round_trip_is_byte_identical(tmp_path: Path) -> None:
    network = _network()
    weights = random_weights(network, seed=3)
    weights.major, weights.minor, weights.revision, weights.seen = 0, 1, 0, 12345  # 32-bit seen
    src = tmp_path / 'a.weights'
    write_weights(src, network, weights)
    model = DarknetModel(network)
    load_darknet_weights(model, src)
    dst = tmp_path / 'b.weights'
    save_darknet_weights(model, dst)
    assert dst.read_bytes() == src.read_bytes()
    # A trained model round-trips too: parameters and BN statistics change, file is reread.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = sum(h.square().mean() for h in model(torch.rand(2, 3, 64, 64)))
    loss.backward()
    opt.step()
    save_darknet_weights(model, dst, seen=7)
    again = DarknetModel(network)
    loaded = load_darknet_weights(again, dst)
    assert loaded.seen == 7
    third = tmp_path / 'c.weights'
    save_darknet_weights(again, third)
    assert third.read_bytes() == dst.read_bytes()


def test_random_weights_match_onnx_export() -> None:
    network = _network()
    weights = random_weights(network, seed=1)
    model = build_model(network, weights).eval()
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        boxes, scores = model.predict(torch.from_numpy(x))
    ref_boxes, ref_scores = _onnx_outputs(network, weights, x)
    np.testing.assert_allclose(boxes.numpy(), ref_boxes, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-4, atol=1e-5)


def test_trained_model_saved_and_exported_matches_pytorch(tmp_path: Path) -> None:
    """Train a few steps (BN statistics move), save .weights, export ONNX, compare."""
    from darknet53_ros.training.loss import YoloLoss

    network = _network()
    model = build_model(network)
    loss_fn = YoloLoss(model.heads)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    targets = torch.tensor([[0, 1, 10, 12, 30, 40], [1, 0, 20, 20, 60, 50]], dtype=torch.float32)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss, _ = loss_fn(model(torch.rand(2, 3, 64, 64, generator=gen)), targets, (64, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / 'trained.weights'
    save_darknet_weights(model, path)
    weights = read_weights(path, network)
    conv = weights.layers[0]
    assert conv.rolling_var is not None and not np.allclose(conv.rolling_var, 1.0)
    x = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        boxes, scores = model.predict(torch.from_numpy(x))
    ref_boxes, ref_scores = _onnx_outputs(network, weights, x)
    np.testing.assert_allclose(boxes.numpy(), ref_boxes, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-4, atol=1e-5)


def test_official_tiny_cfg_matches_onnx(tiny_cfg_path: Path) -> None:
    from darknet53_ros.model.cfg import load_cfg

    network = load_cfg(tiny_cfg_path, width=128, height=96)
    weights = random_weights(network, seed=2)
    model = build_model(network, weights).eval()
    x = np.random.default_rng(2).random((1, 3, 96, 128), dtype=np.float32)
    with torch.no_grad():
        boxes, scores = model.predict(torch.from_numpy(x))
    ref_boxes, ref_scores = _onnx_outputs(network, weights, x)
    np.testing.assert_allclose(boxes.numpy(), ref_boxes, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-4, atol=1e-5)


def test_eval_batch_norm_uses_darknet_formula() -> None:
    from darknet53_ros.training.torch_model import DarknetBatchNorm2d

    bn = DarknetBatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1e-10, 0.25, 4.0]))
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.ones(1, 3, 1, 1)
    expected = [1.0 * 0.5 / (1e-5 + 1e-6) + 0.1, 2.0 * 2.0 / 0.500001 + 0.2,
                0.5 * -1.0 / 2.000001 + 0.3]
    np.testing.assert_allclose(bn(x).detach().flatten().numpy(), expected, rtol=1e-5)


def test_fine_tune_with_new_class_count(tmp_path: Path) -> None:
    source_net = parse_cfg(yolov3_cfg(80, 64, 64, width_multiplier=0.0625), 'coco.cfg')
    weights = random_weights(source_net, seed=4)
    path = tmp_path / 'coco.weights'
    write_weights(path, source_net, weights)
    target_net = parse_cfg(yolov3_cfg(3, 64, 64, width_multiplier=0.0625), 'mine.cfg')
    model = build_model(target_net)
    report = load_pretrained(model, path)
    heads = {y.index - 1 for y in target_net.yolo_layers()}
    assert report.mode == 'classes' and report.source_classes == 80
    assert set(report.reinitialised) == heads
    mine = to_darknet_weights(model)
    for index, conv in weights.layers.items():
        if index not in heads:
            np.testing.assert_array_equal(mine.layers[index].weights, conv.weights)
            np.testing.assert_array_equal(mine.layers[index].rolling_var, conv.rolling_var)
    # Exact match loads everything.
    exact = build_model(source_net)
    assert load_pretrained(exact, path).reinitialised == []


def test_fine_tune_from_backbone_prefix(tmp_path: Path) -> None:
    network = parse_cfg(yolov3_cfg(2, 64, 64, width_multiplier=0.0625), 'mine.cfg')
    weights = random_weights(network, seed=5)
    full = tmp_path / 'full.weights'
    write_weights(full, network, weights)
    # darknet53.conv.74-like: the first 52 convolutions (layers 0-74) only.
    from darknet53_ros.model.weights import conv_layers

    data = full.read_bytes()
    backbone = [layer for layer in conv_layers(network) if layer.index < 75]
    size = 20 + 4 * sum(layer.num_params for layer in backbone)
    prefix = tmp_path / 'backbone.weights'
    prefix.write_bytes(data[:size])
    model = build_model(network)
    report = load_pretrained(model, prefix)
    assert report.mode == 'prefix'
    assert report.loaded == [layer.index for layer in backbone]
    prefix.write_bytes(data[:size + 6])
    with pytest.raises(DarknetError, match='match neither'):
        load_pretrained(build_model(network), prefix)


def test_header_defaults() -> None:
    model = DarknetModel(_network())
    w = to_darknet_weights(model, seen=5)
    assert isinstance(w, DarknetWeights) and w.seen == 5 and w.seen_is_64bit
