"""TensorRT engine builder: ONNX model -> ``NAME.engine`` + ``NAME.engine.json``.

The engine file format and its checks are
:mod:`darknet53_ros.inference.backends.engine_file`'s; :func:`load_or_rebuild` rebuilds an
engine whose metadata no longer matches on request.

TensorRT is imported lazily, only by :func:`build_engine`. The same code targets JetPack 5
(TensorRT 8.5), JetPack 6 (10.3) and JetPack 7 (11.x); version checks compare parsed numbers,
never strings:

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
import json
import logging
from pathlib import Path
import threading
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError, ConfigError, EngineError
from darknet53_ros.fileio import atomic_write_bytes, sha256_file
from darknet53_ros.inference.backends.cuda_runtime import CudaContext, device_info
from darknet53_ros.inference.backends.engine_file import (
    DEFAULT_WORKSPACE_MIB,
    METADATA_FORMAT,
    build_command,
    check_engine_metadata,
    metadata_path,
    read_engine_metadata,
    require_tensorrt,
    trt_logger,
    write_engine,
)
from darknet53_ros.inference.preprocess import preprocess
from darknet53_ros.optimize.calibration import (
    calibration_hash,
    calibration_images,
    image_digest,
)
from darknet53_ros.progress import progress_bar
from darknet53_ros.version import __version__

_LOG = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'int8')


# --------------------------------------------------------------------------------------------
# Build settings and rebuilds


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
# Building (TensorRT, lazy)


def _progress_monitor(enabled: bool) -> Any:
    """A ``trt.IProgressMonitor`` showing build phases as progress bars (TensorRT >= 10),
    else ``None``."""
    import tensorrt as trt

    if not enabled or not hasattr(trt, 'IProgressMonitor'):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tuple[Any, list[int]]] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None,
                        num_steps: int) -> None:
            with self._lock:
                self._bars[phase_name] = (progress_bar(True, phase_name, num_steps), [0])

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                entry = self._bars.get(phase_name)
                if entry is not None:
                    bar, done = entry
                    bar.update(step + 1 - done[0])
                    done[0] = step + 1
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                entry = self._bars.pop(phase_name, None)
                if entry is not None:
                    entry[0].close()

    return Monitor()


def calibration_batches(source: str | Path, width: int, height: int, batch_size: int,
                        count: int | None = None) -> Iterator[np.ndarray]:
    """Preprocessed ``[batch, 3, H, W]`` float32 batches from a calibration source.

    A last incomplete batch is dropped (TensorRT's calibration profile has a fixed batch).
    """
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
