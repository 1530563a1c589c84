"""Tests for darknet53_ros.backends (interface, metadata, ONNX Runtime backend, factory)."""
from __future__ import annotations

import json
from pathlib import Path
import sys
import types

import numpy as np
import pytest

from darknet53_ros.errors import BackendError, ConfigError, ModelError
from darknet53_ros.inference.backends.base import Backend, model_metadata, parse_metadata
from darknet53_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from darknet53_ros.inference.backends.registry import backend_for, create_backend

from ..conftest import optional_module, requires

pytestmark = requires('onnx', 'onnxruntime')
onnx = optional_module('onnx')
ort = optional_module('onnxruntime')
if onnx is not None:
    from onnx import TensorProto, helper, numpy_helper


def contract_metadata(names: list[str], width: int, height: int) -> dict[str, str]:
    """The contract's metadata_props for a model with ``names`` classes."""
    return {
        'names': json.dumps(names), 'classes': str(len(names)),
        'input_width': str(width), 'input_height': str(height),
        'strides': json.dumps([[32, 32], [16, 16], [8, 8]]),
        'anchors': json.dumps([[[116, 90], [156, 198], [373, 326]], [[30, 61], [62, 45],
                                                                   [59, 119]],
                               [[10, 13], [16, 30], [33, 23]]]),
        'heads': json.dumps([82, 94, 106]), 'producer': 'darknet53_ros',
    }


def make_contract_model(path: Path, boxes: np.ndarray, scores: np.ndarray, width: int = 416,
                        height: int = 416, names: list[str] | None = None,
                        batch: int | str = 'batch', metadata: dict[str, str] | None = None,
                        scale_by_max: bool = False, input_name: str = 'images',
                        extra_output: bool = False, channels: int = 3) -> Path:
    """Write a contract ONNX model whose outputs are the constants ``boxes`` [N, 4] and
    ``scores`` [N, C], repeated over the batch (skips the test where onnx is missing).

    With ``scale_by_max`` the scores of each image are multiplied by the image's maximum
    input value (1 for an image with a white pixel, 0.5 for a black letterboxed one).
    """
    if onnx is None:
        pytest.skip('onnx not installed (the contract model is built with it)')
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    num, classes = scores.shape
    names = names if names is not None else [f'class{i}' for i in range(classes)]
    nodes = [
        helper.make_node('ReduceMax', [input_name, 'axes'], ['peak'], keepdims=1),
        helper.make_node('Reshape', ['peak', 'shape3'], ['peak3']),  # [B, 1, 1]
        helper.make_node('Mul', ['peak3', 'zero'], ['zeros']),
        helper.make_node('Add', ['zeros', 'box_const'], ['boxes']),
        helper.make_node('Mul' if scale_by_max else 'Add',
                         ['peak3' if scale_by_max else 'zeros', 'score_const'], ['scores']),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), 'axes'),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), 'shape3'),
        numpy_helper.from_array(np.zeros(1, np.float32), 'zero'),
        numpy_helper.from_array(boxes[None], 'box_const'),
        numpy_helper.from_array(scores[None], 'score_const'),
    ]
    outputs = [
        helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [batch, num, 4]),
        helper.make_tensor_value_info('scores', TensorProto.FLOAT, [batch, num, classes]),
    ]
    if extra_output:
        nodes.append(helper.make_node('Identity', ['peak'], ['head_82']))
        outputs.append(helper.make_tensor_value_info('head_82', TensorProto.FLOAT,
                                                     [batch, 1, 1, 1]))
    graph = helper.make_graph(
        nodes, 'contract', [helper.make_tensor_value_info(
            input_name, TensorProto.FLOAT, [batch, channels, height, width])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 8
    props = contract_metadata(names, width, height) if metadata is None else metadata
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    boxes = np.array([[10, 20, 110, 220], [0, 0, 5, 5]], np.float32)
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.4]], np.float32)
    return make_contract_model(tmp_path / 'm.onnx', boxes, scores, 320, 192,
                               names=['a', 'b', 'c'])


