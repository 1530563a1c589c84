"""Tests for the engine file format (darknet53_ros.inference.backends.engine_file: versions,
metadata checks) and the builder's plain parts (darknet53_ros.optimize.engine_builder: batch
profiles, ONNX summary, rebuilds, validation before TensorRT) (no TensorRT)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from darknet53_ros.errors import ConfigError, EngineError
from darknet53_ros.inference.backends import engine_file as ef
from darknet53_ros.optimize import engine_builder as eb

RUNTIME = {'tensorrt_version': '10.3.0', 'compute_capability': (8, 7), 'gpu_name': 'Orin'}


def _write(tmp_path: Path, name: str = 'model.engine', data: bytes = b'dummy engine',
           **fields: object) -> Path:
    path = tmp_path / name
    metadata = {
        'tensorrt_version': '10.3.0', 'gpu_name': 'Orin', 'compute_capability': '8.7',
        'precision': 'int8', 'input_name': 'images', 'input_shape': [3, 416, 416],
        'batch': [1, 2, 4], 'class_names': ['a', 'b'], 'onnx_sha256': 'abc',
        'calibration_sha256': 'cal', 'onnx_path': 'm.onnx',
        'build_command': ef.build_command('m.onnx', path, 'int8', (1, 2, 4)),
    }
    metadata.update(fields)
    ef.write_engine(path, data, metadata)
    return path


@pytest.mark.parametrize(('text', 'expected'), [
    ('8.5.2.2', (8, 5, 2, 2)), ('10.3.0', (10, 3, 0)), ('11.0.0a1', (11, 0, 0)),
    ('8.6.1.post1', (8, 6, 1)), (' 9 ', (9,))])
def test_parse_version(text: str, expected: tuple) -> None:
    assert ef.parse_version(text) == expected


def test_version_comparison_is_numeric() -> None:
    assert ef.version_at_least('10.3.0', (9,))  # '10' < '9' as strings
    assert not ef.version_at_least('8.5.2', (8, 6))
    assert ef.version_at_least((11, 0), (11,))
    with pytest.raises(ConfigError):
        ef.parse_version('abc')


@pytest.mark.parametrize(('text', 'expected'), [
    ('1:4:8', (1, 4, 8)), ('2', (2, 2, 2)), (3, (3, 3, 3)), ((1, 1, 2), (1, 1, 2))])
def test_parse_batch(text: object, expected: tuple) -> None:
    assert eb.parse_batch(text) == expected


@pytest.mark.parametrize('text', ['4:2:8', '0:1:1', '1:2', 'a:b:c', '1:2:3:4'])
def test_parse_batch_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match='batch'):
        eb.parse_batch(text)


def test_build_command_quotes_and_defaults() -> None:
    cmd = ef.build_command('my model.onnx', 'engines/x.engine', 'int8', (1, 2, 4), dla_core=0,
                            calib_source='imgs', timing_cache='t.cache')
    assert cmd == ("darknet53 build-engine --model 'my model.onnx' --precision int8 --batch "
                   '1:2:4 --dla-core 0 --calib imgs --timing-cache t.cache -o engines/x.engine')
    assert '--workspace' not in cmd
    assert ef.metadata_path('engines/x.engine') == Path('engines/x.engine.json')


def test_metadata_roundtrip_and_valid_check(tmp_path: Path) -> None:
    path = _write(tmp_path)
    data = json.loads(ef.metadata_path(path).read_text())
    assert data['format'] == ef.METADATA_FORMAT and len(data['engine_sha256']) == 64
    meta = ef.check_engine_metadata(path, expected={'precision': 'int8', 'batch': (1, 2, 4),
                                                     'class_names': ('a', 'b')},
                                     runtime_info=RUNTIME)
    assert meta['onnx_sha256'] == 'abc'
    assert not list(tmp_path.glob('.*.tmp'))  # atomic writes leave no temporaries


@pytest.mark.parametrize(('field', 'value', 'found'), [
    ('precision', 'fp16', 'int8'), ('onnx_sha256', 'zzz', 'abc'),
    ('class_names', ['a', 'c'], "['a', 'b']"), ('calibration_sha256', 'x', 'cal')])
def test_expected_field_mismatch_names_field_and_command(tmp_path: Path, field: str,
                                                         value: object, found: str) -> None:
    path = _write(tmp_path)
    with pytest.raises(EngineError) as info:
        ef.check_engine_metadata(path, expected={field: value}, runtime_info=RUNTIME)
    message = str(info.value)
    assert repr(field) in message and found in message
    assert f'darknet53 build-engine --model m.onnx --precision int8 --batch 1:2:4 -o {path}' \
        in message


def test_runtime_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(EngineError, match="'tensorrt_version'.*expected '10.4'"):
        ef.check_engine_metadata(path, runtime_info={**RUNTIME, 'tensorrt_version': '10.4'})
    with pytest.raises(EngineError, match="'compute_capability'.*expected '7.2'.*'8.7'"):
        ef.check_engine_metadata(path, runtime_info={**RUNTIME, 'compute_capability': (7, 2)})
    ef.check_engine_metadata(path, runtime_info={'tensorrt_version': '10.3.0.0'})


def test_other_gpu_same_capability_only_warns(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path)
    with caplog.at_level(logging.WARNING):
        ef.check_engine_metadata(path, runtime_info={**RUNTIME, 'gpu_name': 'Orin NX'})
    assert 'Orin NX' in caplog.text


def test_changed_missing_or_corrupt(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_bytes(b'other engine')
    with pytest.raises(EngineError, match='engine_sha256.*changed'):
        ef.check_engine_metadata(path)
    ef.check_engine_metadata(path, verify_hash=False)
    ef.metadata_path(path).write_text('{not json')
    with pytest.raises(EngineError, match='(?s)cannot read engine metadata.*Rebuild it with'):
        ef.check_engine_metadata(path)
    ef.metadata_path(path).unlink()
    with pytest.raises(EngineError, match='metadata missing'):
        ef.check_engine_metadata(path)
    with pytest.raises(EngineError, match='(?s)not found.*darknet53 build-engine'):
        ef.check_engine_metadata(tmp_path / 'absent.engine')
    with pytest.raises(ConfigError, match='bogus'):
        ef.check_engine_metadata(_write(tmp_path, 'b.engine'), expected={'bogus': 1})


def test_load_or_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, tensorrt_version='8.5.2')
    with pytest.raises(EngineError, match='tensorrt_version'):
        eb.load_or_rebuild(path, runtime_info=RUNTIME)
    calls = []

    def fake_build(onnx_path: object, out_path: object, **kwargs: object) -> dict:
        calls.append((onnx_path, kwargs))
        _write(tmp_path, Path(str(out_path)).name, data=b'rebuilt')
        return {}

    monkeypatch.setattr(eb, 'build_engine', fake_build)
    meta = eb.load_or_rebuild(path, rebuild=True, runtime_info=RUNTIME, workspace_mib=256)
    assert meta['tensorrt_version'] == '10.3.0' and path.read_bytes() == b'rebuilt'
    onnx_path, kwargs = calls[0]
    assert onnx_path == 'm.onnx' and kwargs['precision'] == 'int8'
    assert kwargs['batch'] == (1, 2, 4) and kwargs['workspace_mib'] == 256
    assert eb.load_or_rebuild(path, rebuild=True, runtime_info=RUNTIME) == meta
    assert len(calls) == 1  # valid engine: no rebuild


def test_onnx_summary(tmp_path: Path) -> None:
    onnx = pytest.importorskip('onnx')
    from ..toy import toy_model

    path = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(path))
    info = eb.onnx_summary(path)
    assert info['input_name'] == 'images' and info['input_shape'] == [3, 32, 32]
    assert info['class_names'] == ['a', 'b'] and not info['qdq'] and not info['fp16']
    assert info['model_metadata']['classes'] == '2' and len(info['onnx_sha256']) == 64


def test_without_tensorrt_build_fails_clearly(tmp_path: Path) -> None:
    if ef.tensorrt_available():
        pytest.skip('TensorRT is installed here')
    with pytest.raises(EngineError, match='TensorRT is not installed; build engines on the '
                       'target device'):
        ef.require_tensorrt()
    with pytest.raises(EngineError, match='JetPack'):
        eb.build_engine(tmp_path / 'm.onnx', tmp_path / 'm.engine')
    from darknet53_ros.cli.main import main
    assert main(['build-engine', '--model', str(tmp_path / 'm.onnx'), '-o',
                 str(tmp_path / 'm.engine')]) == 2


def test_build_engine_validates_before_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='precision'):
        eb.build_engine('m.onnx', 'm.engine', precision='int4')
    with pytest.raises(ConfigError, match='DLA'):
        eb.build_engine('m.onnx', 'm.engine', precision='fp32', dla_core=0)
    with pytest.raises(ConfigError, match='workspace'):
        eb.build_engine('m.onnx', 'm.engine', workspace_mib=0)


# --------------------------------------------------------------------------------------------
# Build plans per TensorRT version (no TensorRT), Python support, durable writes


@pytest.mark.parametrize(('version', 'qdq', 'requested', 'precision', 'strong', 'flags'), [
    ((8, 5, 2), True, None, 'int8', False, ('FP16', 'INT8')),
    ((10, 3), True, None, 'int8', False, ('FP16', 'INT8')),
    ((10, 11), True, 'fp32', 'int8', False, ('INT8',)),
    ((10, 12), True, None, 'int8', True, ()),
    ((11, 1), True, 'fp16', 'int8', True, ()),
    ((8, 5, 2), False, None, 'fp16', False, ('FP16',)),
    ((11, 4, 1), False, 'fp32', 'fp32', True, ()),
])
def test_plan_build(version: tuple, qdq: bool, requested: str | None, precision: str,
                    strong: bool, flags: tuple) -> None:
    from darknet53_ros.optimize.engine_plan import plan_build

    plan = plan_build(version, requested, qdq, False)
    assert plan.precision == precision and plan.strongly_typed is strong
    assert plan.builder_flags == flags
    assert plan.network_flags == (('EXPLICIT_BATCH',) if version < (10,) else
                                  ('STRONGLY_TYPED',) if strong and version < (11,) else ())
    assert plan.pin_decode_fp32 is ('FP16' in flags)


def test_plan_build_rejections_and_dla() -> None:
    from darknet53_ros.optimize.engine_plan import plan_build

    with pytest.raises(EngineError, match='strongly typed'):
        plan_build((11, 1), 'fp16', False, False)
    assert plan_build((11, 1), 'fp16', False, True).precision == 'fp16'  # FP16 ONNX model
    with pytest.raises(EngineError, match='darknet53 quantize'):
        plan_build((11, 1), 'int8', False, False, calibrate=True)
    assert plan_build((10, 3), 'int8', False, False, calibrate=True).legacy_int8
    with pytest.raises(ConfigError, match='fixed batch'):
        plan_build((10, 3), None, True, False, dla_core=0, batch=(1, 2, 4))
    with pytest.raises(EngineError, match='11.4.1'):
        plan_build((11, 3), None, True, False, dla_core=0, batch=(2, 2, 2))
    dla = plan_build((11, 4, 1), None, True, False, dla_core=0, batch=(2, 2, 2))
    assert dla.builder_flags == ('GPU_FALLBACK',)


def test_training_needs_python_310() -> None:
    from darknet53_ros.errors import require_python

    require_python('training', current=(3, 10, 0))
    with pytest.raises(ConfigError, match=r'(?s)training needs Python 3\.10\+.*3\.8\.18'):
        require_python('training', current=(3, 8, 18))


def test_engine_written_from_buffer_and_fsynced(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    class NoCopy(bytearray):
        def __bytes__(self) -> bytes:
            raise AssertionError('copied')

    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    path = tmp_path / 'sub' / 'x.engine'
    ef.write_engine(path, NoCopy(b'engine bytes'), {'precision': 'int8'})
    assert path.read_bytes() == b'engine bytes'
    assert synced == [False, True, False, True]  # engine file + folder, metadata + folder
    meta = ef.read_engine_metadata(path)
    assert meta['engine_bytes'] == 12 and ef.check_engine_metadata(path)['precision'] == 'int8'
