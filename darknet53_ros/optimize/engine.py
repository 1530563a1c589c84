"""TensorRT engine builder and the metadata file that validates a cached engine.

An engine only runs with the TensorRT version and the GPU (compute capability) it was built
with, so engines are built on the target device (a Jetson) from the ONNX model and cached.
Beside ``NAME.engine`` the builder writes ``NAME.engine.json``: TensorRT version, GPU name and
compute capability, precision, input name/shape and batch profile, class names, the ONNX and
engine sha256, the calibration data hash, creation time, package version and the exact
``darknet53 build-engine ...`` command. :func:`check_engine_metadata` compares it with what the
caller expects and with the running system and raises :class:`EngineError` naming the field
that differs and the command that rebuilds the engine; :func:`load_or_rebuild` rebuilds on
request.

TensorRT is imported lazily and only by :func:`build_engine` (and the TensorRT backend). The
same code targets JetPack 5 (TensorRT 8.5), JetPack 6 (10.3) and JetPack 7 (11.x); version
checks compare parsed numbers, never strings:

* networks are created with ``EXPLICIT_BATCH`` only before TensorRT 10 (10 ignores it);
* Q/DQ (explicitly quantised) models set the INT8 flag plus FP16 for the layers left in
  floating point before TensorRT 11; TensorRT 11 builds strongly typed networks only, so no
  precision flags exist and ``fp16`` needs an FP16 ONNX model;
* an FP32 model with ``precision='int8'`` and a calibration source uses the legacy
  ``IInt8EntropyCalibrator2`` with a calibration cache (TensorRT < 11 only);
* ``IProgressMonitor`` reports build progress where it exists (TensorRT >= 10).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import contextlib
import datetime
import hashlib
import json
import logging
from pathlib import Path
import re
import shlex
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError, ConfigError, EngineError

_LOG = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'int8')
METADATA_FORMAT = 1
DEFAULT_WORKSPACE_MIB = 1024
INSTALL_HINT = ('TensorRT is not installed; build engines on the target device (JetPack 5: '
                'TensorRT 8.5, JetPack 6: TensorRT 10.3, JetPack 7: TensorRT 11), where '
                "JetPack's python3-libnvinfer provides the tensorrt module")

#: Metadata fields compared with the running system: a mismatch makes the engine unusable.
RUNTIME_FIELDS = ('tensorrt_version', 'compute_capability')
#: Metadata fields a caller may pin through ``expected``.
EXPECTABLE_FIELDS = ('precision', 'input_name', 'input_shape', 'batch', 'class_names',
                     'onnx_sha256', 'calibration_sha256', 'dla_core', 'tensorrt_version',
                     'compute_capability', 'gpu_name')


# --------------------------------------------------------------------------------------------
# Versions and parameters (plain Python)


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


def parse_batch(text: str | int | Sequence[int]) -> tuple[int, int, int]:
    """``'MIN:OPT:MAX'`` (or one number for a fixed batch) -> ``(min, opt, max)``."""
    if isinstance(text, int):
        values: list[int] = [text]
    elif isinstance(text, str):
        try:
            values = [int(v) for v in text.split(':')]
        except ValueError as exc:
            raise ConfigError(f'batch {text!r}: expected MIN:OPT:MAX integers') from exc
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f'batch {text!r}: expected MIN:OPT:MAX or one number')
    low, opt, high = values
    if not 1 <= low <= opt <= high:
        raise ConfigError(f'batch {text!r}: need 1 <= MIN <= OPT <= MAX')
    return low, opt, high


def metadata_path(engine_path: str | Path) -> Path:
    """``NAME.engine`` -> ``NAME.engine.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + '.json')


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def build_command(onnx_path: str | Path, out_path: str | Path, precision: str = 'fp16',
                  batch: Sequence[int] = (1, 1, 1), dla_core: int | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                  calib_source: str | Path | None = None,
                  timing_cache: str | Path | None = None) -> str:
    """The ``darknet53 build-engine`` command line that builds this engine."""
    args = ['darknet53', 'build-engine', '--model', str(onnx_path), '--precision', precision,
            '--batch', ':'.join(str(int(b)) for b in batch)]
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
    try:
        data = json.loads(meta_file.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f'{meta_file}: unreadable engine metadata: {exc}') from exc
    if not isinstance(data, dict):
        raise EngineError(f'{meta_file}: engine metadata is not a JSON object')
    return data


def write_engine(out_path: str | Path, engine: bytes, metadata: Mapping[str, Any]) -> Path:
    """Write the engine and its metadata atomically; returns the metadata path.

    The engine's sha256 is stored in the metadata, so a crash between the two renames leaves a
    pair that :func:`check_engine_metadata` rejects rather than a silently wrong engine.
    """
    from darknet53_ros.fileio import atomic_write_bytes, atomic_write_text

    data = dict(metadata)
    data['engine_sha256'] = hashlib.sha256(engine).hexdigest()
    data.setdefault('format', METADATA_FORMAT)
    atomic_write_bytes(out_path, engine)
    meta_file = metadata_path(out_path)
    atomic_write_text(meta_file, json.dumps(data, indent=2) + '\n')
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


