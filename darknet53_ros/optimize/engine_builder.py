"""TensorRT engine builder: ONNX model -> ``NAME.engine`` + ``NAME.engine.json``.

The engine file format and its checks are
:mod:`darknet53_ros.inference.backends.engine_file`'s; what each TensorRT version is asked to
do is :mod:`darknet53_ros.optimize.engine_plan`'s (decided without TensorRT, so every version's
rules are tested anywhere); :func:`load_or_rebuild` rebuilds an engine whose metadata no longer
matches on request; :mod:`darknet53_ros.optimize.engine_verify` checks a built engine against
ONNX Runtime.

TensorRT is imported lazily, only by :func:`build_engine`. One code path serves TensorRT 8.5
(JetPack 5.1), 10.x (JetPack 6.1/6.2 and 7.0-7.2.1, weak and strong typing) and 11.4.1+
(JetPack 7.2.2+). Resources are released in order: every TensorRT object (builder, network,
parser, config, serialized plan) goes before the CUDA context is closed, and the engine is
written from the serialized plan's buffer (no copy), fsynced with its folder.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextlib
import datetime
import json
import logging
from pathlib import Path
from typing import Any

from darknet53_ros.errors import BackendError, ConfigError, EngineError
from darknet53_ros.fileio import atomic_write_bytes, sha256_file
from darknet53_ros.inference.backends.cuda_runtime import AUTO, CudaContext
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
from darknet53_ros.optimize.engine_network import (
    calibration_batches,
    calibration_source_hash,
    decode_names,
    entropy_calibrator,
    pin_decode_fp32,
    progress_monitor,
)
from darknet53_ros.optimize.engine_plan import PRECISIONS, BuildPlan, check_dla, plan_build
from darknet53_ros.version import __version__

_LOG = logging.getLogger(__name__)

__all__ = ['PRECISIONS', 'build_engine', 'load_or_rebuild', 'onnx_summary', 'parse_batch']


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
        'precision': old.get('requested_precision', old.get('precision')),
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
    """Input name/shape, class names, whether it is Q/DQ or FP16, the decode part's names,
    calibration hash, sha256."""
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
        'decode': decode_names(model),
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


def _gpu_info(context: CudaContext | None, device: int) -> dict[str, Any]:
    if context is None:
        _LOG.warning('no CUDA runtime for Python (pycuda or cuda-python): metadata lacks the '
                     'GPU of device %d', device)
        return {'gpu_name': None, 'compute_capability': None}
    major, minor = context.driver.compute_capability(device)
    return {'gpu_name': context.driver.device_name(device),
            'compute_capability': f'{major}.{minor}'}


def build_engine(onnx_path: str | Path, out_path: str | Path, precision: str | None = None,
                 dla_core: int | None = None, batch: str | int | Sequence[int] = (1, 1, 1),
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                 calib_source: str | Path | None = None, calib_count: int | None = 500,
                 calib_batch: int = 8, timing_cache: str | Path | None = None,
                 progress: bool = True, device: int = 0,
                 cuda_runtime: str = AUTO) -> dict[str, Any]:
    """Build a TensorRT engine from a contract ONNX model; write it with its metadata.

    Args:
        onnx_path: the ONNX model (FP32, FP16, or Q/DQ INT8 from ``darknet53 quantize``).
        out_path: the engine file (``engines/NAME.engine``); metadata goes to
            ``NAME.engine.json``.
        precision: ``None`` (default: ``int8`` for a Q/DQ model, ``fp16`` otherwise),
            ``'fp32'``, ``'fp16'`` or ``'int8'``. A Q/DQ model always builds INT8; on weakly
            typed builds ``fp32``/``fp16`` choose the precision of its float layers.
        dla_core: run on this DLA core with GPU fallback (fixed batch, fp16 or int8).
        batch: ``(min, opt, max)`` batch profile of input ``images`` (or ``'MIN:OPT:MAX'``).
        workspace_mib: builder workspace limit.
        calib_source: images for legacy implicit INT8 calibration of an FP32 model (TensorRT
            < 11); the calibration cache goes beside the engine.
        calib_count: at most this many calibration images.
        calib_batch: calibration batch size.
        timing_cache: timing cache file, loaded when present and saved after the build.
        progress: show build progress (TensorRT >= 10).
        device: CUDA device for the build.
        cuda_runtime: ``auto``, ``pycuda`` or ``cuda-python``.

    Returns:
        The metadata written beside the engine (``precision`` is the engine's real one,
        ``float_precision`` that of the layers kept in floating point).
    """
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f'precision {precision!r}: expected one of {PRECISIONS}')
    profile_batch = parse_batch(batch)
    if workspace_mib < 1:
        raise ConfigError(f'workspace {workspace_mib} MiB: must be >= 1')
    if dla_core is not None and precision == 'fp32':
        raise ConfigError('DLA needs --precision fp16 or int8')
    check_dla(dla_core, profile_batch, (0,))
    version = require_tensorrt()
    import tensorrt as trt

    info = onnx_summary(onnx_path)
    plan = plan_build(version, precision, info['qdq'], info['fp16'], str(onnx_path),
                      calib_source is not None, dla_core, profile_batch)
    for note in plan.notes:
        _LOG.warning('%s: %s', onnx_path, note)
    out = Path(out_path)
    calib_hash = info['calibration_sha256']
    if plan.legacy_int8:
        assert calib_source is not None
        calib_hash = calibration_source_hash(calib_source, calib_count)
    try:
        context: CudaContext | None = CudaContext(device, cuda_runtime)
    except BackendError:
        if plan.legacy_int8 or cuda_runtime != AUTO:
            raise  # the legacy calibrator feeds batches through the CUDA runtime
        context = None  # TensorRT creates the primary context itself
    metadata = {
        'format': METADATA_FORMAT,
        'tensorrt_version': str(trt.__version__),
        **_gpu_info(context, device),
        'precision': plan.precision,
        'float_precision': plan.float_precision,
        'requested_precision': precision,
        'strongly_typed': plan.strongly_typed,
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
        'cuda_runtime': None if context is None else context.runtime,
        'verification': None,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'darknet53_ros_version': __version__,
        'build_command': build_command(onnx_path, out, precision, profile_batch, dla_core,
                                       workspace_mib, calib_source, timing_cache),
    }
    settings = {'workspace_mib': workspace_mib, 'batch': profile_batch, 'dla_core': dla_core,
                'calib_source': calib_source, 'calib_count': calib_count,
                'calib_batch': calib_batch, 'calib_hash': calib_hash,
                'timing_cache': timing_cache, 'progress': progress}
    try:
        with context.scope() if context is not None else contextlib.nullcontext():
            _build(trt, version, plan, onnx_path, out, info, settings, metadata, context)
    finally:
        if context is not None:
            context.close()  # after every TensorRT object of _build is gone
    return read_engine_metadata(out)


def _build(trt: Any, version: tuple[int, ...], plan: BuildPlan, onnx_path: str | Path,
           out: Path, info: Mapping[str, Any], settings: Mapping[str, Any],
           metadata: dict[str, Any], context: CudaContext | None) -> None:
    """Build and write the engine inside the CUDA context. Every TensorRT object lives in
    ``held`` and is dropped before this returns or raises (a traceback keeps the frame's
    variables, not ``held``'s cleared contents)."""
    held: dict[str, Any] = {}
    try:
        logger = trt_logger()
        held['builder'] = builder = trt.Builder(logger)
        flags = 0
        for name in plan.network_flags:
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        held['network'] = network = builder.create_network(flags)
        held['parser'] = parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f'{onnx_path}: TensorRT cannot parse the model:\n  '
                              + '\n  '.join(errors or ['unknown parser error']))
        held['config'] = config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                     settings['workspace_mib'] << 20)
        name = info['input_name']
        channels, height, width = info['input_shape']
        profile = builder.create_optimization_profile()
        low, opt, high = settings['batch']
        profile.set_shape(name, trt.Dims4(low, channels, height, width),
                          trt.Dims4(opt, channels, height, width),
                          trt.Dims4(high, channels, height, width))
        config.add_optimization_profile(profile)
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if plan.pin_decode_fp32:
            pinned = pin_decode_fp32(network, info['decode'])
            if pinned:
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            metadata['decode_fp32_layers'] = pinned
        if plan.legacy_int8:
            assert context is not None
            calib_batch = settings['calib_batch']
            calib_profile = builder.create_optimization_profile()
            shape = trt.Dims4(calib_batch, channels, height, width)
            calib_profile.set_shape(name, shape, shape, shape)
            config.set_calibration_profile(calib_profile)
            cache = out.with_name(f'{out.name}.{str(settings["calib_hash"])[:16]}.calib')
            held['calibrator'] = config.int8_calibrator = entropy_calibrator(
                context, calibration_batches(settings['calib_source'], width, height,
                                             calib_batch, settings['calib_count']),
                calib_batch, calib_batch * channels * height * width * 4, cache)
        dla_core = settings['dla_core']
        if dla_core is not None:
            if builder.num_DLA_cores <= dla_core:
                raise EngineError(f'DLA core {dla_core}: this device has '
                                  f'{builder.num_DLA_cores} DLA core(s)')
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = dla_core
        timing_cache = settings['timing_cache']
        cache_bytes = b''
        if timing_cache is not None and Path(timing_cache).is_file():
            cache_bytes = Path(timing_cache).read_bytes()
        timing = config.create_timing_cache(cache_bytes)
        if not config.set_timing_cache(timing, False):
            _LOG.warning('timing cache %s does not match this device; starting afresh',
                         timing_cache)
            config.set_timing_cache(config.create_timing_cache(b''), False)
        monitor = progress_monitor(settings['progress']) if version >= (10,) else None
        if monitor is not None:
            config.progress_monitor = monitor
        _LOG.info('building %s engine (%s) from %s (TensorRT %s); this takes minutes',
                  plan.precision, 'strongly typed' if plan.strongly_typed else 'weakly typed',
                  onnx_path, trt.__version__)
        held['serialized'] = serialized = builder.build_serialized_network(network, config)
        if held.get('calibrator') is not None:
            held['calibrator'].free()
        if serialized is None:
            raise EngineError(f'{onnx_path}: TensorRT failed to build the engine (see the '
                              'TensorRT errors logged above)')
        if timing_cache is not None:
            held['timing'] = config.get_timing_cache().serialize()
            atomic_write_bytes(timing_cache, memoryview(held['timing']))
        write_engine(out, serialized, metadata)  # from the plan's buffer: no copy
        _LOG.info('wrote %s (%.1f MiB) and %s', out, memoryview(serialized).nbytes / 2**20,
                  metadata_path(out).name)
    finally:
        held.clear()
        builder = network = parser = config = serialized = None
        profile = timing = monitor = None  # the frame's last references
