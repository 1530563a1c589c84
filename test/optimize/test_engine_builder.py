"""Tests for the TensorRT engine builder through a fake TensorRT (flags per TensorRT version),
and mypy of the TensorRT glue modules against ``tensorrt-stubs``."""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, EngineError
from darknet53_ros.fileio import sha256_file
from darknet53_ros.inference.backends.engine_file import check_engine_metadata
from darknet53_ros.optimize import engine_builder as eb

from ..fakes.tensorrt import make_fake_trt

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# mypy against tensorrt-stubs


def _repair_stubs(out: Path) -> None:
    """Copy tensorrt-stubs into ``out``, fixing its syntax errors (parameters named ``in``,
    parameters without default after defaulted ones) so mypy can read it."""
    spec = importlib.util.find_spec('tensorrt_bindings')
    assert spec is not None and spec.submodule_search_locations
    site = Path(list(spec.submodule_search_locations)[0]).parent
    keywords = 'in|from|def|class|lambda|is|not|and|or|global|pass|with|as'
    for package in ('tensorrt', 'tensorrt_bindings'):
        (out / package).mkdir(parents=True, exist_ok=True)
        for stub in (site / package).glob('*.pyi'):
            text = re.sub(rf'([(,]\s*)({keywords})(\s*:)', r'\1\2_\3', stub.read_text())
            lines = text.split('\n')
            for _ in range(500):
                try:
                    ast.parse('\n'.join(lines))
                    break
                except SyntaxError as exc:
                    index = (exc.lineno or 1) - 1
                    match = re.match(r'(\s*def \w+\()(.*)(\)\s*->.*)$', lines[index])
                    if match is None:
                        pytest.skip(f'cannot repair {stub}:{exc.lineno}')
                    params, seen_default = [], False
                    for param in match.group(2).split(', '):
                        if '=' in param:
                            seen_default = True
                        elif seen_default and not param.strip().startswith('*'):
                            param += ' = ...'
                        params.append(param)
                    fixed = match.group(1) + ', '.join(params) + match.group(3)
                    if fixed == lines[index]:
                        pytest.skip(f'cannot repair {stub}:{exc.lineno}')
                    lines[index] = fixed
            (out / package / stub.name).write_text('\n'.join(lines))


def test_mypy_trt_modules(tmp_path: Path) -> None:
    pytest.importorskip('mypy')
    spec = importlib.util.find_spec('tensorrt_bindings')
    if spec is None or not spec.submodule_search_locations or not any(
            Path(p, 'tensorrt.pyi').is_file() for p in spec.submodule_search_locations):
        pytest.skip('tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)')
    stubs = tmp_path / 'stubs'
    _repair_stubs(stubs)
    control = tmp_path / 'control.py'  # proves the stubs are really used
    control.write_text('import tensorrt as trt\n\n\ndef f() -> None:\n'
                       '    trt.Builder(1, 2, 3)\n')
    env = dict(os.environ, MYPYPATH=str(stubs))
    targets = ['darknet53_ros/inference/backends/engine_file.py',
               'darknet53_ros/optimize/engine_builder.py',
               'darknet53_ros/inference/backends/tensorrt_backend.py',
               'darknet53_ros/inference/backends/cuda_runtime.py',
               'darknet53_ros/optimize/engine_network.py', str(control)]
    result = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'mypy.ini'),
         '--cache-dir', str(tmp_path / 'cache'), *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ': error:' in line]
    assert errors and all(line.startswith(str(control)) for line in errors), result.stdout


# --------------------------------------------------------------------------------------------
# build_engine through the fake TensorRT of each version (test/fakes/tensorrt.py SURFACES)


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    """The toy contract model in FP32 and as Q/DQ INT8."""
    onnx = pytest.importorskip('onnx')
    from darknet53_ros.optimize.quantize import quantize_model

    from ..toy import smooth_images, toy_model

    float_model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(float_model))
    qdq = tmp_path / 'toy_int8.onnx'
    quantize_model(float_model, smooth_images(2), qdq, progress=False)
    return {'float': float_model, 'qdq': qdq}


def use_trt(monkeypatch: pytest.MonkeyPatch, fakes: tuple, version: str) -> types.ModuleType:
    """Replace the installed fake TensorRT by one with ``version``'s API surface."""
    cuda, _ = fakes
    trt = make_fake_trt(cuda.core, version)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    return trt


#: (version, model, precision) -> builder flags, network flags, precision, float precision,
#: strongly typed, decode pinned to FP32.
MATRIX = [
    ('8.5', 'qdq', None, ['FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS'], 1, 'int8', 'fp16',
     False, True),
    ('8.5', 'float', None, ['FP16', 'OBEY_PRECISION_CONSTRAINTS'], 1, 'fp16', 'fp16', False,
     True),
    ('10.3', 'qdq', None, ['FP16', 'INT8', 'OBEY_PRECISION_CONSTRAINTS'], 0, 'int8', 'fp16',
     False, True),
    ('10.3', 'qdq', 'fp32', ['INT8'], 0, 'int8', 'fp32', False, False),
    ('10.3', 'float', 'fp32', [], 0, 'fp32', 'fp32', False, False),
    ('10.16', 'qdq', None, [], 2, 'int8', 'fp32', True, False),
    ('10.16', 'qdq', 'fp16', [], 2, 'int8', 'fp32', True, False),
    ('10.16', 'float', None, ['FP16', 'OBEY_PRECISION_CONSTRAINTS'], 0, 'fp16', 'fp16', False,
     True),
    ('11.1', 'qdq', None, [], 0, 'int8', 'fp32', True, False),
    ('11.1', 'float', 'fp32', [], 0, 'fp32', 'fp32', True, False),
]


