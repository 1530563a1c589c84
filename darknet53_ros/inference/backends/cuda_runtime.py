"""The CUDA runtime of the TensorRT backend: one interface, two implementations.

:class:`CudaContext` is what the backend and the engine builder use: the device's **primary**
context (the one TensorRT and the CUDA runtime use), current only inside ``with
ctx.scope():``, streams, pinned host buffers, device buffers, asynchronous copies, and a
:meth:`~CudaContext.close` that frees everything in a safe order. The driver calls behind it
come from a :class:`CudaDriver`:

* ``pycuda`` (:mod:`darknet53_ros.inference.backends.cuda_pycuda`): the design's choice,
  ``pip install 'pycuda>=2025.1.2'`` on CUDA 13 (JetPack 7), any 2022.1+ before;
* ``cuda-python`` (:mod:`darknet53_ros.inference.backends.cuda_python`): NVIDIA's ``cuda.
  bindings`` (the TensorRT samples use it from 10.13), ``pip install cuda-python`` matching
  the CUDA major version.

``runtime='auto'`` takes pycuda when it imports, else cuda-python; ``'pycuda'`` or
``'cuda-python'`` forces one (:data:`RUNTIMES`).

Kernels: :meth:`CudaContext.compile` builds CUDA C source for the device (pycuda:
``SourceModule``, which runs ``nvcc``; cuda-python: NVRTC to PTX, ``cuModuleLoadData``) with
:data:`KERNEL_OPTIONS` and returns a :class:`Kernel`, called ``kernel(grid, block, args,
stream)`` with NumPy scalar arguments; the context unloads its modules on close.

Lifecycle, the same for both: scopes nest per thread (only the outermost pushes and pops), so
nothing is left on any thread's context stack afterwards. :meth:`CudaContext.close` runs only
in the thread that created the context (others get a :class:`BackendError`, nothing is
released) and outside any scope; inside one scope it synchronises and destroys every stream,
frees device and pinned memory, pops the context, then releases the primary context and
checks that it is no longer current. Callers release their TensorRT objects (inside a scope)
before calling it.

No driver is imported until a context is made; importing this module touches no GPU.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import logging
import threading
from typing import Any, Protocol

import numpy as np

from darknet53_ros.errors import BackendError, ConfigError
from darknet53_ros.inference.backends import cuda_pycuda, cuda_python
from darknet53_ros.inference.backends.cuda_driver import CudaDriver

_LOG = logging.getLogger(__name__)

AUTO = 'auto'
#: Accepted runtime names (``cuda_python`` is accepted as an alias of ``cuda-python``).
RUNTIMES = (AUTO, 'pycuda', 'cuda-python')
#: Compiler options of :meth:`CudaContext.compile` (nvcc and NVRTC alike): no fused
#: multiply-add contraction, so kernels compute exactly the float32 operations written (the
#: NumPy models of the tests do the same).
KERNEL_OPTIONS = ('--fmad=false',)


class DeviceBuffer:
    """A device allocation made by :meth:`CudaContext.device_alloc`; ``int()`` is the pointer."""

    def __init__(self, pointer: int, nbytes: int, token: Any) -> None:
        self.pointer = int(pointer)
        self.nbytes = int(nbytes)
        self.token = token
        self.freed = False

    def __int__(self) -> int:
        return self.pointer

    def __repr__(self) -> str:
        return f'DeviceBuffer(0x{self.pointer:x}, {self.nbytes} bytes, freed={self.freed})'


class CudaStream:
    """A stream made by :meth:`CudaContext.stream`: ``handle`` for TensorRT, ``synchronize()``.

    The context holds the driver's stream and event objects; after :meth:`CudaContext.close`
    the wrapper holds nothing, so a caller keeping it alive keeps no driver object alive.
    """

    def __init__(self, owner: CudaContext, native: Any, event: Any = None) -> None:
        self._owner = owner
        self.native: Any = native
        self.event: Any = event
        self.handle = owner.driver.stream_handle(native)

    def synchronize(self) -> None:
        """Wait for the work queued on this stream, asleep: an event with blocking sync is
        recorded after it and waited for (``cuStreamSynchronize`` would spin a core under
        the default context flags while the GPU works)."""
        if self.native is None:
            raise BackendError('CUDA stream used after its context was closed')
        driver = self._owner.driver
        with self._owner.scope():
            driver.event_record(self.event, self.native)
            driver.event_synchronize(self.event)


class Kernel:
    """A compiled kernel of a :class:`CudaContext`: ``kernel(grid, block, args, stream)``.

    ``args`` are NumPy scalars in the kernel's parameter order (``np.uintp`` for pointers,
    ``np.int32``, ``np.float32``); ``stream`` a :class:`CudaStream` or ``None`` (the default
    stream). After the context closes the kernel holds nothing and refuses to launch.
    """

    def __init__(self, owner: CudaContext, name: str, function: Any) -> None:
        self._owner = owner
        self.name = name
        self.function: Any = function

    def __call__(self, grid: tuple[int, int, int], block: tuple[int, int, int],
                 args: Sequence[Any], stream: CudaStream | None = None) -> None:
        if self.function is None:
            raise BackendError(f'CUDA kernel {self.name} used after its context was closed')
        with self._owner.scope():
            self._owner.driver.launch(self.function, grid, block, args,
                                      None if stream is None else stream.native)


def select_driver(runtime: str = AUTO) -> CudaDriver:
    """The :class:`CudaDriver` for ``runtime`` (``auto``: pycuda if it imports, else
    cuda-python); the driver is initialised.

    Raises:
        ConfigError: unknown runtime name.
        BackendError: the runtime (or, for ``auto``, either) cannot be imported or initialised.
    """
    name = runtime.replace('_', '-').lower()
    if name not in RUNTIMES:
        raise ConfigError(f'cuda_runtime {runtime!r}: expected one of {", ".join(RUNTIMES)}')
    if name == 'pycuda':
        return cuda_pycuda.PycudaDriver()
    if name == 'cuda-python':
        return cuda_python.CudaPythonDriver()
    errors = []
    for make in (cuda_pycuda.PycudaDriver, cuda_python.CudaPythonDriver):
        try:
            return make()
        except BackendError as exc:
            errors.append(str(exc))
    raise BackendError('no CUDA runtime for Python: ' + '; '.join(errors))


def device_info(device_id: int = 0, runtime: str = AUTO) -> tuple[str, tuple[int, int]]:
    """``(name, (major, minor))`` of a CUDA device (initialises the driver, no context)."""
    driver = select_driver(runtime)
    _check_device(driver, device_id)
    return driver.device_name(device_id), driver.compute_capability(device_id)


def _check_device(driver: CudaDriver, device_id: int) -> None:
    count = driver.device_count()
    if not 0 <= device_id < count:
        raise BackendError(f'CUDA device {device_id}: {count} device(s) present')


class Allocator(Protocol):
    """What :class:`IOBuffers` needs; :class:`CudaContext` implements it."""

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A page-locked host array."""

    def device_alloc(self, nbytes: int) -> Any:
        """A device allocation whose ``int()`` is the device pointer."""


