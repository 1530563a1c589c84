"""ONNX export parity against an independent implementation: OpenCV's Darknet importer.

Random but well-scaled weights written by the project are loaded by both OpenCV
(``cv2.dnn.readNetFromDarknet``) and our exporter; the raw head convolutions must agree to
1e-4 relative to the output scale, and our decoded ``boxes``/``scores`` must match a plain
NumPy decode (written here from the YOLOv3 paper's equations) of OpenCV's raw outputs.
"""
from __future__ import annotations

import json
from pathlib import Path
import re

import numpy as np
import pytest

from darknet53_ros.errors import DarknetError, ExportError
from darknet53_ros.model.cfg import load_cfg, parse_cfg
from darknet53_ros.model.weights import random_weights, write_weights

from ..conftest import optional_module, requires, shared_file

onnx = optional_module('onnx')
if onnx is not None:
    from darknet53_ros.model.onnx_export import export_onnx

cv2 = optional_module('cv2')
ort = optional_module('onnxruntime')
pytestmark = [requires('cv2', 'onnxruntime', 'onnx'), pytest.mark.skipif(
    cv2 is not None and not hasattr(cv2.dnn, 'readNetFromDarknet'),
    reason='OpenCV without the Darknet importer (OpenCV 5 removed it)')]

SIZES = [(320, 320), (416, 416), (608, 608), (608, 352)]


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    """cfg path and random .weights file per model name, written once per module."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            cfg = shared_file('cfg', f'{name}.cfg')
            path = tmp_path_factory.mktemp(name) / f'{name}.weights'
            net = load_cfg(cfg)
            write_weights(path, net, random_weights(net, seed=7))
            cache[name] = (cfg, path)
        return cache[name]
    return get


def _opencv_net(cfg_text: str, weights: Path, width: int, height: int, tmp: Path):
    text = re.sub(r'^width\s*=\s*\d+', f'width={width}', cfg_text, flags=re.M)
    text = re.sub(r'^height\s*=\s*\d+', f'height={height}', text, flags=re.M)
    cfg = tmp / f'opencv_{width}x{height}.cfg'
    cfg.write_text(text)
    return cv2.dnn.readNetFromDarknet(str(cfg), str(weights))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def reference_decode(raw: np.ndarray, anchors, classes: int, net_w: int, net_h: int,
                     scale_x_y: float = 1.0):
    """Decode one raw head [1, A*(5+C), H, W] with explicit loops over anchors."""
    num, _, h, w = raw.shape[0], None, raw.shape[2], raw.shape[3]
    assert num == 1
    out = raw[0].reshape(len(anchors), 5 + classes, h, w)
    boxes, scores = [], []
    for a, (aw, ah) in enumerate(anchors):
        t = out[a]
        gx, gy = np.meshgrid(np.arange(w), np.arange(h))
        cx = (_sigmoid(t[0]) * scale_x_y - (scale_x_y - 1) / 2 + gx) / w * net_w
        cy = (_sigmoid(t[1]) * scale_x_y - (scale_x_y - 1) / 2 + gy) / h * net_h
        bw = np.exp(t[2].astype(np.float64)) * aw
        bh = np.exp(t[3].astype(np.float64)) * ah
        box = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
        boxes.append(box.reshape(-1, 4))
        obj = _sigmoid(t[4])
        cls = _sigmoid(t[5:]) * obj[None]
        scores.append(cls.reshape(classes, -1).T)
    return np.concatenate(boxes), np.concatenate(scores)


def _check_parity(cfg_path: Path, weights_path: Path, width: int, height: int, tmp: Path,
                  batch: int = 1) -> None:
    from darknet53_ros.model.weights import read_weights

    net = load_cfg(cfg_path, width, height)
    weights = read_weights(weights_path, net)
    model = export_onnx(net, weights, raw=True)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    x = np.random.default_rng(width + height).uniform(size=(batch, 3, height, width))
    x = x.astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    ours = dict(zip(names, session.run(None, {'images': x})))
    cv_net = _opencv_net(cfg_path.read_text(), weights_path, width, height, tmp)
    cv_net.setInput(x)
    heads = net.yolo_layers()
    if not heads:
        ref = cv_net.forward()
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(ours['output'].reshape(ref.shape) - ref).max() <= 1e-4 * scale
        return
    raw_names = [f'head_{h.index - 1}' for h in heads]
    refs = cv_net.forward([f'conv_{h.index - 1}' for h in heads])
    ref_boxes, ref_scores = [], []
    for head, name, ref in zip(heads, raw_names, refs):
        assert ours[name].shape == ref.shape
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(ours[name] - ref).max() <= 1e-4 * scale, name
        b, s = reference_decode(ref[:1], head.masked_anchors, head.classes, width, height,
                                head.scale_x_y)
        ref_boxes.append(b)
        ref_scores.append(s)
    boxes, scores = np.concatenate(ref_boxes), np.concatenate(ref_scores)
    assert ours['boxes'].shape == (batch, boxes.shape[0], 4)
    assert np.allclose(ours['boxes'][0], boxes, rtol=1e-4, atol=1e-3)
    assert np.allclose(ours['scores'][0], scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', ['yolov3', 'yolov3-tiny', 'darknet53'])
@pytest.mark.parametrize('width, height', SIZES)
def test_parity_with_opencv(model_files, tmp_path, name, width, height):
    cfg, weights = model_files(name)
    _check_parity(cfg, weights, width, height, tmp_path)


CUSTOM_CFG = """[net]
width=96
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=logistic

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=relu