def load_or_rebuild(engine_path: str | Path, onnx_path: str | Path | None = None,
                    rebuild: bool = False, expected: Mapping[str, Any] | None = None,
                    runtime_info: Mapping[str, Any] | None = None,
                    **build_kwargs: Any) -> dict[str, Any]:
    """Validate ``engine_path``; when invalid and ``rebuild`` is set, rebuild it.

    The rebuild uses ``onnx_path`` (or the metadata's ``onnx_path``) and the build settings
    recorded in the metadata, overridden by ``build_kwargs`` (see :func:`build_engine`).
    Returns the (new) metadata.
    """
    try:
        return check_engine_metadata(engine_path, expected, runtime_info)
    except EngineError as exc:
        if not rebuild:
            raise
        _LOG.warning('%s; rebuilding', str(exc).split('. Rebuild it with')[0])
        try:
            old = read_engine_metadata(engine_path)
        except EngineError:
            old = {}
    model = onnx_path or old.get('onnx_path')
    if not model:
        raise EngineError(f'{engine_path}: cannot rebuild: no ONNX model given and none '
                          'recorded in the metadata')
    settings: dict[str, Any] = {
        'precision': old.get('precision', 'fp16'),
        'batch': tuple(old.get('batch', (1, 1, 1))),
        'dla_core': old.get('dla_core'),
        'workspace_mib': old.get('workspace_mib', DEFAULT_WORKSPACE_MIB),
        'calib_source': old.get('calib_source'),
        'timing_cache': old.get('timing_cache'),
    }
    settings.update(build_kwargs)
    build_engine(model, engine_path, **settings)
    return check_engine_metadata(engine_path, expected, runtime_info)


# --------------------------------------------------------------------------------------------
# ONNX inspection (onnx only, no TensorRT)