class CudaContext:
    """The primary CUDA context of one device, pushed only inside :meth:`scope`.

    Args:
        device_id: CUDA device index.
        runtime: ``auto``, ``pycuda`` or ``cuda-python`` (see :func:`select_driver`), or a
            :class:`CudaDriver` instance.

    Resources made through :meth:`pinned_empty`, :meth:`device_alloc` and :meth:`stream` are
    owned by the context and released by :meth:`close`.
    """

    def __init__(self, device_id: int = 0, runtime: str | CudaDriver = AUTO) -> None:
        driver = runtime if isinstance(runtime, CudaDriver) else select_driver(runtime)
        _check_device(driver, device_id)
        self.driver = driver
        self.runtime = driver.name
        self.device_id = device_id
        self._context: Any = driver.retain_primary(device_id)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._host: list[tuple[np.ndarray, Any]] = []
        self._device: list[DeviceBuffer] = []
        self._streams: list[CudaStream] = []
        self._modules: list[tuple[Any, Kernel]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    @property
    def depth(self) -> int:
        """How deep the calling thread is inside :meth:`scope` (0: not inside)."""
        return int(getattr(self._local, 'depth', 0))

    @property
    def owner_thread(self) -> int:
        """``threading.get_ident()`` of the thread that made the context (and must close it)."""
        return self._owner

    @contextmanager
    def scope(self) -> Iterator[CudaContext]:
        """Make the context current in this thread for the block (re-entrant per thread)."""
        if self._closed:
            raise BackendError(f'CUDA context of device {self.device_id} is closed')
        depth = self.depth
        if depth == 0:
            self.driver.push(self._context)
        self._local.depth = depth + 1
        try:
            yield self
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                self.driver.pop()

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A page-locked host array owned by this context."""
        with self.scope():
            array, token = self.driver.host_alloc(tuple(shape), np.dtype(dtype))
        with self._lock:
            self._host.append((array, token))
        return array

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        """A device allocation (``int(alloc)`` is the pointer) owned by this context."""
        size = max(int(nbytes), 1)
        with self.scope():
            pointer, token = self.driver.mem_alloc(size)
        buffer = DeviceBuffer(pointer, size, token)
        with self._lock:
            self._device.append(buffer)
        return buffer

    def stream(self) -> CudaStream:
        """A new CUDA stream owned by this context (``.handle`` for TensorRT)."""
        with self.scope():
            native = self.driver.stream_create()
            stream = CudaStream(self, native, self.driver.event_create())
        with self._lock:
            self._streams.append(stream)
        return stream

    def compile(self, source: str, name: str,
                options: Sequence[str] = KERNEL_OPTIONS) -> Kernel:
        """Compile CUDA C ``source`` for this device and load kernel ``name`` (``extern "C"``).

        Raises:
            BackendError: the compiler is missing or rejects the source (with its log).
        """
        capability = self.driver.compute_capability(self.device_id)
        with self.scope():
            module, function = self.driver.compile_kernel(source, name, tuple(options),
                                                          capability)
        kernel = Kernel(self, name, function)
        with self._lock:
            self._modules.append((module, kernel))
        return kernel

    def release(self, resource: Any) -> None:
        """Free one resource made by this context now (device buffer or pinned array)."""
        with self._lock:
            host = [entry for entry in self._host if entry[0] is resource]
            self._host = [entry for entry in self._host if entry[0] is not resource]
            device = [b for b in self._device if b is resource]
            self._device = [b for b in self._device if b is not resource]
        with self.scope():
            for buffer in device:
                self._free_device(buffer)
            for _, token in host:
                self._free_host(token)

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: CudaStream) -> None:
        """Asynchronous host-to-device copy of ``src`` (pinned) on ``stream``."""
        self.driver.memcpy_htod_async(int(dest), _contiguous(src), stream.native)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: CudaStream) -> None:
        """Asynchronous device-to-host copy into ``dest`` (pinned) on ``stream``."""
        self.driver.memcpy_dtoh_async(_contiguous(dest), int(src), stream.native)

    def memcpy_htod(self, dest: Any, src: np.ndarray) -> None:
        """Synchronous host-to-device copy (inside :meth:`scope`)."""
        self.driver.memcpy_htod(int(dest), np.ascontiguousarray(src))

    def close(self) -> None:
        """Destroy streams and free memory inside the context, pop it, release it (idempotent).

        Raises:
            BackendError: called from another thread than the one that made the context, or
                inside :meth:`scope`; nothing is released then.
        """
        if self._closed:
            return
        caller = threading.get_ident()
        if caller != self._owner:
            raise BackendError(
                f'CUDA context of device {self.device_id} ({self.runtime}) can only be closed '
                f'by the thread that created it (thread {self._owner}); close() was called '
                f'from thread {caller}: nothing was released')
        if self.depth:
            raise BackendError(f'CUDA context of device {self.device_id}: close() inside '
                               'its scope(); leave the scope first')
        errors: list[str] = []
        with self.scope():
            with self._lock:
                streams, device, host = self._streams, self._device, self._host
                self._streams, self._device, self._host = [], [], []
            for stream in streams:
                native, stream.native = stream.native, None
                event, stream.event = stream.event, None
                try:
                    self.driver.stream_synchronize(native)
                except Exception as exc:
                    errors.append(f'stream synchronize: {exc}')
                try:
                    self.driver.event_destroy(event)
                except Exception as exc:
                    errors.append(f'event destroy: {exc}')
                del event
                try:
                    self.driver.stream_destroy(native)
                except Exception as exc:
                    errors.append(f'stream destroy: {exc}')
                del native  # no reference outlives the scope
            self._unload_modules(errors)
            for buffer in device:
                self._free_device(buffer, errors)
            for _, token in host:
                self._free_host(token, errors)
            host.clear()
        self._closed = True
        context, self._context = self._context, None
        self.driver.release_primary(self.device_id, context)
        if self.driver.is_current(context):
            errors.append('the released context is still current')
            self.driver.pop()
        for error in errors:
            _LOG.warning('CUDA context of device %d: %s', self.device_id, error)

    def _unload_modules(self, errors: list[str]) -> None:
        """Unload every module (inside the scope; pycuda unloads with the last reference, so
        none is left here when this returns)."""
        with self._lock:
            modules, self._modules = self._modules, []
        while modules:
            module, kernel = modules.pop()
            kernel.function = None
            try:
                self.driver.module_unload(module)
            except Exception as exc:
                errors.append(f'module unload: {exc}')
            del module, kernel

    def _free_device(self, buffer: DeviceBuffer, errors: list[str] | None = None) -> None:
        if buffer.freed:
            return
        buffer.freed = True
        try:
            self.driver.mem_free(buffer.token)
        except Exception as exc:
            _report(errors, f'device free: {exc}')

    def _free_host(self, token: Any, errors: list[str] | None = None) -> None:
        try:
            self.driver.host_free(token)
        except Exception as exc:
            _report(errors, f'pinned free: {exc}')

    def __enter__(self) -> CudaContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'CudaContext(device_id={self.device_id}, runtime={self.runtime!r}, '
                f'closed={self._closed})')


def _report(errors: list[str] | None, message: str) -> None:
    if errors is None:
        _LOG.warning('CUDA: %s', message)
    else:
        errors.append(message)


def _contiguous(array: np.ndarray) -> np.ndarray:
    if not array.flags.c_contiguous:
        raise BackendError('CUDA copies need C-contiguous host arrays')
    return array


class IOBuffers:
    """Pinned host + device buffer per tensor, grown only when a larger shape is needed.

    ``host(name, shape, dtype)`` returns a view of exactly ``shape`` on a pinned array that is
    reallocated only when ``shape`` needs more elements than any shape seen before (or the
    dtype changes); ``device(name)`` is the matching device allocation.
    """

    def __init__(self, allocator: Allocator) -> None:
        self._allocator = allocator
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        self.allocations = 0

    def host(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A pinned host view of ``shape`` for tensor ``name``."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        current = self._host.get(name)
        if current is None or current.dtype != dtype or current.size < size:
            release = getattr(self._allocator, 'release', None)
            if current is not None and callable(release):
                release(current)
                release(self._device[name])
            self._host[name] = self._allocator.pinned_empty((max(size, 1),), dtype)
            self._device[name] = self._allocator.device_alloc(max(size, 1) * dtype.itemsize)
            self.allocations += 1
        return self._host[name][:size].reshape(shape)

    def device(self, name: str) -> Any:
        """The device allocation of tensor ``name`` (after :meth:`host`)."""
        return self._device[name]

    def reserve(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        """Allocate for ``shape`` now (for the largest profile shape at start-up)."""
        self.host(name, shape, dtype)

    def set_input(self, name: str, array: np.ndarray, dtype: Any) -> np.ndarray:
        """Copy ``array`` into the pinned buffer of ``name`` (``np.copyto``); return the view."""
        view = self.host(name, tuple(array.shape), dtype)
        np.copyto(view, array, casting='same_kind')
        return view

    def clear(self) -> None:
        """Forget every buffer (the context frees them on close)."""
        self._host.clear()
        self._device.clear()