def test_onnxruntime_backend_runs_contract_model(model_path: Path) -> None:
    with OnnxRuntimeBackend(model_path, intra_op_threads=1) as backend:
        assert isinstance(backend, Backend)
        assert backend.input_name == 'images'
        assert backend.input_shape == (None, 3, 192, 320)
        assert backend.output_names == ('boxes', 'scores')
        assert backend.max_batch is None and backend.fixed_batch is None
        assert backend.providers == ('CPUExecutionProvider',)
        assert backend.metadata['names'] == ['a', 'b', 'c']
        assert backend.metadata['input_width'] == 320
        assert backend.session.get_inputs()[0].name == 'images'
        out = backend.infer(np.zeros((3, 3, 192, 320), np.float32))
        assert set(out) == {'boxes', 'scores'}
        assert out['boxes'].shape == (3, 2, 4) and out['scores'].shape == (3, 2, 3)
        np.testing.assert_array_equal(out['boxes'][2], [[10, 20, 110, 220], [0, 0, 5, 5]])
        # Non-contiguous batches are accepted.
        big = np.zeros((2, 3, 192, 640), np.float32)
        assert backend.infer(big[:, :, :, ::2])['scores'].shape == (2, 2, 3)
    with pytest.raises(BackendError, match='closed'):
        backend.infer(np.zeros((1, 3, 192, 320), np.float32))


def test_backend_rejects_bad_batches(model_path: Path) -> None:
    backend = OnnxRuntimeBackend(model_path)
    for bad in (np.zeros((1, 3, 192, 320), np.float64), np.zeros((1, 3, 190, 320), np.float32),
                np.zeros((3, 192, 320), np.float32)):
        with pytest.raises(BackendError, match='m.onnx'):
            backend.infer(bad)


def test_fixed_batch_and_all_outputs(tmp_path: Path) -> None:
    path = make_contract_model(tmp_path / 'fixed.onnx', np.zeros((1, 4)), np.zeros((1, 2)),
                               batch=2, extra_output=True)
    backend = OnnxRuntimeBackend(path, outputs=None)
    assert backend.max_batch == 2 and backend.fixed_batch == 2
    assert backend.output_names == ('boxes', 'scores', 'head_82')
    assert backend.infer(np.zeros((2, 3, 416, 416), np.float32))['head_82'].shape == (2, 1, 1, 1)
    with pytest.raises(BackendError):
        backend.infer(np.zeros((1, 3, 416, 416), np.float32))
    with pytest.raises(ModelError, match='head_99'):
        OnnxRuntimeBackend(path, outputs=('boxes', 'head_99'))


@pytest.mark.parametrize('kwargs, match', [
    ({'input_name': 'input'}, "expected one input 'images'"),
    ({'channels': 1}, r'\[B, 3, H, W\]'),
    ({'height': 'h'}, 'fixed H and W'),
])
def test_contract_violations_name_the_file(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = make_contract_model(tmp_path / 'bad.onnx', np.zeros((1, 4)), np.zeros((1, 2)),
                               **kwargs)
    with pytest.raises(ModelError, match=match) as info:
        OnnxRuntimeBackend(path)
    assert 'bad.onnx' in str(info.value)


def test_missing_scores_output(tmp_path: Path) -> None:
    path = make_contract_model(tmp_path / 'noscores.onnx', np.zeros((1, 4)), np.zeros((1, 2)))
    model = onnx.load(str(path))
    model.graph.output.pop()  # drop 'scores'
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="noscores.onnx.*missing output 'scores'"):
        OnnxRuntimeBackend(path)


def test_missing_metadata_is_tolerated_unless_required(tmp_path: Path) -> None:
    path = make_contract_model(tmp_path / 'nometa.onnx', np.zeros((1, 4)), np.zeros((1, 2)),
                               metadata={})
    assert OnnxRuntimeBackend(path).metadata == {}
    with pytest.raises(ModelError, match="nometa.onnx.*'names'"):
        OnnxRuntimeBackend(path, require_metadata=True)


def test_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match='absent.onnx'):
        OnnxRuntimeBackend(tmp_path / 'absent.onnx')
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x00\x01 not a protobuf at all \xff' * 10)
    with pytest.raises(ModelError, match='garbage.onnx'):
        OnnxRuntimeBackend(garbage)
    with pytest.raises(ModelError, match='garbage.onnx'):
        model_metadata(garbage)


def test_devices(model_path: Path) -> None:
    with pytest.raises(ConfigError, match='device'):
        OnnxRuntimeBackend(model_path, device='tpu')
    auto = OnnxRuntimeBackend(model_path, device='auto')
    assert auto.providers[-1] == 'CPUExecutionProvider'
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        with pytest.raises(BackendError, match='CUDAExecutionProvider'):
            OnnxRuntimeBackend(model_path, device='cuda')


