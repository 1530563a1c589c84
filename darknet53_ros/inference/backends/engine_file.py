"""The TensorRT engine file format: ``NAME.engine`` plus its ``NAME.engine.json`` metadata.

An engine only runs with the TensorRT version and the GPU (compute capability) it was built
with, so engines are built on the target device (a Jetson) from the ONNX model and cached.
Beside ``NAME.engine`` the builder (:mod:`darknet53_ros.optimize.engine_builder`) writes
``NAME.engine.json``: TensorRT version, GPU name and compute capability, precision, input
name/shape and batch profile, class names, the ONNX and engine sha256, the calibration data
hash, creation time, package version and the exact ``darknet53 build-engine ...`` command.
:func:`check_engine_metadata` compares it with what the caller expects and with the running
system and raises :class:`EngineError` naming the field that differs and the command that
rebuilds the engine.

This module is what the TensorRT backend needs at load time: the metadata, version parsing
(numbers, never strings), :func:`require_tensorrt` and the process-wide :func:`trt_logger`.
TensorRT is imported lazily.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import hashlib
import json
import logging
from pathlib import Path
import re
import shlex
from typing import Any

from darknet53_ros.errors import ConfigError, EngineError
from darknet53_ros.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    read_json_object,
    sha256_file,
)

_LOG = logging.getLogger(__name__)

METADATA_FORMAT = 1
DEFAULT_WORKSPACE_MIB = 1024
INSTALL_HINT = ('TensorRT is not installed; build engines on the target device (JetPack 5.1: '
                'TensorRT 8.5; JetPack 6.1/6.2: TensorRT 10.3; JetPack 7.0-7.2.1: TensorRT '
                '10.x; TensorRT 11.4.1+ only from JetPack 7.2.2, 11.0-11.4.0 support no '
                "JetPack), where JetPack's python3-libnvinfer provides the tensorrt module")

#: Metadata fields compared with the running system: a mismatch makes the engine unusable.
RUNTIME_FIELDS = ('tensorrt_version', 'compute_capability')
#: Metadata fields a caller may pin through ``expected``.
EXPECTABLE_FIELDS = ('precision', 'float_precision', 'input_name', 'input_shape', 'batch',
                     'class_names', 'onnx_sha256', 'calibration_sha256', 'dla_core',
                     'tensorrt_version', 'compute_capability', 'gpu_name')


# --------------------------------------------------------------------------------------------
# Versions and the build command (plain Python)


def parse_version(text: str) -> tuple[int, ...]:
    """Numeric version tuple from a version string: ``'10.3.0.30'`` -> ``(10, 3, 0, 30)``.

    Each dot-separated part contributes its leading digits; parsing stops at the first part
    without any (``'8.5.2.post1'`` -> ``(8, 5, 2)``).
    """
    parts = []
    for piece in str(text).strip().split('.'):
        match = re.match(r'\d+', piece)
        if match is None:
            break
        parts.append(int(match.group()))
    if not parts:
        raise ConfigError(f'version {text!r}: no number')
    return tuple(parts)


def version_at_least(version: str | Sequence[int], minimum: Sequence[int]) -> bool:
    """Whether ``version`` (string or tuple) is ``>= minimum``, compared numerically."""
    numbers = parse_version(version) if isinstance(version, str) else tuple(version)
    return numbers >= tuple(minimum)


def metadata_path(engine_path: str | Path) -> Path:
    """``NAME.engine`` -> ``NAME.engine.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + '.json')


def build_command(onnx_path: str | Path, out_path: str | Path, precision: str | None = None,
                  batch: Sequence[int] = (1, 1, 1), dla_core: int | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                  calib_source: str | Path | None = None,
                  timing_cache: str | Path | None = None) -> str:
    """The ``darknet53 build-engine`` command line that builds this engine."""
    args = ['darknet53', 'build-engine', '--model', str(onnx_path)]
    if precision is not None:  # None: the model's default (int8 for Q/DQ, else fp16)
        args += ['--precision', precision]
    args += ['--batch', ':'.join(str(int(b)) for b in batch)]
    if dla_core is not None:
        args += ['--dla-core', str(dla_core)]
    if workspace_mib != DEFAULT_WORKSPACE_MIB:
        args += ['--workspace', str(workspace_mib)]
    if calib_source is not None:
        args += ['--calib', str(calib_source)]
    if timing_cache is not None:
        args += ['--timing-cache', str(timing_cache)]
    args += ['-o', str(out_path)]
    return shlex.join(args)


# --------------------------------------------------------------------------------------------
# Metadata