@pytest.mark.parametrize(('version', 'kind', 'precision', 'flags', 'network_flags', 'actual',
                          'float_precision', 'strong', 'pinned'), MATRIX)
def test_build_matrix(fakes: tuple, models: dict, monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path, version: str, kind: str, precision: str | None,
                      flags: list, network_flags: int, actual: str, float_precision: str,
                      strong: bool, pinned: bool) -> None:
    cuda, _ = fakes
    trt = use_trt(monkeypatch, fakes, version)
    out = tmp_path / 'engines' / 'toy.engine'
    meta = eb.build_engine(models[kind], out, precision=precision, batch='1:2:4',
                           workspace_mib=64, timing_cache=tmp_path / 'timing.cache',
                           progress=False)
    calls = trt.calls
    assert [c[1] for c in calls if c[0] == 'flag'] == flags
    assert ('network', network_flags) in calls and ('pool', 'WORKSPACE', 64 << 20) in calls
    assert ('profile', ('images', ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)))) in calls
    decode = [c[1] for c in calls if c[0] == 'precision']
    assert bool(decode) is pinned
    if pinned:  # the decode after the head convs, never the convs
        assert 'px' in decode and any('Sigmoid' in n or n == 'node_of_sig' for n in decode)
        assert not any(name.startswith('conv_') for name in decode)
    assert meta['precision'] == actual and meta['float_precision'] == float_precision
    assert meta['strongly_typed'] is strong and meta['requested_precision'] == precision
    assert meta['tensorrt_version'] == trt.__version__ and meta['compute_capability'] == '8.7'
    assert meta['qdq'] is (kind == 'qdq') and meta['batch'] == [1, 2, 4]
    assert meta['class_names'] == ['a', 'b'] and meta['gpu_name'] == 'FakeGPU'
    assert meta['verification'] is None and meta['cuda_runtime'] == 'pycuda'
    assert (meta['calibration_sha256'] is not None) is (kind == 'qdq')
    assert out.read_bytes().startswith(b'ORT:') and meta['engine_bytes'] == out.stat().st_size
    assert (tmp_path / 'timing.cache').read_bytes() == b'timing'
    # lifecycle: TensorRT objects went before the context; nothing left current or retained
    assert cuda.core.errors == [] and cuda.core.stack() == []
    assert cuda.core.refcount[0] == 0 and cuda.events.count('release') == 1
    check_engine_metadata(out, expected={'onnx_sha256': sha256_file(models[kind]),
                                         'precision': actual},
                          runtime_info={'tensorrt_version': trt.__version__,
                                        'compute_capability': (8, 7)})


@pytest.mark.parametrize('version', ['8.5', '10.3', '10.16', '11.1'])
def test_default_precision_of_qdq_is_int8_everywhere(fakes: tuple, models: dict,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, version: str) -> None:
    """The README's main example: a Q/DQ model at the CLI's default precision."""
    use_trt(monkeypatch, fakes, version)
    from darknet53_ros.cli.main import main

    out = tmp_path / 'q.engine'
    assert main(['build-engine', '--model', str(models['qdq']), '-o', str(out),
                 '--no-progress']) == 0
    assert eb.read_engine_metadata(out)['precision'] == 'int8'
    check_engine_metadata(out, expected={'precision': 'int8'})


def test_build_rejections(fakes: tuple, models: dict, monkeypatch: pytest.MonkeyPatch,
                          tmp_path: Path) -> None:
    use_trt(monkeypatch, fakes, '11.1')
    model = models['float']
    with pytest.raises(EngineError, match='strongly typed'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='fp16', progress=False)
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    with pytest.raises(EngineError, match=r'TensorRT 11\.1\.0\.9 has no DLA.*11\.4\.1'):
        eb.build_engine(models['qdq'], tmp_path / 'a.engine', dla_core=0, progress=False)
    use_trt(monkeypatch, fakes, '10.16')  # TensorRT 10.7 was the last 10.x with DLA
    with pytest.raises(EngineError, match=r'TensorRT 10\.16\.0\.72 has no DLA \(TensorRT 10\.7'):
        eb.build_engine(models['qdq'], tmp_path / 'a.engine', dla_core=0, batch=2,
                        progress=False)
    use_trt(monkeypatch, fakes, '10.3')
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    with pytest.raises(EngineError, match='DLA core 5'):
        eb.build_engine(model, tmp_path / 'a.engine', dla_core=5, progress=False)
    with pytest.raises(ConfigError, match='fixed batch'):
        eb.build_engine(model, tmp_path / 'a.engine', dla_core=0, batch='1:2:4')
    assert not (tmp_path / 'a.engine').exists()