def test_model_metadata_reads_contract(model_path: Path) -> None:
    meta = model_metadata(model_path)
    assert meta['names'] == ['a', 'b', 'c'] and meta['classes'] == 3
    assert (meta['input_width'], meta['input_height']) == (320, 192)
    assert meta['strides'][0] == [32, 32] and meta['heads'] == [82, 94, 106]
    assert meta['anchors'][2][0] == [10, 13] and meta['producer'] == 'darknet53_ros'


@pytest.mark.parametrize('key, value, match', [
    ('names', None, "lacks 'names'"),
    ('classes', None, "lacks 'classes'"),
    ('input_width', 'wide', "'input_width' = 'wide' is not an integer"),
    ('input_height', '0', "'input_height' = 0 must be at least 1"),
    ('names', '["a", ', "'names' is not valid JSON"),
    ('names', '{"a": 1}', "'names' must be a JSON list"),
    ('classes', '4', "'names' has 3 entries but 'classes' is 4"),
    ('strides', '[[32]]', "'strides'"),
    ('anchors', '[[1, 2]]', "'anchors'"),
    ('heads', '["x"]', "'heads'"),
])
def test_metadata_errors_name_file_and_key(tmp_path: Path, key: str, value: str | None,
                                           match: str) -> None:
    props = contract_metadata(['a', 'b', 'c'], 416, 416)
    if value is None:
        del props[key]
    else:
        props[key] = value
    path = make_contract_model(tmp_path / 'meta.onnx', np.zeros((1, 4)), np.zeros((1, 3)),
                               metadata=props)
    with pytest.raises(ModelError, match=match) as info:
        model_metadata(path)
    assert 'meta.onnx' in str(info.value)
    with pytest.raises(ModelError, match=match):
        parse_metadata(props, 'x')


def test_factory_picks_by_extension(model_path: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend_for('a/b.ONNX') == 'onnxruntime'
    assert backend_for('b.engine') == backend_for('b.plan') == 'tensorrt'
    with pytest.raises(ConfigError, match='.pt'):
        create_backend(tmp_path / 'model.pt')
    with pytest.raises(ConfigError, match='backend'):
        create_backend(model_path, backend='openvino')
    backend = create_backend(model_path, intra_op_threads=1)
    assert isinstance(backend, OnnxRuntimeBackend)

    monkeypatch.setitem(sys.modules, 'darknet53_ros.inference.backends.tensorrt_backend', None)
    with pytest.raises(BackendError, match='model.engine.*TensorRT backend is unavailable'):
        create_backend(tmp_path / 'model.engine')

    calls = []
    fake = types.ModuleType('darknet53_ros.inference.backends.tensorrt_backend')
    fake.TensorRTBackend = lambda path, **opts: calls.append((path, opts)) or 'engine'
    monkeypatch.setitem(sys.modules, 'darknet53_ros.inference.backends.tensorrt_backend', fake)
    assert create_backend(tmp_path / 'model.plan', device=0) == 'engine'
    assert calls == [(tmp_path / 'model.plan', {'device': 0})]


def test_tensorrt_layout_qdq_warns_once_on_cpu(tmp_path: Path, caplog, monkeypatch) -> None:
    from darknet53_ros.inference.backends import onnxruntime_backend as ortb

    monkeypatch.setattr(ortb, '_WARNED_QDQ_LAYOUT', set())
    boxes, scores = np.zeros((2, 4), np.float32), np.zeros((2, 1), np.float32)
    meta = contract_metadata(['a'], 416, 416)
    ort_layout = make_contract_model(tmp_path / 'ort.onnx', boxes, scores, metadata={
        **meta, 'quantization': json.dumps({'method': 'entropy', 'target': 'onnxruntime'})})
    trt_layout = make_contract_model(tmp_path / 'trt.onnx', boxes, scores, metadata={
        **meta, 'quantization': json.dumps({'method': 'entropy', 'target': 'tensorrt'})})
    with caplog.at_level('WARNING', logger=ortb.__name__):
        ortb.OnnxRuntimeBackend(ort_layout).close()
        assert 'TensorRT layout' not in caplog.text
        ortb.OnnxRuntimeBackend(trt_layout).close()
        ortb.OnnxRuntimeBackend(trt_layout).close()
    assert caplog.text.count('TensorRT layout') == 1
    assert 'quantize --target onnxruntime' in caplog.text and 'trt.onnx' in caplog.text
