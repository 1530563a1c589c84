"""TensorRT backend: runs a serialized engine built by ``darknet53 build-engine``.

Only TensorRT's named-tensor API is used (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_shape``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which TensorRT 8.5, 10 and 11 all provide; the
batch profile comes from ``get_tensor_profile_shape`` (TensorRT 10+) or ``get_profile_shape``
(8.5). Every call chooses its batch within the engine's profile: a larger batch runs in chunks
of the profile maximum, a smaller one than the profile minimum is zero-padded.

Device work happens inside the primary CUDA context
(:class:`~darknet53_ros.inference.backends.cuda_runtime.CudaContext`, through pycuda or
cuda-python: ``cuda_runtime``), with pinned host buffers and device buffers allocated once for
the largest profile shape, one stream for the execution context, asynchronous copies and one
synchronize per chunk. Calls from several threads are serialised (a TensorRT execution context
runs one inference at a time). An engine built for a DLA core runs there (``runtime.DLA_core``
is set from its metadata before deserialising).

:meth:`TensorRTBackend.infer_images` is the GPU pre-processing path (``preprocess: auto|gpu``):
decoded ``uint8`` images go to the device as they are and the letterbox kernel writes the
engine's input binding (:mod:`~darknet53_ros.inference.backends.gpu_input`); the kernel is
compiled on the first such batch through the CUDA runtime (pycuda: nvcc, cuda-python: NVRTC).
It needs a float32 ``[B, 3, H, W]`` input (:attr:`TensorRTBackend.device_preprocessing`).

:meth:`TensorRTBackend.close` must run in the thread that created the backend: it drops the
execution context, engine and runtime inside the CUDA context, then closes the context
(streams, buffers, release). From another thread it raises :class:`BackendError` and releases
nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
import threading
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError, EngineError, ModelError
from darknet53_ros.inference.backends.base import Backend, parse_metadata
from darknet53_ros.inference.backends.cuda_runtime import AUTO, CudaContext, IOBuffers
from darknet53_ros.inference.backends.engine_file import (
    check_engine_metadata,
    read_engine_metadata,
    require_tensorrt,
    trt_logger,
    verification_status,
)
from darknet53_ros.inference.backends.gpu_input import GpuInput, encodings_of
from darknet53_ros.inference.preprocess import LetterboxTransform


def batch_plan(count: int, low: int, high: int) -> list[tuple[int, int, int]]:
    """Split ``count`` images into chunks for an engine profile ``[low, high]``.

    Returns ``(start, stop, run_batch)`` per chunk: images ``start:stop`` run as a batch of
    ``run_batch`` (``>= stop - start``; the rest is padding up to ``low``).
    """
    if count < 1:
        raise BackendError(f'batch of {count} images: need at least one')
    if not 1 <= low <= high:
        raise BackendError(f'engine batch profile [{low}, {high}] is invalid')
    plan = []
    for start in range(0, count, high):
        stop = min(start + high, count)
        plan.append((start, stop, max(stop - start, low)))
    return plan


def dims(shape: Any) -> tuple[int, ...]:
    """A TensorRT ``Dims`` (or any sequence) as a tuple of ints."""
    return tuple(int(d) for d in shape)


def profile_batch(engine: Any, name: str, profile: int = 0) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch of input ``name`` in optimisation profile ``profile``."""
    if hasattr(engine, 'get_tensor_profile_shape'):  # TensorRT >= 8.5 named API, 10+
        shapes = engine.get_tensor_profile_shape(name, profile)
    else:  # TensorRT 8.5 binding-era signature
        shapes = engine.get_profile_shape(profile, name)
    low, opt, high = (dims(s)[0] for s in shapes)
    return low, opt, high