def read_engine_metadata(engine_path: str | Path) -> dict[str, Any]:
    """Read ``NAME.engine.json``; :class:`EngineError` when missing or not valid JSON."""
    meta_file = metadata_path(engine_path)
    if not meta_file.is_file():
        raise EngineError(f'{meta_file}: engine metadata missing (engines are only used with '
                          'the metadata written by `darknet53 build-engine`)')
    return read_json_object(meta_file, EngineError, 'engine metadata')


def write_engine(out_path: str | Path, engine: bytes | bytearray | memoryview | Any,
                 metadata: Mapping[str, Any]) -> Path:
    """Write the engine and its metadata atomically and durably; returns the metadata path.

    ``engine`` is any buffer: TensorRT's ``IHostMemory`` is read through a ``memoryview``
    (hashed and written without copying the engine). The engine's sha256 and size are stored
    in the metadata, so a crash between the two renames leaves a pair that
    :func:`check_engine_metadata` rejects rather than a silently wrong engine.
    """
    view = memoryview(engine).cast('B')
    data = dict(metadata)
    data['engine_sha256'] = hashlib.sha256(view).hexdigest()
    data['engine_bytes'] = len(view)
    data.setdefault('format', METADATA_FORMAT)
    atomic_write_bytes(out_path, view)
    return write_metadata(out_path, data)


def write_metadata(engine_path: str | Path, metadata: Mapping[str, Any]) -> Path:
    """(Re)write ``NAME.engine.json`` atomically (used to record a later verification)."""
    meta_file = metadata_path(engine_path)
    atomic_write_text(meta_file, json.dumps(dict(metadata), indent=2) + '\n')
    return meta_file


