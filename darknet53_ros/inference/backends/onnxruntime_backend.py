"""ONNX Runtime backend (CPU everywhere; CUDA where onnxruntime-gpu is installed)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError, ConfigError, ModelError
from darknet53_ros.inference.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend, parse_metadata

_LOG = logging.getLogger(__name__)

DEVICES = ('cpu', 'cuda', 'auto')
#: Session configuration keys that let ONNX Runtime's idle worker threads spin.
SPINNING_KEYS = ('session.intra_op.allow_spinning', 'session.inter_op.allow_spinning')
MAX_SHARED_THREADS = 4


def shared_cpu_threads(cpus: int | None = None) -> int:
    """Intra-op threads for a CPU shared with other processes (a robot): half the CPUs this
    process may run on, but 2 where there are 2 to 4 (one thread cost 18 % of the detections
    at 4 cameras on 2 cores, measured), at most :data:`MAX_SHARED_THREADS` (ONNX Runtime's own
    default takes every physical core)."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    cpus = max(1, int(cpus))
    return max(min(2, cpus), min(MAX_SHARED_THREADS, cpus // 2))
_WARNED_QDQ_LAYOUT: set[str] = set()


def warn_tensorrt_layout(props: dict[str, str], path: Path) -> bool:
    """Warn once per process when ``props`` say the model is a TensorRT-layout Q/DQ model
    (slower than FP32 on ONNX Runtime CPU); returns whether this call warned."""
    try:
        target = json.loads(props.get('quantization', 'null') or 'null')
    except ValueError:
        return False
    target = target.get('target', 'tensorrt') if isinstance(target, dict) else None
    if target != 'tensorrt' or 'tensorrt' in _WARNED_QDQ_LAYOUT:
        return False
    _WARNED_QDQ_LAYOUT.add('tensorrt')
    _LOG.warning('%s: INT8 Q/DQ model in the TensorRT layout; ONNX Runtime on the CPU runs it '
                 'slower than FP32. For ONNX Runtime quantise with `darknet53 quantize '
                 '--target onnxruntime`, or run the FP32 model', path)
    return True


def _dim(value: object) -> int | None:
    """A static ONNX Runtime dimension as int, ``None`` for symbolic/unknown ones."""
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeBackend(Backend):
    """Run a contract ONNX model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        device: ``'cpu'`` (default), ``'cuda'`` (``CUDAExecutionProvider``, BackendError when
            unavailable) or ``'auto'`` (CUDA when available, else CPU).
        intra_op_threads: ONNX Runtime intra-op thread count (``None``/0: its default, one
            per physical core; :func:`shared_cpu_threads` suits a CPU shared with other
            processes).
        allow_spinning: whether idle worker threads spin (``session.intra_op.allow_spinning``
            and ``session.inter_op...``; ``None``: ONNX Runtime's default, which spins). A
            spinning worker keeps a core at 100 % between inferences: the ROS node passes
            False.
        outputs: outputs to fetch (default ``boxes``, ``scores``; ``None``: all, including raw
            ``head_*`` outputs).
        providers: explicit provider list, overriding ``device``.
        require_metadata: raise ModelError when the contract metadata is missing (default:
            only log, so that hand-built models without metadata still run).
    """

    name = 'onnxruntime'

    def __init__(self, path: str | os.PathLike[str], device: str = 'cpu',
                 intra_op_threads: int | None = None,
                 outputs: tuple[str, ...] | None = OUTPUT_NAMES,
                 providers: list[str] | None = None, require_metadata: bool = False,
                 allow_spinning: bool | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError('onnxruntime is not installed: pip install onnxruntime '
                               f"(or the package's [cpu] extra): {exc}") from None
        self.path = self.model_path = Path(path)
        if not self.path.is_file():
            raise ModelError(f'{self.path}: no such ONNX model file')
        providers = providers or self._providers(ort, device)
        options = ort.SessionOptions()
        if intra_op_threads:
            if intra_op_threads < 0:
                raise ConfigError(f'intra_op_threads: {intra_op_threads} must be >= 0')
            options.intra_op_num_threads = int(intra_op_threads)
        if allow_spinning is not None:
            for pool in SPINNING_KEYS:
                options.add_session_config_entry(pool, '1' if allow_spinning else '0')
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises its own (non-exported) exception types
            raise ModelError(f'{self.path}: ONNX Runtime cannot load the model: {exc}') from None
        self.providers = tuple(self._session.get_providers())
        self._validate(outputs)
        props = dict(self._session.get_modelmeta().custom_metadata_map)
        # Q/DQ models written by `darknet53 quantize` record how they were quantised.
        self.precision = 'int8' if 'quantization' in props else 'fp32'
        if self.providers[0] == 'CPUExecutionProvider':
            warn_tensorrt_layout(props, self.path)
        try:
            self.metadata = parse_metadata(props, str(self.path))
        except ModelError:
            if require_metadata:
                raise
            _LOG.warning('%s: no valid darknet53_ros metadata; class names unknown', self.path)
            self.metadata = {}

    def details(self) -> dict[str, str]:
        """The ONNX Runtime execution providers in use."""
        return {'providers': ', '.join(self.providers)}

    @staticmethod
    def _providers(ort: Any, device: str) -> list[str]:
        if device not in DEVICES:
            raise ConfigError(f'device: {device!r}, expected one of {", ".join(DEVICES)}')
        available = ort.get_available_providers()
        if device == 'cpu':
            return ['CPUExecutionProvider']
        if 'CUDAExecutionProvider' in available:
            return ['CUDAExecutionProvider', 'CPUExecutionProvider']
        if device == 'cuda':
            raise BackendError('device: CUDAExecutionProvider is not available in this '
                               f'onnxruntime (available: {", ".join(available)}); install '
                               'onnxruntime-gpu or use device=cpu')
        return ['CPUExecutionProvider']

    def _validate(self, outputs: tuple[str, ...] | None) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            names = [i.name for i in inputs]
            raise ModelError(f'{self.path}: expected one input {INPUT_NAME!r}, got {names}')
        meta = inputs[0]
        shape = list(meta.shape)
        if meta.type != 'tensor(float)' or len(shape) != 4 or shape[1] != 3 \
                or _dim(shape[2]) is None or _dim(shape[3]) is None:
            raise ModelError(f'{self.path}: input {INPUT_NAME!r} is {meta.type} {shape}, '
                             'expected float32 [B, 3, H, W] with fixed H and W')
        self.input_name = INPUT_NAME
        self.input_shape = (_dim(shape[0]), 3, int(shape[2]), int(shape[3]))
        self.max_batch = self.input_shape[0]
        available = {o.name: o for o in self._session.get_outputs()}
        for name, last in (('boxes', 4), ('scores', None)):
            out = available.get(name)
            if out is None:
                raise ModelError(f'{self.path}: missing output {name!r} '
                                 f'(outputs: {list(available)})')
            dims = list(out.shape)
            if out.type != 'tensor(float)' or len(dims) != 3 \
                    or (last is not None and _dim(dims[2]) not in (None, last)):
                raise ModelError(f'{self.path}: output {name!r} is {out.type} {dims}, expected '
                                 f'float32 [B, N, {last or "C"}]')
        if outputs is None:
            wanted = list(OUTPUT_NAMES) + [n for n in available if n not in OUTPUT_NAMES]
        else:
            wanted = list(outputs)
            unknown = [n for n in wanted if n not in available]
            if unknown:
                raise ModelError(f'{self.path}: no output(s) {unknown} '
                                 f'(outputs: {list(available)})')
        self.output_names = tuple(wanted)
        self._fetch = list(wanted)  # precomputed: session.run takes a list

    @property
    def session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (``None`` once closed)."""
        return self._session

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a float32 ``[B, 3, H, W]`` batch; return outputs by name."""
        if batch.dtype != np.float32 or batch.shape[1:] != self.input_shape[1:] \
                or (self.max_batch is not None and batch.shape[0] != self.max_batch):
            raise BackendError(f'{self.path}: batch {batch.dtype} {batch.shape} does not match '
                               f'input {self.input_name!r} float32 {self.input_shape}')
        if not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch)
        if self._session is None:
            raise BackendError(f'{self.path}: backend is closed')
        try:
            results = self._session.run(self._fetch, {self.input_name: batch})
        except Exception as exc:
            raise BackendError(f'{self.path}: inference failed: {exc}') from None
        return dict(zip(self.output_names, results))

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it with the last reference)."""
        self._session = None
