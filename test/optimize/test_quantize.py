"""Tests for INT8 Q/DQ quantisation (darknet53_ros.optimize.quantize, .qdq, .calibration_stats)
and darknet53_ros.optimize.calibration."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ModelError

from ..conftest import optional_module, requires

pytestmark = requires('onnx', 'onnxruntime', 'cv2')
onnx = optional_module('onnx')
ort = optional_module('onnxruntime')
cv2 = optional_module('cv2')
if onnx is not None:
    from onnx import TensorProto, numpy_helper

from darknet53_ros.optimize import qdq  # noqa: E402
from darknet53_ros.optimize import quantize as q  # noqa: E402

from ..toy import SIZE, smooth_images, toy_model  # noqa: E402


@pytest.fixture(scope='module')
def toy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('toy') / 'toy.onnx'
    onnx.save(toy_model(), str(path))
    return path


@pytest.fixture(scope='module')
def quantized(toy_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp('q') / 'toy_int8.onnx'
    images = smooth_images(10)
    report = q.quantize_model(toy_path, images[:8], out, method='entropy',
                              held_out=images[8:], report_path=out.with_suffix('.json'),
                              progress=False)
    return out, report


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=['CPUExecutionProvider'])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {'images': x})))


# --------------------------------------------------------------------------------------------
# Placement and structure


def test_default_keep_fp_is_first_and_head_convs() -> None:
    model = toy_model()
    assert qdq.first_convs(model) == ['conv_0']
    assert qdq.head_convs(model) == ['conv_5', 'conv_10']
    assert qdq.default_keep_fp(model) == ['conv_0', 'conv_5', 'conv_10']


def test_plan_quantizes_residual_add_inputs_together() -> None:
    plan = qdq.plan_quantization(toy_model(), keep_fp=['conv_0', 'conv_5', 'conv_1*'])
    assert plan.kept == ['conv_0', 'conv_1', 'conv_1_leaky', 'conv_5', 'conv_10']
    assert 'conv_1' not in plan.convs and 'conv_2' in plan.convs
    readers = {t: set(r) for t, r in plan.activations.items()}
    assert 'shortcut_4' in readers['conv_1.a'] and 'shortcut_4' in readers['conv_3.a']
    assert not plan.conv_outputs
    with pytest.raises(ConfigError, match='nomatch'):
        qdq.plan_quantization(toy_model(), keep_fp=['nomatch'])


@pytest.mark.parametrize('target', ['tensorrt', 'onnxruntime'])
def test_yolo_decode_is_never_quantised(tmp_path: Path, target: str) -> None:
    """The decode's Adds (box centre +- half size, in pixels) are not residual connections.

    Quantising them clipped box sizes to the calibrated range and collapsed a trained model's
    mAP@0.5 from 0.78 to 0.08; only the backbone's shortcut Adds get Q/DQ inputs.
    """
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import random_weights

    network = parse_cfg(yolov3_cfg(classes=3, width=64, height=64, width_multiplier=0.125))
    path = tmp_path / 'yolov3.onnx'
    export_onnx(network, random_weights(network, seed=0), path)
    model = onnx.load(str(path))
    decode = qdq.decode_nodes(model)
    assert {n.op_type for n in model.graph.node if n.name in decode} >= {'Add', 'Exp'}
    assert not decode & {n.name for n in model.graph.node if n.op_type == 'Conv'}
    for keep in (qdq.default_keep_fp(model), []):
        plan = qdq.plan_quantization(model, keep, target=target)
        readers = {r for rs in plan.activations.values() for r in rs}
        assert not readers & decode
        assert sum(r.startswith('shortcut_') for r in readers) == 23  # Darknet-53's residuals
        out = tmp_path / f'int8-{len(keep)}.onnx'
        q.quantize_model(path, smooth_images(2, shape=(48, 64)), out, progress=False,
                         target=target, keep_fp=keep)
        quantized = onnx.load(str(out))
        producers = {o: n for n in quantized.graph.node for o in n.output}
        for node in quantized.graph.node:
            if node.name in decode:
                assert all(producers.get(i) is None or producers[i].op_type != 'DequantizeLinear'
                           for i in node.input), node.name


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == name)


def test_qdq_structure(quantized: tuple) -> None:
    path, report = quantized
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')) >= 13
    producers = {o: n for n in model.graph.node for o in n.output}
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq_nodes = [n for n in model.graph.node
                 if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert qdq_nodes
    for node in qdq_nodes:
        zp = _init(model, node.input[2])
        assert zp.data_type == TensorProto.INT8, node.name
        assert not np.any(numpy_helper.to_array(zp)), node.name
    kept = {'conv_0', 'conv_5', 'conv_10'}
    for node in model.graph.node:
        if node.op_type != 'Conv':
            continue
        parents = [producers.get(name) for name in node.input]
        if node.name in kept:
            assert all(p is None or p.op_type != 'DequantizeLinear' for p in parents)
            continue
        x_dq, w_dq = parents[0], parents[1]
        assert x_dq.op_type == 'DequantizeLinear' and w_dq.op_type == 'DequantizeLinear'
        axis = {a.name: a.i for a in w_dq.attribute}
        assert axis.get('axis') == 0
        w_q = producers[w_dq.input[0]]  # Q/DQ pair on the FP32 weight (TensorRT 8.5 safe)
        assert w_q.op_type == 'QuantizeLinear'
        out_channels = weights[w_q.input[0]].shape[0]
        assert weights[w_dq.input[1]].shape == (out_channels,)
        assert node.input[2] in weights  # FP32 bias: TensorRT rejects int32 DQ inputs
    add = next(n for n in model.graph.node if n.op_type == 'Add')
    assert all(producers[i].op_type == 'DequantizeLinear' for i in add.input)
    for node in model.graph.node:  # Concat / Resize are left for TensorRT to fuse
        if node.op_type in ('Concat', 'Resize'):
            assert all(producers.get(i) is None or producers[i].op_type != 'DequantizeLinear'
                       for i in node.input if i)
    summary = qdq.qdq_summary(model)
    assert not summary['problems'] and set(summary['float_convs']) == kept
    assert report.data['kept_fp'] == ['conv_0', 'conv_5', 'conv_10']


def test_int8_outputs_close_to_fp32_and_match_onnx_reference(quantized: tuple,
                                                             toy_path: Path) -> None:
    from onnx.reference import ReferenceEvaluator

    path, _ = quantized
    held = smooth_images(3, seed=99)
    x = np.stack([q.letterbox_one(img, SIZE, SIZE) for img in held])
    fp32, int8 = _run(toy_path, x), _run(path, x)
    assert np.abs(fp32['scores'] - int8['scores']).max() < 0.05
    assert np.abs(fp32['boxes'] - int8['boxes']).max() < 0.05 * SIZE
    model = onnx.load(str(path))
    for opset in model.opset_import:  # onnx.reference implements Q/DQ from opset 19 on;
        opset.version = 19  # int8 per-tensor/per-axis semantics are unchanged since 13
    # One image: onnx's reference Conv is pure Python loops before onnx 1.18 (3.5 min for
    # three images on Python 3.8's onnx 1.17); the Q/DQ arithmetic checked is the same.
    ref = ReferenceEvaluator(model).run(None, {'images': x[:1]})
    np.testing.assert_allclose(ref[1], int8['scores'][:1], atol=1e-4)


def test_report_contents(quantized: tuple) -> None:
    path, report = quantized
    data = json.loads(path.with_suffix('.json').read_text())
    assert data['calibration']['count'] == 8 and data['held_out']['count'] == 2
    assert len({img['sha256'] for img in data['calibration']['images']}) == 8
    assert 'disjoint' in data['calibration']['note']
    err = data['error']
    assert err['images'] == 2 and {'boxes', 'scores'} <= set(err['outputs'])
    assert 0.0 <= err['top1_agreement'] <= 1.0
    for tensor in data['tensors'].values():
        assert tensor['scale'] == pytest.approx(tensor['amax'] / 127)
        assert tensor['amax'] <= tensor['max_abs'] + 1e-6
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props
             if p.key == 'quantization'}
    assert props['quantization']['calibration_sha256'] == data['calibration']['sha256']
    assert 'INT8 Q/DQ model' in report.summary()


def test_onnxruntime_target_fuses_qlinearconv(toy_path: Path, tmp_path: Path) -> None:
    out = tmp_path / 'ort.onnx'
    images = smooth_images(4)
    q.quantize_model(toy_path, images, out, method='minmax', keep_fp=(),
                     target='onnxruntime', progress=False)
    model = onnx.load(str(out))
    dq = [n for n in model.graph.node if n.op_type == 'DequantizeLinear']
    assert any(_init(model, n.input[0]).data_type == TensorProto.INT32 for n in dq
               if n.input[0] in {i.name for i in model.graph.initializer})
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / 'opt.onnx')
    ort.InferenceSession(str(out), options, providers=['CPUExecutionProvider'])
    ops = {n.op_type for n in onnx.load(str(tmp_path / 'opt.onnx')).graph.node}
    assert 'QLinearConv' in ops
    x = np.stack([q.letterbox_one(img, SIZE, SIZE) for img in smooth_images(2, seed=5)])
    assert np.abs(_run(toy_path, x)['scores'] - _run(out, x)['scores']).max() < 0.1


def test_int8_weight_initializers_and_per_tensor(toy_path: Path, tmp_path: Path) -> None:
    out = tmp_path / 'w.onnx'
    q.quantize_model(toy_path, smooth_images(2), out, method='percentile', keep_fp=(),
                     weight_format='int8', per_channel=False, progress=False)
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == 'conv_2')
    w_dq = producers[conv.input[1]]
    assert _init(model, w_dq.input[0]).data_type == TensorProto.INT8
    assert numpy_helper.to_array(_init(model, w_dq.input[1])).shape == ()
    _run(out, np.zeros((1, 3, SIZE, SIZE), np.float32))


def test_quantize_errors(toy_path: Path, tmp_path: Path) -> None:
    images = smooth_images(3)
    with pytest.raises(ConfigError, match='method'):
        q.quantize_model(toy_path, images, None, method='bogus', progress=False)
    with pytest.raises(ModelError, match='no Conv'):
        q.quantize_model(toy_path, images, None, keep_fp=['conv_*'], progress=False)
    with pytest.raises(ConfigError, match='disjoint'):
        q.quantize_model(toy_path, images, None, held_out=images[:1], progress=False)
    with pytest.raises(ConfigError, match='no calibration'):
        q.quantize_model(toy_path, [], None, progress=False)
    with pytest.raises(ModelError, match='not found'):
        q.quantize_model(tmp_path / 'missing.onnx', images, None, progress=False)


def test_custom_preprocess_and_float_inputs(toy_path: Path) -> None:
    calls = []

    def prep(image: np.ndarray, width: int, height: int) -> np.ndarray:
        calls.append(image.shape)
        return np.full((3, height, width), 0.5, np.float32)

    pre = np.random.default_rng(0).random((3, SIZE, SIZE), np.float32)
    report = q.quantize_model(toy_path, [smooth_images(1)[0], pre], None, preprocess=prep,
                              progress=False)
    assert calls == [(48, 64, 3)] and report.data['calibration']['count'] == 2


def test_real_exporter_yolov3_tiny(tmp_path: Path, tiny_cfg_path: Path) -> None:
    cfg_path = tiny_cfg_path
    export = pytest.importorskip('darknet53_ros.model.onnx_export')
    from darknet53_ros.model.cfg import load_cfg
    from darknet53_ros.model.weights import random_weights

    network = load_cfg(cfg_path, width=160, height=160)
    model_path = tmp_path / 'tiny.onnx'
    export.export_onnx(network, random_weights(network), model_path)
    keep = qdq.default_keep_fp(onnx.load(str(model_path)))
    assert len(keep) == 3  # first conv + two heads
    out = tmp_path / 'tiny_int8.onnx'
    images = smooth_images(3, shape=(120, 160))
    report = q.quantize_model(model_path, images[:2], out, held_out=images[2:],
                              progress=False)
    assert report.data['kept_fp'] == keep
    assert not qdq.qdq_summary(onnx.load(str(out)))['problems']
    assert report.data['error']['outputs']['scores']['max_abs'] < 0.1
    from darknet53_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    with OnnxRuntimeBackend(out) as int8, OnnxRuntimeBackend(model_path) as fp32:
        assert (int8.precision, fp32.precision) == ('int8', 'fp32')


def test_cli_quantize(toy_path: Path, tmp_path: Path) -> None:
    from darknet53_ros.cli.main import main

    folder = tmp_path / 'imgs'
    folder.mkdir()
    for i, img in enumerate(smooth_images(5)):
        cv2.imwrite(str(folder / f'{i}.png'), img)
    out = tmp_path / 'cli_int8.onnx'
    code = main(['quantize', '--model', str(toy_path), '--calib', str(folder), '-o', str(out),
                 '--calib-count', '3', '--held-out', '1', '--method', 'minmax',
                 '--no-progress'])
    assert code == 0 and out.is_file()
    data = json.loads(out.with_suffix('.quant.json').read_text())
    assert data['calibration']['count'] == 3 and data['held_out']['count'] == 1
    assert main(['quantize', '--model', str(toy_path), '--calib', str(tmp_path / 'none'),
                 '-o', str(out)]) == 2