def onnx_summary(onnx_path: str | Path) -> dict[str, Any]:
    """Input name/shape, class names, whether it is Q/DQ, calibration hash, sha256."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise EngineError(f'{path}: ONNX model not found')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise EngineError(f'{path}: cannot read ONNX model: {exc}') from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise EngineError(f'{path}: expected one input, found {[i.name for i in inputs]}')
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [int(d.dim_value) if d.dim_value > 0 else -1 for d in dims]
    if len(shape) != 4 or min(shape[1:]) <= 0:
        raise EngineError(f'{path}: input {inputs[0].name!r} shape {shape}: expected '
                          '[batch, C, H, W] with fixed C, H, W')
    props = {p.key: p.value for p in model.metadata_props}
    try:
        names = json.loads(props['names']) if 'names' in props else None
    except json.JSONDecodeError as exc:
        raise EngineError(f'{path}: metadata "names" is not JSON') from exc
    quant = {}
    if 'quantization' in props:
        try:
            quant = json.loads(props['quantization'])
        except json.JSONDecodeError:
            quant = {}
    qdq = any(n.op_type in ('QuantizeLinear', 'DequantizeLinear') for n in model.graph.node)
    fp16 = inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 or any(
        i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    return {
        'input_name': inputs[0].name,
        'input_shape': shape[1:],
        'class_names': names,
        'qdq': qdq,
        'fp16': fp16,
        'calibration_sha256': quant.get('calibration_sha256'),
        'onnx_sha256': sha256_file(path),
        'model_metadata': {k: v for k, v in props.items() if k != 'quantization'},
    }


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


def _progress_monitor(enabled: bool) -> Any:
    """A ``trt.IProgressMonitor`` printing phases with tqdm (TensorRT >= 10), else ``None``."""
    import tensorrt as trt

    if not enabled or not hasattr(trt, 'IProgressMonitor'):
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the extras
        return None
    import threading

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None,
                        num_steps: int) -> None:
            with self._lock:
                depth = 0 if parent_phase is None else 1
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=False,
                                              position=depth)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


def calibration_batches(source: str | Path, width: int, height: int, batch_size: int,
                        count: int | None = None) -> Iterator[np.ndarray]:
    """Preprocessed ``[batch, 3, H, W]`` float32 batches from a calibration source.

    A last incomplete batch is dropped (TensorRT's calibration profile has a fixed batch).
    """
    from darknet53_ros.inference.preprocess import preprocess
    from darknet53_ros.optimize.calibration import calibration_images

    buffer: list[np.ndarray] = []
    for i, item in enumerate(calibration_images(source)):
        if count is not None and i >= count:
            break
        buffer.append(item.image)
        if len(buffer) == batch_size:
            batch, _ = preprocess(buffer, width, height)
            yield np.ascontiguousarray(batch)
            buffer = []


def calibration_source_hash(source: str | Path, count: int | None = None) -> str:
    """sha256 over the pixel digests of the images a calibration source yields."""
    from darknet53_ros.optimize.calibration import calibration_images, image_digest
    from darknet53_ros.optimize.quantize import calibration_hash

    digests = []
    for i, item in enumerate(calibration_images(source)):
        if count is not None and i >= count:
            break
        digests.append(image_digest(item.image))
    if not digests:
        raise EngineError(f'{source}: no calibration images')
    return calibration_hash(digests)


def _entropy_calibrator(batches: Iterator[np.ndarray], batch_size: int, nbytes: int,
                        cache_path: Path) -> Any:
    """A legacy ``IInt8EntropyCalibrator2`` (TensorRT < 11) feeding ``batches`` via pycuda.

    Needs a current CUDA context (the caller builds inside :meth:`CudaContext.scope`).
    """
    import pycuda.driver as cuda
    import tensorrt as trt

    from darknet53_ros.fileio import atomic_write_bytes

    base = trt.IInt8EntropyCalibrator2

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.device = cuda.mem_alloc(nbytes)
            self.count = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = next(batches)
            except StopIteration:
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(batch, np.float32))
            self.count += len(batch)
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.is_file():
                _LOG.info('using calibration cache %s', cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

        def free(self) -> None:
            self.device.free()

    return Calibrator()


def _gpu_info(device: int) -> dict[str, Any]:
    try:
        from darknet53_ros.inference.backends.cuda_runtime import device_info
        name, capability = device_info(device)
        return {'gpu_name': name, 'compute_capability': f'{capability[0]}.{capability[1]}'}
    except Exception as exc:
        _LOG.warning('cannot query GPU %d through pycuda (%s): metadata lacks the GPU', device,
                     exc)
        return {'gpu_name': None, 'compute_capability': None}


def build_engine(onnx_path: str | Path, out_path: str | Path, precision: str = 'fp16',
                 dla_core: int | None = None, batch: str | int | Sequence[int] = (1, 1, 1),
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                 calib_source: str | Path | None = None, calib_count: int | None = 500,
                 calib_batch: int = 8, timing_cache: str | Path | None = None,
                 progress: bool = True, device: int = 0) -> dict[str, Any]:
    """Build a TensorRT engine from a contract ONNX model; write it with its metadata.

    Args:
        onnx_path: the ONNX model (FP32, or Q/DQ INT8 from ``darknet53 quantize``).
        out_path: the engine file (``engines/NAME.engine``); metadata goes to
            ``NAME.engine.json``.
        precision: ``'fp32'``, ``'fp16'`` or ``'int8'``. A Q/DQ model always builds INT8
            (``fp32``/``fp16`` choose the precision of the layers kept in floating point).
        dla_core: run on this DLA core with GPU fallback (needs fp16 or int8).
        batch: ``(min, opt, max)`` batch profile of input ``images`` (or ``'MIN:OPT:MAX'``).
        workspace_mib: builder workspace limit.
        calib_source: images for legacy implicit INT8 calibration of an FP32 model (TensorRT
            < 11); the calibration cache goes beside the engine.
        calib_count: at most this many calibration images.
        calib_batch: calibration batch size.
        timing_cache: timing cache file, loaded when present and saved after the build.
        progress: show build progress (TensorRT >= 10).
        device: CUDA device for the build.

    Returns:
        The metadata written beside the engine.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f'precision {precision!r}: expected one of {PRECISIONS}')
    profile_batch = parse_batch(batch)
    if workspace_mib < 1:
        raise ConfigError(f'workspace {workspace_mib} MiB: must be >= 1')
    if dla_core is not None and precision == 'fp32':
        raise ConfigError('DLA needs --precision fp16 or int8')
    version = require_tensorrt()
    import tensorrt as trt

    from darknet53_ros import __version__
    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    info = onnx_summary(onnx_path)
    out = Path(out_path)
    command = build_command(onnx_path, out, precision, profile_batch, dla_core, workspace_mib,
                            calib_source, timing_cache)
    strongly_typed = version >= (11,)
    legacy_int8 = precision == 'int8' and not info['qdq']
    if strongly_typed and precision == 'fp16' and not info['fp16']:
        raise EngineError(f'{onnx_path}: TensorRT {trt.__version__} builds strongly typed '
                          'networks only (no FP16 flag): convert the model to FP16 first, or '
                          'build with --precision fp32 or an INT8 Q/DQ model')
    if legacy_int8 and (strongly_typed or calib_source is None):
        raise EngineError(
            f'{onnx_path}: an FP32 model needs explicit quantisation for INT8: run '
            f'`darknet53 quantize --model {onnx_path} --calib IMAGES -o MODEL_int8.onnx` and '
            'build from the Q/DQ model' + ('' if strongly_typed else
                                           ' (or pass --calib for legacy calibration)'))

    channels, height, width = info['input_shape']
    calib_hash = info['calibration_sha256']
    if legacy_int8:
        assert calib_source is not None
        calib_hash = calibration_source_hash(calib_source, calib_count)

    logger = trt_logger()
    try:
        context: CudaContext | None = CudaContext(device)
    except BackendError:
        if legacy_int8:
            raise  # the legacy calibrator feeds batches through pycuda
        context = None  # TensorRT creates the primary context itself
    try:
        with context.scope() if context is not None else contextlib.nullcontext():
            gpu = _gpu_info(device)
            builder = trt.Builder(logger)
            flags = 0
            if version < (10,):
                flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse_from_file(str(onnx_path)):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise EngineError(f'{onnx_path}: TensorRT cannot parse the model:\n  '
                                  + '\n  '.join(errors or ['unknown parser error']))
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
            name = info['input_name']
            profile = builder.create_optimization_profile()
            low, opt, high = profile_batch
            profile.set_shape(name, trt.Dims4(low, channels, height, width),
                              trt.Dims4(opt, channels, height, width),
                              trt.Dims4(high, channels, height, width))
            config.add_optimization_profile(profile)
            if not strongly_typed:
                if precision in ('fp16', 'int8'):
                    config.set_flag(trt.BuilderFlag.FP16)
                if precision == 'int8' or info['qdq']:
                    config.set_flag(trt.BuilderFlag.INT8)
            calibrator = None
            if legacy_int8:
                calib_profile = builder.create_optimization_profile()
                shape = trt.Dims4(calib_batch, channels, height, width)
                calib_profile.set_shape(name, shape, shape, shape)
                config.set_calibration_profile(calib_profile)
                nbytes = calib_batch * channels * height * width * 4
                cache = out.with_name(f'{out.name}.{str(calib_hash)[:16]}.calib')
                assert calib_source is not None
                calibrator = _entropy_calibrator(
                    calibration_batches(calib_source, width, height, calib_batch, calib_count),
                    calib_batch, nbytes, cache)
                config.int8_calibrator = calibrator
            if dla_core is not None:
                if builder.num_DLA_cores <= dla_core:
                    raise EngineError(f'DLA core {dla_core}: this device has '
                                      f'{builder.num_DLA_cores} DLA core(s)')
                config.default_device_type = trt.DeviceType.DLA
                config.DLA_core = dla_core
                config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            cache_bytes = b''
            if timing_cache is not None and Path(timing_cache).is_file():
                cache_bytes = Path(timing_cache).read_bytes()
            timing = config.create_timing_cache(cache_bytes)
            if not config.set_timing_cache(timing, False):
                _LOG.warning('timing cache %s does not match this device; starting afresh',
                             timing_cache)
                config.set_timing_cache(config.create_timing_cache(b''), False)
            monitor = _progress_monitor(progress) if version >= (10,) else None
            if monitor is not None:
                config.progress_monitor = monitor
            _LOG.info('building %s engine from %s (TensorRT %s); this takes minutes',
                      precision, onnx_path, trt.__version__)
            serialized = builder.build_serialized_network(network, config)
            if calibrator is not None:
                calibrator.free()
            if serialized is None:
                raise EngineError(f'{onnx_path}: TensorRT failed to build the engine (see the '
                                  'TensorRT errors logged above)')
            if timing_cache is not None:
                from darknet53_ros.fileio import atomic_write_bytes
                atomic_write_bytes(timing_cache, bytes(memoryview(
                    config.get_timing_cache().serialize())))
            engine = bytes(memoryview(serialized))
    finally:
        if context is not None:
            context.close()

    metadata = {
        'format': METADATA_FORMAT,
        'tensorrt_version': str(trt.__version__),
        'gpu_name': gpu['gpu_name'],
        'compute_capability': gpu['compute_capability'],
        'precision': precision,
        'qdq': info['qdq'],
        'input_name': info['input_name'],
        'input_shape': info['input_shape'],
        'batch': list(profile_batch),
        'dla_core': dla_core,
        'workspace_mib': workspace_mib,
        'class_names': info['class_names'],
        'model_metadata': info['model_metadata'],
        'onnx_path': str(onnx_path),
        'onnx_sha256': info['onnx_sha256'],
        'calibration_sha256': calib_hash,
        'calib_source': None if calib_source is None else str(calib_source),
        'timing_cache': None if timing_cache is None else str(timing_cache),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'darknet53_ros_version': __version__,
        'build_command': command,
    }
    write_engine(out, engine, metadata)
    _LOG.info('wrote %s (%.1f MiB) and %s', out, len(engine) / 2**20, metadata_path(out).name)
    return read_engine_metadata(out)