[maxpool]
size=5
stride=1

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=swish

[convolutional]
filters=16
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58
classes=3
num=3
scale_x_y=1.1

[route]
layers=-4

[upsample]
stride=2

[route]
layers=-1,3

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58
classes=3
num=3
"""


def test_custom_layers_parity_with_opencv(tmp_path):
    cfg = tmp_path / 'custom.cfg'
    cfg.write_text(CUSTOM_CFG)
    net = load_cfg(cfg)
    weights_path = tmp_path / 'custom.weights'
    write_weights(weights_path, net, random_weights(net, seed=3))
    _check_parity(cfg, weights_path, 96, 64, tmp_path, batch=2)


def test_contract_metadata_and_dynamic_batch(tmp_path):
    from darknet53_ros.model.generator import yolov3_cfg

    net = parse_cfg(yolov3_cfg(classes=2, width=128, height=96, width_multiplier=0.125),
                    source='small.cfg')
    path = tmp_path / 'm.onnx'
    model = export_onnx(net, random_weights(net, 1), path, names=['cone', 'ball'])
    loaded = onnx.load(str(path))
    assert onnx.defs.onnx_opset_version() >= 13 and loaded.opset_import[0].version == 13
    meta = {p.key: p.value for p in loaded.metadata_props}
    assert json.loads(meta['names']) == ['cone', 'ball'] and meta['classes'] == '2'
    assert (meta['input_width'], meta['input_height']) == ('128', '96')
    assert json.loads(meta['strides']) == [[32.0, 32.0], [16.0, 16.0], [8.0, 8.0]]
    assert json.loads(meta['anchors'])[0] == [[116, 90], [156, 198], [373, 326]]
    ops = {node.op_type for node in model.graph.node}
    assert ops <= {'Conv', 'LeakyRelu', 'Add', 'Concat', 'Resize', 'Reshape', 'Transpose',
                   'Slice', 'Sigmoid', 'Mul', 'Exp', 'Sub', 'Identity'}
    resize = next(n for n in model.graph.node if n.op_type == 'Resize')
    attrs = {a.name: a.s.decode() for a in resize.attribute}
    assert attrs == {'mode': 'nearest', 'coordinate_transformation_mode': 'asymmetric',
                     'nearest_mode': 'floor'}
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = np.random.default_rng(0).uniform(size=(3, 3, 96, 128)).astype(np.float32)
    boxes3, scores3 = session.run(['boxes', 'scores'], {'images': x})
    boxes1, scores1 = session.run(['boxes', 'scores'], {'images': x[1:2]})
    n = 3 * (4 * 3 + 8 * 6 + 16 * 12)
    assert boxes3.shape == (3, n, 4) and scores3.shape == (3, n, 2)
    assert np.allclose(boxes3[1], boxes1[0], atol=1e-4)
    assert np.allclose(scores3[1], scores1[0], atol=1e-6)
    assert np.all(boxes3[..., 2] >= boxes3[..., 0])


def test_export_errors(tmp_path):
    from darknet53_ros.model.generator import yolov3_cfg

    net = parse_cfg(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125))
    with pytest.raises(ExportError, match='class names'):
        export_onnx(net, random_weights(net), names=['only-one'])
    with pytest.raises(DarknetError, match='differ in height/width'):
        net.with_input_size(80, 64)
    odd = parse_cfg(CUSTOM_CFG, width=80, height=64)
    with pytest.raises(ExportError, match='multiple of 32'):
        export_onnx(odd, random_weights(odd))
    good = tmp_path / 'good.onnx'
    good.write_bytes(b'previous model')
    weights = random_weights(net)
    del weights.layers[0]
    with pytest.raises(ExportError, match='layer 0'):
        export_onnx(net, weights, good)
    assert good.read_bytes() == b'previous model'


def test_nan_variance_error_names_the_weights_file_and_layer(tmp_path):
    """Issue 13.11: the NaN-variance error named no file."""
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.weights import read_weights

    net = parse_cfg(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125))
    weights = random_weights(net)
    weights.layers[0].rolling_var[3] = np.nan
    path = tmp_path / 'bad.weights'
    write_weights(path, net, weights)
    with pytest.raises(DarknetError, match=r'bad\.weights: layer 0 \(cfg line \d+\): .*NaN'):
        export_onnx(net, read_weights(path, net))
