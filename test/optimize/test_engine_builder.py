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

import pytest

from darknet53_ros.errors import EngineError
from darknet53_ros.fileio import sha256_file
from darknet53_ros.inference.backends.engine_file import check_engine_metadata
from darknet53_ros.optimize import engine_builder as eb

from ..fakes.tensorrt import make_fake_builder

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
               'darknet53_ros/inference/backends/cuda_runtime.py', str(control)]
    result = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'mypy.ini'),
         '--cache-dir', str(tmp_path / 'cache'), *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ': error:' in line]
    assert errors and all(line.startswith(str(control)) for line in errors), result.stdout


# --------------------------------------------------------------------------------------------
# build_engine through a fake TensorRT builder (flags per TensorRT version)


@pytest.mark.parametrize(('version', 'precision', 'qdq', 'flags', 'network_flags'), [
    ('8.5.2.2', 'int8', True, ['FP16', 'INT8'], 1),
    ('10.3.0.30', 'fp16', False, ['FP16'], 0),
    ('10.3.0.30', 'fp32', True, ['INT8'], 0),
    ('11.0.0', 'int8', True, [], 0),
])
def test_build_engine_with_fake_tensorrt(fakes: tuple, tmp_path: Path, version: str,
                                         precision: str, qdq: bool, flags: list,
                                         network_flags: int) -> None:
    onnx = pytest.importorskip('onnx')
    from darknet53_ros.optimize.quantize import quantize_model

    from ..toy import smooth_images, toy_model

    _, trt = fakes
    calls: list = []
    make_fake_builder(trt, version, calls)
    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    if qdq:
        quantize_model(model, smooth_images(2), tmp_path / 'q.onnx', progress=False)
        model = tmp_path / 'q.onnx'
    out = tmp_path / 'engines' / 'toy.engine'
    meta = eb.build_engine(model, out, precision=precision, batch='1:2:4', workspace_mib=64,
                           timing_cache=tmp_path / 'timing.cache', progress=False,
                           dla_core=None if precision == 'fp32' else 1)
    assert out.read_bytes() == b'serialized engine'
    assert (tmp_path / 'timing.cache').read_bytes() == b'timing'
    assert [c[1] for c in calls if c[0] == 'flag'] == flags + (
        [] if precision == 'fp32' else ['GPU_FALLBACK'])
    assert ('network', network_flags) in calls and ('pool', 'WORKSPACE', 64 << 20) in calls
    assert ('profile', ('images', ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)))) in calls
    assert meta['tensorrt_version'] == version and meta['compute_capability'] == '8.7'
    assert meta['qdq'] is qdq and meta['batch'] == [1, 2, 4]
    assert meta['class_names'] == ['a', 'b'] and meta['gpu_name'] == 'FakeGPU'
    assert (meta['calibration_sha256'] is not None) is qdq
    assert meta['build_command'].startswith('darknet53 build-engine --model ')
    check_engine_metadata(out, expected={'onnx_sha256': sha256_file(model)},
                          runtime_info={'tensorrt_version': version,
                                        'compute_capability': (8, 7)})


def test_build_engine_fake_rejections(fakes: tuple, tmp_path: Path) -> None:
    onnx = pytest.importorskip('onnx')
    from ..toy import toy_model

    _, trt = fakes
    make_fake_builder(trt, '11.1.0', [])
    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    with pytest.raises(EngineError, match='strongly typed'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='fp16', progress=False)
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    make_fake_builder(trt, '10.3.0', [])
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    with pytest.raises(EngineError, match='DLA core 5'):
        eb.build_engine(model, tmp_path / 'a.engine', precision='fp16', dla_core=5,
                        progress=False)