@pytest.mark.parametrize('version', ['8.5', '10.3'])
def test_dla_build_and_load(fakes: tuple, models: dict, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path, version: str) -> None:
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    trt = use_trt(monkeypatch, fakes, version)
    out = tmp_path / 'dla.engine'
    meta = eb.build_engine(models['qdq'], out, dla_core=1, batch=2, progress=False)
    assert ('DLA_core', 1) in trt.calls and ('default_device_type', 'DLA') in trt.calls
    assert 'GPU_FALLBACK' in [c[1] for c in trt.calls if c[0] == 'flag']
    assert meta['dla_core'] == 1 and meta['batch'] == [2, 2, 2]
    with TensorRTBackend(out) as backend:
        assert trt.runtimes[-1].DLA_core == 1  # set from the metadata before deserialising
        assert backend.details()['dla_core'] == '1'


def test_legacy_calibration_through_the_cuda_runtime(fakes: tuple, models: dict,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """An FP32 model at int8 with --calib (TensorRT < 11): the calibrator's device memory is
    the CUDA context's (pycuda or cuda-python alike)."""
    cv2 = pytest.importorskip('cv2')
    trt = use_trt(monkeypatch, fakes, '10.3')
    images = tmp_path / 'calib'
    images.mkdir()
    for i in range(4):
        cv2.imwrite(str(images / f'{i}.png'), np.full((40, 50, 3), 40 * i, np.uint8))
    meta = eb.build_engine(models['float'], tmp_path / 'c.engine', precision='int8',
                           calib_source=images, calib_batch=2, progress=False,
                           cuda_runtime='cuda-python')
    assert meta['precision'] == 'int8' and meta['cuda_runtime'] == 'cuda-python'
    assert [c[1] for c in trt.calls if c[0] == 'flag'][:2] == ['FP16', 'INT8']
    assert fakes[0].core.errors == []


# --------------------------------------------------------------------------------------------
# Verification: the fake engine runs the source model through ONNX Runtime


@pytest.mark.parametrize('version', ['8.5', '11.1'])
def test_build_engine_verify_records_agreement(fakes: tuple, models: dict,
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path, version: str) -> None:
    pytest.importorskip('onnxruntime')
    pytest.importorskip('cv2')
    from darknet53_ros.cli.main import main
    from darknet53_ros.inference.backends.engine_file import verification_status

    use_trt(monkeypatch, fakes, version)
    out = tmp_path / 'q.engine'
    assert main(['build-engine', '--model', str(models['float']), '--precision', 'fp32',
                 '-o', str(out), '--batch', '1:2:4', '--no-progress', '--verify',
                 '--verify-count', '3', '--conf-threshold', '0.1']) == 0
    meta = eb.read_engine_metadata(out)
    record = meta['verification']
    assert record['agrees'] and record['frames'] == 3 and record['source'].startswith('synth')
    assert record['outputs']['boxes']['max_abs_diff'] < 1e-4
    assert record['detections']['match_rate'] == 1.0 and record['conf_threshold'] == 0.1
    level, message = verification_status(meta)
    assert level == 'info' and 'agrees' in message
    check_engine_metadata(out)  # the engine's hash still matches after the metadata rewrite
    assert fakes[0].core.errors == [] and fakes[0].core.refcount[0] == 0


def test_verify_engine_detects_disagreement(fakes: tuple, models: dict,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    pytest.importorskip('onnxruntime')
    cv2 = pytest.importorskip('cv2')
    from darknet53_ros.cli.main import main
    from darknet53_ros.inference.backends.engine_file import verification_status
    from darknet53_ros.optimize.engine_verify import verify_engine

    trt = use_trt(monkeypatch, fakes, '10.3')
    trt.Builder.noise = 6.0  # the "engine" shifts every box by 6 px: a broken build
    out = tmp_path / 'bad.engine'
    eb.build_engine(models['float'], out, precision='fp32', batch='1:2:4', progress=False)
    assert verification_status(eb.read_engine_metadata(out))[0] == 'warning'  # never verified
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f'{i}.png'), np.full((24, 32, 3), 60 * i + 30, np.uint8))
    result = verify_engine(out, source=frames, conf_threshold=0.1, record=False)
    assert result['source'] == str(frames) and result['frames'] == 2
    assert result['outputs']['boxes']['max_abs_diff'] == pytest.approx(6.0, abs=1e-3)
    assert result['outputs']['scores']['max_abs_diff'] < 1e-5
    assert eb.read_engine_metadata(out)['verification'] is None  # not recorded
    assert main(['verify-engine', str(out), '--conf-threshold', '0.1',
                 '--verify-count', '2']) == 1
    level, message = verification_status(eb.read_engine_metadata(out))
    assert level == 'warning' and 'DISAGREES' in message
    other = tmp_path / 'other.onnx'
    other.write_bytes(models['qdq'].read_bytes())
    with pytest.raises(EngineError, match='not the model'):
        verify_engine(out, onnx_path=other, record=False)
