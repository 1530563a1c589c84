"""Tests for darknet53_ros.optimize.quantize (INT8 Q/DQ) and darknet53_ros.optimize.calibration."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ModelError, SourceError

from .conftest import optional_module, requires

pytestmark = requires('onnx', 'onnxruntime', 'cv2')
onnx = optional_module('onnx')
ort = optional_module('onnxruntime')
cv2 = optional_module('cv2')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from darknet53_ros.optimize import quantize as q  # noqa: E402
from darknet53_ros.optimize.calibration import (  # noqa: E402
    CalibrationImage,
    bag_images,
    calibration_images,
    folder_images,
    image_digest,
    source_kind,
    split_images,
    video_frames,
)

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'darknet'
SIZE = 32
CLASSES = 2


# --------------------------------------------------------------------------------------------
# A small contract model: Convs (BN folded), LeakyRelu 0.1, residual Add, Resize, Concat, two
# heads decoded with Sigmoid into boxes/scores.


def toy_model(size: int = SIZE, seed: int = 0) -> onnx.ModelProto:
    """A YOLO-like contract model with two heads (strides 2 and 1) at ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, x: str, cin: int, cout: int, k: int, stride: int = 1,
             leaky: bool = True) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        w *= rng.uniform(0.5, 1.5, (cout, 1, 1, 1)).astype(np.float32)  # folded BN scale
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f'{name}.w'),
                      numpy_helper.from_array(b, f'{name}.b')])
        nodes.append(helper.make_node('Conv', [x, f'{name}.w', f'{name}.b'], [f'{name}.y'],
                                      name=name, kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[k // 2] * 4))
        if not leaky:
            return f'{name}.y'
        nodes.append(helper.make_node('LeakyRelu', [f'{name}.y'], [f'{name}.a'],
                                      name=f'{name}_leaky', alpha=0.1))
        return f'{name}.a'

    x0 = conv('conv_0', 'images', 3, 8, 3)
    x1 = conv('conv_1', x0, 8, 16, 3, stride=2)
    r = conv('conv_2', x1, 16, 8, 1)
    r = conv('conv_3', r, 8, 16, 3)
    nodes.append(helper.make_node('Add', [x1, r], ['shortcut_4'], name='shortcut_4'))
    h1 = conv('conv_5', 'shortcut_4', 16, 3 * (5 + CLASSES), 1, leaky=False)
    u = conv('conv_6', 'shortcut_4', 16, 8, 1)
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), 'up.scales'))
    nodes.append(helper.make_node('Resize', [u, '', 'up.scales'], ['up.y'], name='upsample_7',
                                  mode='nearest', coordinate_transformation_mode='asymmetric',
                                  nearest_mode='floor'))
    nodes.append(helper.make_node('Concat', ['up.y', x0], ['route_8'], name='route_8', axis=1))
    c = conv('conv_9', 'route_8', 16, 16, 3)
    h2 = conv('conv_10', c, 16, 3 * (5 + CLASSES), 1, leaky=False)

    preds = []
    for i, (head, cells) in enumerate(((h1, (size // 2) ** 2), (h2, size ** 2))):
        shape = f'shape{i}'
        inits.append(numpy_helper.from_array(np.array([0, 3, 5 + CLASSES, cells], np.int64),
                                             shape))
        nodes.append(helper.make_node('Reshape', [head, shape], [f'r{i}']))
        nodes.append(helper.make_node('Transpose', [f'r{i}'], [f't{i}'], perm=[0, 1, 3, 2]))
        flat = f'flat{i}'
        inits.append(numpy_helper.from_array(np.array([0, 3 * cells, 5 + CLASSES], np.int64),
                                             flat))
        nodes.append(helper.make_node('Reshape', [f't{i}', flat], [f'p{i}']))
        preds.append(f'p{i}')
    nodes.append(helper.make_node('Concat', preds, ['pred'], axis=1))
    nodes.append(helper.make_node('Sigmoid', ['pred'], ['sig']))

    def const(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    nodes.append(helper.make_node('Slice', ['sig', const('s0', [0]), const('e4', [4]),
                                            const('ax', [2])], ['xywh']))
    nodes.append(helper.make_node('Slice', ['sig', const('s4', [4]), const('e5', [5]), 'ax'],
                                  ['obj']))
    nodes.append(helper.make_node('Slice', ['sig', const('s5', [5]),
                                            const('e7', [5 + CLASSES]), 'ax'], ['cls']))
    nodes.append(helper.make_node('Mul', ['obj', 'cls'], ['scores']))
    inits.append(numpy_helper.from_array(np.array(float(size), np.float32), 'px'))
    nodes.append(helper.make_node('Mul', ['xywh', 'px'], ['boxes']))
    total = 3 * ((size // 2) ** 2 + size ** 2)
    graph = helper.make_graph(
        nodes, 'toy',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, ['batch', 3, size, size])],
        [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, ['batch', total, 4]),
         helper.make_tensor_value_info('scores', TensorProto.FLOAT,
                                       ['batch', total, CLASSES])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)],
                              producer_name='darknet53_ros')
    model.ir_version = 8
    helper.set_model_props(model, {
        'names': json.dumps(['a', 'b']), 'classes': str(CLASSES), 'input_width': str(size),
        'input_height': str(size), 'producer': 'darknet53_ros'})
    onnx.checker.check_model(model)
    return model


def smooth_images(count: int, seed: int = 1, shape: tuple[int, int] = (48, 64)) -> list:
    """Natural-ish BGR uint8 images: upsampled noise plus a gradient."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 8, 3), np.uint8)
        img = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
        out.append(img)
    return out


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
# Calibration statistics


def test_minmax_is_max_abs() -> None:
    x = np.array([[-3.5, 1.0], [2.0, 0.25]], np.float32)
    assert q.minmax_threshold(x) == 3.5
    hist = q.Histogram()
    hist.update(x)
    assert hist.amax_for('minmax') == 3.5


def test_percentile_of_uniform() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-10, 10, 200_000)
    hist = q.Histogram()
    hist.update(x)
    expected = np.percentile(np.abs(x), 99.0)
    assert hist.amax_for('percentile', 99.0) == pytest.approx(expected, rel=2e-3)
    assert hist.amax_for('percentile', 100.0) == pytest.approx(np.abs(x).max(), rel=1e-3)
    with pytest.raises(ConfigError):
        hist.amax_for('percentile', 0.0)


def _entropy_reference(counts: np.ndarray, width: float, levels: int = 128) -> float:
    """Direct loop implementation of TensorRT's KL threshold search (for comparison)."""
    hist = counts.astype(np.float64)
    last = int(np.nonzero(hist)[0][-1]) + 1
    best, best_i = np.inf, None
    for i in range(levels, last + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        raw = hist[:i]
        qd = np.zeros(i)
        for j in range(levels):
            lo, hi = j * i // levels, (j + 1) * i // levels
            nz = raw[lo:hi] > 0
            if nz.any():
                qd[lo:hi][nz] = raw[lo:hi].sum() / nz.sum()
        if qd.sum() == 0:
            continue
        p, qd = p / p.sum(), qd / qd.sum()
        mask = p > 0
        kl = np.sum(p[mask] * np.log(p[mask] / np.where(qd[mask] > 0, qd[mask], 1e-12)))
        if kl < best:
            best, best_i = kl, i
    return best_i * width


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_entropy_matches_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_t(3 + seed, 50_000))
    x[rng.random(x.size) < 0.2 * seed] = 0.0
    counts, edges = np.histogram(x, bins=512, range=(0, x.max()))
    got = q.entropy_threshold(counts, edges[1])
    assert got == pytest.approx(_entropy_reference(counts, edges[1]), rel=1e-9)


def test_entropy_clips_heavy_tail_but_not_uniform() -> None:
    rng = np.random.default_rng(0)
    heavy = q.Histogram()
    heavy.update(rng.standard_cauchy(100_000))
    assert heavy.amax_for('entropy') < 0.2 * heavy.amax
    uniform = q.Histogram()
    uniform.update(rng.uniform(-1, 1, 100_000))
    assert uniform.amax_for('entropy') > 0.85


def test_histogram_range_doubles_exactly() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 10_000), rng.uniform(0, 3.5, 10_000)
    hist = q.Histogram(bins=256)
    hist.update(a)
    hist.update(-b)
    assert hist.amax == pytest.approx(max(a.max(), b.max()))
    assert hist.limit >= hist.amax and hist.counts.sum() == 20_000
    ref, _ = np.histogram(np.abs(np.concatenate([a, b])), bins=256, range=(0, hist.limit))
    assert np.abs(ref - hist.counts).sum() <= 4  # only values on bin edges may differ


# --------------------------------------------------------------------------------------------
# Placement and structure


def test_default_keep_fp_is_first_and_head_convs() -> None:
    model = toy_model()
    assert q.first_convs(model) == ['conv_0']
    assert q.head_convs(model) == ['conv_5', 'conv_10']
    assert q.default_keep_fp(model) == ['conv_0', 'conv_5', 'conv_10']


def test_plan_quantizes_residual_add_inputs_together() -> None:
    plan = q.plan_quantization(toy_model(), keep_fp=['conv_0', 'conv_5', 'conv_1*'])
    assert plan.kept == ['conv_0', 'conv_1', 'conv_1_leaky', 'conv_5', 'conv_10']
    assert 'conv_1' not in plan.convs and 'conv_2' in plan.convs
    readers = {t: set(r) for t, r in plan.activations.items()}
    assert 'shortcut_4' in readers['conv_1.a'] and 'shortcut_4' in readers['conv_3.a']
    assert not plan.conv_outputs
    with pytest.raises(ConfigError, match='nomatch'):
        q.plan_quantization(toy_model(), keep_fp=['nomatch'])


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
    decode = q.decode_nodes(model)
    assert {n.op_type for n in model.graph.node if n.name in decode} >= {'Add', 'Exp'}
    assert not decode & {n.name for n in model.graph.node if n.op_type == 'Conv'}
    for keep in (q.default_keep_fp(model), []):
        plan = q.plan_quantization(model, keep, target=target)
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
    qdq = [n for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert qdq
    for node in qdq:
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
    summary = q.qdq_summary(model)
    assert not summary['problems'] and set(summary['float_convs']) == kept
    assert report.data['kept_fp'] == ['conv_0', 'conv_5', 'conv_10']


def test_int8_outputs_close_to_fp32_and_match_onnx_reference(quantized: tuple,
                                                             toy_path: Path) -> None:
    from onnx.reference import ReferenceEvaluator

    path, _ = quantized
    held = smooth_images(3, seed=99)
    x = np.stack([q._letterbox(img, SIZE, SIZE) for img in held])
    fp32, int8 = _run(toy_path, x), _run(path, x)
    assert np.abs(fp32['scores'] - int8['scores']).max() < 0.05
    assert np.abs(fp32['boxes'] - int8['boxes']).max() < 0.05 * SIZE
    model = onnx.load(str(path))
    for opset in model.opset_import:  # onnx.reference implements Q/DQ from opset 19 on;
        opset.version = 19  # int8 per-tensor/per-axis semantics are unchanged since 13
    ref = ReferenceEvaluator(model).run(None, {'images': x})
    np.testing.assert_allclose(ref[1], int8['scores'], atol=1e-4)


def test_report_contents(quantized: tuple) -> None:
    path, report = quantized
    data = json.loads(path.with_suffix('.json').read_text())
    assert data['calibration']['count'] == 8 and data['held_out']['count'] == 2
    assert len({img['sha256'] for img in data['calibration']['images']}) == 8
    assert 'disjoint' in data['calibration']['note']
    err = data['error']
    assert err['images'] == 2 and {'boxes', 'scores'} <= set(err['outputs'])
    assert 0.0 <= err['top1_agreement'] <= 1.0
    for stats in data['tensors'].values():
        assert stats['scale'] == pytest.approx(stats['amax'] / 127)
        assert stats['amax'] <= stats['max_abs'] + 1e-6
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
    x = np.stack([q._letterbox(img, SIZE, SIZE) for img in smooth_images(2, seed=5)])
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


def test_real_exporter_yolov3_tiny(tmp_path: Path) -> None:
    cfg_path = SHARED / 'cfg' / 'yolov3-tiny.cfg'
    if not cfg_path.is_file():
        pytest.skip(f'{cfg_path} is absent')
    export = pytest.importorskip('darknet53_ros.model.onnx_export')
    from darknet53_ros.model.cfg import load_cfg
    from darknet53_ros.model.weights import random_weights

    network = load_cfg(cfg_path, width=160, height=160)
    model_path = tmp_path / 'tiny.onnx'
    export.export_onnx(network, random_weights(network), model_path)
    keep = q.default_keep_fp(onnx.load(str(model_path)))
    assert len(keep) == 3  # first conv + two heads
    out = tmp_path / 'tiny_int8.onnx'
    images = smooth_images(3, shape=(120, 160))
    report = q.quantize_model(model_path, images[:2], out, held_out=images[2:],
                              progress=False)
    assert report.data['kept_fp'] == keep
    assert not q.qdq_summary(onnx.load(str(out)))['problems']
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


# --------------------------------------------------------------------------------------------
# Calibration sources


def test_folder_source_and_split(tmp_path: Path) -> None:
    images = smooth_images(4)
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / f'{i}.png'), img)
    cv2.imwrite(str(tmp_path / 'dup.png'), images[0])
    (tmp_path / 'broken.jpg').write_bytes(b'not an image')
    (tmp_path / 'notes.txt').write_text('ignored')
    items = list(folder_images(tmp_path))
    assert len(items) == 5 and all(i.image.dtype == np.uint8 for i in items)
    assert source_kind(tmp_path) == 'folder'
    calib, held = split_images(calibration_images(tmp_path), count=10, held_out=1)
    calib = list(calib)
    assert len(held) == 1 and len(calib) == 3  # duplicate skipped
    assert not {image_digest(i.image) for i in calib} & {image_digest(held[0].image)}
    with pytest.raises(SourceError):
        list(folder_images(tmp_path / 'missing'))


def test_video_source(tmp_path: Path) -> None:
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip('OpenCV has no MJPG writer here')
    for img in smooth_images(6):
        writer.write(img)
    writer.release()
    frames = list(video_frames(path, step=2))
    assert [f.key.rsplit('=', 1)[1] for f in frames] == ['0', '2', '4']
    assert frames[0].image.shape == (48, 64, 3)
    assert source_kind(path) == 'video'


def test_bag_source(tmp_path: Path) -> None:
    pytest.importorskip('rosbags')
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types['sensor_msgs/msg/Image']
    Compressed = store.types['sensor_msgs/msg/CompressedImage']
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    img = smooth_images(1)[0]
    header = Header(stamp=Time(sec=0, nanosec=0), frame_id='cam')

    def raw(encoding: str, pixels: np.ndarray, pad: int = 0) -> object:
        h, w = pixels.shape[:2]
        rows = pixels.reshape(h, -1)
        data = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1).ravel()
        return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                     step=rows.shape[1] + pad, data=data)

    ok, jpg = cv2.imencode('.png', img)
    msgs = [raw('bgr8', img, pad=4), raw('rgb8', img[..., ::-1].copy()),
            raw('mono8', img[..., 1].copy()), raw('32FC1', img)]
    bag = tmp_path / 'bag'
    with Writer(bag, version=9) as writer:
        conn = writer.add_connection('/cam/image', Image.__msgtype__, typestore=store)
        cconn = writer.add_connection('/cam/compressed', Compressed.__msgtype__,
                                      typestore=store)
        for i, msg in enumerate(msgs):
            writer.write(conn, i, store.serialize_cdr(msg, Image.__msgtype__))
        for i, data in enumerate([jpg.ravel(), np.frombuffer(b'garbage', np.uint8)]):
            msg = Compressed(header=header, format='png', data=data)
            writer.write(cconn, 10 + i, store.serialize_cdr(msg, Compressed.__msgtype__))
    assert source_kind(bag) == 'bag'
    frames = list(bag_images(bag, '/cam/image'))
    assert len(frames) == 3  # the 32FC1 frame is dropped
    np.testing.assert_array_equal(frames[0].image, img)
    np.testing.assert_array_equal(frames[1].image, img)
    np.testing.assert_array_equal(frames[2].image[..., 0], img[..., 1])
    compressed = list(calibration_images(bag, topic='/cam/compressed'))
    assert len(compressed) == 1
    np.testing.assert_array_equal(compressed[0].image, img)
    with pytest.raises(SourceError, match='image topics'):
        list(bag_images(bag))
    with pytest.raises(SourceError, match='no image topic'):
        list(bag_images(bag, '/other'))


def test_calibration_image_key() -> None:
    assert CalibrationImage('k', np.zeros((1, 1, 3), np.uint8)).key == 'k'