def _normalise(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ('input_shape', 'batch', 'class_names'):
        return list(value)
    if name == 'compute_capability':
        if isinstance(value, (tuple, list)):
            return '.'.join(str(int(v)) for v in value)
        return str(value)
    if name == 'tensorrt_version':  # numeric, trailing zeros ignored: 10.3 == 10.3.0.0
        numbers = list(parse_version(str(value)))
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers.pop()
        return '.'.join(str(v) for v in numbers)
    return value


def rebuild_command(engine_path: str | Path, metadata: Mapping[str, Any] | None = None) -> str:
    """The command that rebuilds ``engine_path`` (from its metadata when readable)."""
    if metadata and metadata.get('build_command'):
        return str(metadata['build_command'])
    return build_command('MODEL.onnx', engine_path)


def check_engine_metadata(engine_path: str | Path, expected: Mapping[str, Any] | None = None,
                          runtime_info: Mapping[str, Any] | None = None,
                          verify_hash: bool = True) -> dict[str, Any]:
    """Check that ``engine_path`` may be used; return its metadata.

    Args:
        engine_path: the ``.engine`` file (its metadata is ``NAME.engine.json``).
        expected: fields the caller requires (any of :data:`EXPECTABLE_FIELDS`), for example
            ``{'onnx_sha256': ..., 'class_names': [...], 'precision': 'int8'}``.
        runtime_info: the running system: ``tensorrt_version`` and ``compute_capability``
            (``'8.7'`` or ``(8, 7)``), optionally ``gpu_name`` (a different name with the same
            compute capability only logs a warning).
        verify_hash: compare the engine file's sha256 with the metadata.

    Raises:
        EngineError: naming the field that differs, expected and found values, and the exact
            ``darknet53 build-engine ...`` command that rebuilds the engine.
    """
    path = Path(engine_path)
    if not path.is_file():
        raise EngineError(f'{path}: engine file not found. Build it on this device with:\n  '
                          f'{_command_for_missing(path)}')
    try:
        metadata = read_engine_metadata(path)
    except EngineError as exc:
        raise EngineError(f'{exc}. Rebuild it with:\n  {rebuild_command(path)}') from exc
    command = rebuild_command(path, metadata)

    def fail(field: str, want: Any, found: Any, why: str = '') -> None:
        raise EngineError(
            f'{path}: engine metadata field {field!r} differs: expected {want!r}, found '
            f'{found!r}{why} ({metadata_path(path).name}). Rebuild it with:\n  {command}')

    if metadata.get('format') != METADATA_FORMAT:
        fail('format', METADATA_FORMAT, metadata.get('format'))
    if verify_hash and metadata.get('engine_sha256'):
        actual = sha256_file(path)
        if actual != metadata['engine_sha256']:
            fail('engine_sha256', metadata['engine_sha256'], actual,
                 ' (the engine file changed after it was built)')
    for field, want in (expected or {}).items():
        if field not in EXPECTABLE_FIELDS:
            raise ConfigError(f'expected engine field {field!r}: not one of {EXPECTABLE_FIELDS}')
        if want is None:
            continue
        if _normalise(field, want) != _normalise(field, metadata.get(field)):
            fail(field, _normalise(field, want), metadata.get(field))
    info = dict(runtime_info or {})
    for field in RUNTIME_FIELDS:
        if info.get(field) is None:
            continue
        if metadata.get(field) is None:
            _LOG.warning('%s: metadata has no %s (pycuda was missing at build time); '
                         'cannot check it', path, field)
            continue
        found = _normalise(field, metadata.get(field))
        if _normalise(field, info[field]) != found:
            fail(field, _normalise(field, info[field]), metadata.get(field),
                 ' (engines only run with the TensorRT version and GPU they were built for)')
    gpu = info.get('gpu_name')
    if gpu and metadata.get('gpu_name') and gpu != metadata['gpu_name']:
        _LOG.warning('%s: built on %s, running on %s (same compute capability): it runs, '
                     'but rebuilding may be faster: %s', path, metadata['gpu_name'], gpu,
                     command)
    return metadata


def _command_for_missing(path: Path) -> str:
    try:
        return rebuild_command(path, read_engine_metadata(path))
    except EngineError:
        return rebuild_command(path)


# --------------------------------------------------------------------------------------------
# TensorRT (lazy)


def tensorrt_available() -> bool:
    """Whether the real TensorRT Python module can be imported (type stubs alone do not count:
    ``tensorrt-stubs`` installs an importable, empty ``tensorrt`` namespace)."""
    try:
        require_tensorrt()
    except EngineError:
        return False
    return True


def require_tensorrt() -> tuple[int, ...]:
    """Import TensorRT; return its numeric version or raise :class:`EngineError`."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(INSTALL_HINT) from exc
    version = getattr(trt, '__version__', None)
    if not version or not hasattr(trt, 'Builder'):
        raise EngineError(INSTALL_HINT + ' (only an empty tensorrt package, such as the type '
                          'stubs, is importable here)')
    return parse_version(version)


class _LogAdapter:
    """Creates a ``trt.ILogger`` forwarding to Python logging."""

    @staticmethod
    def make() -> Any:
        import tensorrt as trt

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                    _LOG.error('TensorRT: %s', msg)
                elif severity == trt.ILogger.WARNING:
                    _LOG.warning('TensorRT: %s', msg)
                elif severity == trt.ILogger.INFO:
                    _LOG.debug('TensorRT: %s', msg)

        return Logger()


_TRT_LOGGER: Any = None


def trt_logger() -> Any:
    """One process-wide TensorRT logger (TensorRT wants a single logger instance)."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = _LogAdapter.make()
    return _TRT_LOGGER


# --------------------------------------------------------------------------------------------
# Recorded verification (darknet53 build-engine --verify / verify-engine)

#: An engine agrees with its ONNX model when at least this share of detections match and the
#: matched boxes overlap at least this much on average.
AGREEMENT = {'match_rate': 0.9, 'mean_iou': 0.85}


def verification_status(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """``(level, message)`` about an engine's recorded verification, for logs at start:
    ``('warning', ...)`` when never verified or disagreeing, else ``('info', ...)``."""
    record = metadata.get('verification')
    if not isinstance(record, Mapping):
        return ('warning', 'engine never verified against its ONNX model: run `darknet53 '
                'verify-engine ENGINE` (or build with --verify) on this device')
    detections = record.get('detections') or {}
    outputs = record.get('outputs') or {}
    diffs = ', '.join(f"{name} max|d| {values.get('max_abs_diff', float('nan')):.3g}"
                      for name, values in sorted(outputs.items()))
    rate, iou = detections.get('match_rate'), detections.get('mean_iou')
    total = max(detections.get('engine', 0), detections.get('reference', 0))
    rate_text = 'n/a' if rate is None else f'{rate:.0%}'
    iou_text = 'n/a' if iou is None else f'{iou:.3f}'
    summary = (f"verified {record.get('verified_at', '?')} on {record.get('source', '?')}: "
               f"{detections.get('matched', 0)}/{total} detections matched ({rate_text}), "
               f'mean IoU {iou_text}; {diffs}')
    agrees = record.get('agrees')
    if agrees is None:
        agrees = (rate is not None and rate >= AGREEMENT['match_rate']
                  and (iou is None or iou >= AGREEMENT['mean_iou']))
    if not agrees:
        return ('warning', 'engine DISAGREES with its ONNX model beyond the threshold '
                f"(match rate >= {AGREEMENT['match_rate']:.0%}, mean IoU >= "
                f"{AGREEMENT['mean_iou']}): {summary}")
    return ('info', f'engine agrees with its ONNX model: {summary}')