class TensorRTBackend(Backend):
    """A TensorRT engine behind the :class:`~darknet53_ros.inference.backends.base.Backend`
    interface.

    Args:
        engine_path: the ``.engine`` file; its ``.engine.json`` metadata is checked against
            the running TensorRT and GPU (and ``expected``) unless ``check_metadata`` is off.
        device: CUDA device index.
        check_metadata: validate the metadata (see
            :func:`darknet53_ros.inference.backends.engine_file.check_engine_metadata`);
            mismatches raise :class:`EngineError` with the rebuild command.
        expected: metadata fields the caller requires (class names, ONNX sha256, ...).
        cuda_runtime: ``auto`` (pycuda if installed, else cuda-python), ``pycuda`` or
            ``cuda-python``.
    """

    name = 'tensorrt'

    def __init__(self, engine_path: str | Path, device: int = 0, check_metadata: bool = True,
                 expected: dict[str, Any] | None = None, cuda_runtime: str = AUTO) -> None:
        require_tensorrt()
        import tensorrt as trt

        self.engine_path = self.model_path = Path(engine_path)
        self._lock = threading.Lock()
        self._closed = False
        self._trt_context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._stream: Any = None
        self._buffers: IOBuffers | None = None
        self._gpu_input: GpuInput | None = None
        self._cuda = CudaContext(device, cuda_runtime)
        if check_metadata:
            try:
                major, minor = self._cuda.driver.compute_capability(device)
                info = {'tensorrt_version': trt.__version__,
                        'gpu_name': self._cuda.driver.device_name(device),
                        'compute_capability': (major, minor)}
            except BaseException:
                self.close()
                raise
            try:
                self.engine_metadata = check_engine_metadata(self.engine_path, expected, info)
            except BaseException:
                self.close()
                raise
        else:
            try:
                self.engine_metadata = read_engine_metadata(self.engine_path)
            except EngineError:
                self.engine_metadata = {}
        if not self.engine_path.is_file():
            self.close()
            raise EngineError(f'{self.engine_path}: engine file not found')
        self.precision = str(self.engine_metadata.get('precision') or 'unknown')
        props = self.engine_metadata.get('model_metadata') or {}
        try:
            self.metadata = parse_metadata(props, str(self.engine_path)) if props else {}
        except ModelError:
            self.metadata = {}
        self.dla_core = self.engine_metadata.get('dla_core')
        #: ``(level, message)`` about the recorded verification (logged by the node at start).
        self.verification = verification_status(self.engine_metadata)
        try:
            with self._cuda.scope():
                runtime = trt.Runtime(trt_logger())
                if self.dla_core is not None:
                    runtime.DLA_core = int(self.dla_core)  # before deserialising
                engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
                if engine is None:
                    raise EngineError(f'{self.engine_path}: TensorRT cannot deserialize the '
                                      'engine (built with another TensorRT version or GPU?)')
                self._runtime = runtime
                self._engine = engine
                self._trt_context = engine.create_execution_context()
                if self._trt_context is None:
                    raise EngineError(f'{self.engine_path}: cannot create an execution context')
                self._stream = self._cuda.stream()
                self._setup_tensors(trt)
                self._buffers = IOBuffers(self._cuda)
                self._reserve()
        except BaseException:
            self.close()
            raise

    def details(self) -> dict[str, str]:
        """The GPU and TensorRT the engine was built for (from its metadata)."""
        keys = ('tensorrt_version', 'gpu_name', 'compute_capability', 'dla_core',
                'float_precision')
        info = {key: str(self.engine_metadata[key]) for key in keys
                if self.engine_metadata.get(key) is not None}
        info['cuda_runtime'] = self._cuda.runtime
        return info

    def _setup_tensors(self, trt: Any) -> None:
        engine = self._engine
        inputs, outputs = [], []
        self._dtypes: dict[str, np.dtype[Any]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self._dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(name)
            else:
                outputs.append(name)
        if len(inputs) != 1:
            raise EngineError(f'{self.engine_path}: expected one input tensor, found {inputs}')
        self.input_name = inputs[0]
        shape = dims(engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or min(shape[1:]) <= 0:
            raise EngineError(f'{self.engine_path}: input {self.input_name!r} shape {shape}: '
                              'expected [batch, C, H, W] with fixed C, H, W')
        if shape[0] < 0:
            self.min_batch, _, self.max_batch = profile_batch(engine, self.input_name)
        else:
            self.min_batch = self.max_batch = shape[0]
        self.input_shape = (None if shape[0] < 0 else shape[0], shape[1], shape[2], shape[3])
        contract = [n for n in ('boxes', 'scores') if n in outputs]
        self.output_names = tuple(contract + [n for n in outputs if n not in contract])

    def _reserve(self) -> None:
        assert self._buffers is not None
        _, c, h, w = self.input_shape
        shape = (self.max_batch or 1, c, h, w)
        self._buffers.reserve(self.input_name, shape, self._dtypes[self.input_name])
        if not self._trt_context.set_input_shape(self.input_name, shape):
            raise EngineError(f'{self.engine_path}: input shape {shape} rejected')
        for name in self.output_names:
            out_shape = dims(self._trt_context.get_tensor_shape(name))
            self._buffers.reserve(name, out_shape, self._dtypes[name])

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``[B, C, H, W]`` float32 images; returns float32 outputs by name (copies)."""
        array = np.asarray(batch)
        _, c, h, w = self.input_shape
        if array.ndim != 4 or array.shape[1:] != (c, h, w):
            raise BackendError(f'{self.engine_path}: input shape {array.shape}, expected '
                               f'[B, {c}, {h}, {w}]')
        with self._lock:
            if self._closed:
                raise BackendError(f'{self.engine_path}: backend is closed')
            chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
            with self._cuda.scope():
                for start, stop, run in batch_plan(len(array), self.min_batch or 1,
                                                   self.max_batch or len(array)):
                    outputs = self._run(array[start:stop], run)
                    for name in self.output_names:
                        chunks[name].append(outputs[name][:stop - start].copy())
        return {name: (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(
            np.float32, copy=False) for name, parts in chunks.items()}

    @property
    def device_preprocessing(self) -> bool:
        """Whether :meth:`infer_images` can letterbox on the GPU: the kernel writes float32
        RGB, so the engine's input must be float32 with 3 channels."""
        return self.input_shape[1] == 3 and self._dtypes[self.input_name] == np.float32

    def infer_images(self, images: Sequence[np.ndarray], width: int, height: int,
                     letterbox: bool = True,
                     ) -> tuple[dict[str, np.ndarray], list[LetterboxTransform]]:
        """Letterbox decoded ``uint8`` images on the GPU straight into the input binding and
        run them; returns float32 outputs by name (copies) and each image's transform (the
        CPU path's :func:`~darknet53_ros.inference.preprocess.letterbox_transform`).

        Raises:
            ImageError: an image the CPU path would refuse too (names ``images[i]``).
            BackendError: the engine cannot take it (see :attr:`device_preprocessing`, input
                size), the kernel cannot be compiled, or the backend is closed.
        """
        items = list(images)
        _, _, h, w = self.input_shape
        if (int(width), int(height)) != (w, h) or not self.device_preprocessing:
            raise BackendError(f'{self.engine_path}: GPU pre-processing to {width}x{height} '
                               f'needs a float32 [B, 3, {h}, {w}] input (engine input '
                               f'{self.input_shape}, {self._dtypes[self.input_name]})')
        encodings = encodings_of(items)
        transforms: list[LetterboxTransform] = []
        with self._lock:
            if self._closed:
                raise BackendError(f'{self.engine_path}: backend is closed')
            chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
            with self._cuda.scope():
                if self._gpu_input is None:
                    self._gpu_input = GpuInput(self._cuda, self._stream, w, h)
                for start, stop, run in batch_plan(len(items), self.min_batch or 1,
                                                   self.max_batch or len(items)):
                    assert self._buffers is not None
                    transforms += self._gpu_input.write(
                        items[start:stop], encodings[start:stop],
                        int(self._buffers.device(self.input_name)), run, letterbox)
                    outputs = self._execute(run)
                    for name in self.output_names:
                        chunks[name].append(outputs[name][:stop - start].copy())
        return {name: (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(
            np.float32, copy=False) for name, parts in chunks.items()}, transforms

    def _run(self, images: np.ndarray, run: int) -> dict[str, np.ndarray]:
        buffers = self._buffers
        assert buffers is not None
        _, c, h, w = self.input_shape
        host_in = buffers.host(self.input_name, (run, c, h, w), self._dtypes[self.input_name])
        np.copyto(host_in[:len(images)], images, casting='same_kind')
        if run > len(images):
            host_in[len(images):] = 0
        self._cuda.memcpy_htod_async(buffers.device(self.input_name), host_in, self._stream)
        return self._execute(run)

    def _execute(self, run: int) -> dict[str, np.ndarray]:
        """Run the batch of ``run`` queued in the input binding; returns the pinned outputs."""
        context, buffers, stream = self._trt_context, self._buffers, self._stream
        assert buffers is not None
        _, c, h, w = self.input_shape
        shape = (run, c, h, w)
        if not context.set_input_shape(self.input_name, shape):
            raise BackendError(f'{self.engine_path}: batch {run} outside the engine profile '
                               f'[{self.min_batch}, {self.max_batch}]')
        context.set_tensor_address(self.input_name, int(buffers.device(self.input_name)))
        hosts = {}
        for name in self.output_names:
            out_shape = dims(context.get_tensor_shape(name))
            hosts[name] = buffers.host(name, out_shape, self._dtypes[name])
            context.set_tensor_address(name, int(buffers.device(name)))
        if not context.execute_async_v3(stream.handle):
            raise BackendError(f'{self.engine_path}: TensorRT execution failed')
        for name in self.output_names:
            self._cuda.memcpy_dtoh_async(hosts[name], buffers.device(name), stream)
        stream.synchronize()
        return hosts

    def close(self) -> None:
        """Drop the execution context, engine and runtime inside the CUDA context, then close
        it (streams, buffers, release). Idempotent.

        Raises:
            BackendError: called from another thread than the one that created the backend
                (nothing is released; call it again from that thread).
        """
        with self._lock:
            if self._closed:
                return
            cuda = getattr(self, '_cuda', None)
            if cuda is None:
                self._closed = True
                return
            if threading.get_ident() != cuda.owner_thread:
                raise BackendError(
                    f'{self.engine_path}: close() must run in the thread that created the '
                    f'TensorRT backend (thread {cuda.owner_thread}), not thread '
                    f'{threading.get_ident()}; nothing was released')
            self._closed = True
            if not cuda.closed:
                with cuda.scope():  # TensorRT objects go while their context is alive
                    self._trt_context = None
                    self._engine = None
                    self._runtime = None
                    self._stream = None
                    self._gpu_input = None
                    if self._buffers is not None:
                        self._buffers.clear()
                cuda.close()
