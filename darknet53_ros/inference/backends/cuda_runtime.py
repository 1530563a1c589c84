"""pycuda runtime for the TensorRT backend: primary context, pinned/device buffers, streams.

* :class:`CudaContext` retains the device's **primary** context (the one the CUDA runtime, and
  so TensorRT, uses) instead of creating a private one, and makes it current only inside
  ``with ctx.scope():``. Scopes nest per thread (only the outermost pushes/pops), so any thread
  may call in; nothing is left on a thread's context stack afterwards.
* :class:`IOBuffers` keeps one pinned host array and one device allocation per tensor, sized
  for the largest shape seen, allocated once and reused (inputs are copied in with
  ``np.copyto``); smaller batches use leading views.
* :meth:`CudaContext.close` frees what it handed out in order (buffers, then streams), then
  releases the primary context. Call it from the thread that created the context.

pycuda is imported lazily (never ``pycuda.autoinit``); importing this module touches no GPU.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import logging
import threading
from typing import Any, Protocol

import numpy as np

from darknet53_ros.errors import BackendError

_LOG = logging.getLogger(__name__)


def _driver() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError('pycuda is not installed (pip install pycuda on the Jetson, with '
                           'the CUDA toolkit of JetPack on PATH)') from exc
    cuda.init()
    return cuda


def device_info(device_id: int = 0) -> tuple[str, tuple[int, int]]:
    """``(name, (major, minor))`` of a CUDA device (initialises the driver, no context)."""
    cuda = _driver()
    count = cuda.Device.count()
    if not 0 <= device_id < count:
        raise BackendError(f'CUDA device {device_id}: {count} device(s) present')
    device = cuda.Device(device_id)
    major, minor = device.compute_capability()
    return str(device.name()), (int(major), int(minor))


class Allocator(Protocol):
    """What :class:`IOBuffers` needs; :class:`CudaContext` implements it with pycuda."""

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A page-locked host array."""

    def device_alloc(self, nbytes: int) -> Any:
        """A device allocation whose ``int()`` is the device pointer."""


class CudaContext:
    """The primary CUDA context of one device, pushed only inside :meth:`scope`.

    Resources made through :meth:`pinned_empty`, :meth:`device_alloc` and :meth:`stream` are
    owned by the context and released by :meth:`close`.
    """

    def __init__(self, device_id: int = 0) -> None:
        cuda = _driver()
        count = cuda.Device.count()
        if not 0 <= device_id < count:
            raise BackendError(f'CUDA device {device_id}: {count} device(s) present')
        self._cuda = cuda
        self.device_id = device_id
        self.device = cuda.Device(device_id)
        self._context = self.device.retain_primary_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._host: list[np.ndarray] = []
        self._device: list[Any] = []
        self._streams: list[Any] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    @property
    def depth(self) -> int:
        """How deep the calling thread is inside :meth:`scope` (0: not inside)."""
        return int(getattr(self._local, 'depth', 0))

    @contextmanager
    def scope(self) -> Iterator[CudaContext]:
        """Make the context current in this thread for the block (re-entrant per thread)."""
        if self._closed:
            raise BackendError(f'CUDA context of device {self.device_id} is closed')
        depth = self.depth
        if depth == 0:
            self._context.push()
        self._local.depth = depth + 1
        try:
            yield self
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                self._cuda.Context.pop()

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A page-locked host array owned by this context."""
        with self.scope():
            array = self._cuda.pagelocked_empty(shape, dtype)
        with self._lock:
            self._host.append(array)
        return array

    def device_alloc(self, nbytes: int) -> Any:
        """A device allocation (``int(alloc)`` is the pointer) owned by this context."""
        with self.scope():
            alloc = self._cuda.mem_alloc(max(int(nbytes), 1))
        with self._lock:
            self._device.append(alloc)
        return alloc

    def stream(self) -> Any:
        """A new CUDA stream owned by this context (``.handle`` for TensorRT)."""
        with self.scope():
            stream = self._cuda.Stream()
        with self._lock:
            self._streams.append(stream)
        return stream

    def release(self, resource: Any) -> None:
        """Free one resource made by this context now (device memory or pinned memory)."""
        with self._lock:
            for pool in (self._device, self._host):
                for i, item in enumerate(pool):
                    if item is resource:
                        del pool[i]
                        break
        with self.scope():
            _free(resource)

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: Any) -> None:
        """Asynchronous host-to-device copy of ``src`` (pinned) on ``stream``."""
        self._cuda.memcpy_htod_async(dest, src, stream)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: Any) -> None:
        """Asynchronous device-to-host copy into ``dest`` (pinned) on ``stream``."""
        self._cuda.memcpy_dtoh_async(dest, src, stream)

    def close(self) -> None:
        """Free buffers, then streams, then release the primary context (idempotent).

        Must run in the thread that created the context and outside any :meth:`scope`.
        """
        if self._closed:
            return
        if threading.get_ident() != self._owner:
            _LOG.warning('CudaContext.close() called from another thread than the one that '
                         'created it; the primary context reference is released anyway')
        with self.scope():
            with self._lock:
                device, host, streams = self._device, self._host, self._streams
                self._device, self._host, self._streams = [], [], []
            for alloc in device:
                _free(alloc)
            for array in host:
                _free(array)
            for stream in streams:
                try:
                    stream.synchronize()
                except Exception as exc:
                    _LOG.warning('stream synchronize on close failed: %s', exc)
            del streams  # pycuda destroys a stream when its last reference goes
        self._closed = True
        self._context.detach()  # pops it if current and releases the primary context
        self._context = None

    def __enter__(self) -> CudaContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f'CudaContext(device_id={self.device_id}, closed={self._closed})'


def _free(resource: Any) -> None:
    """Free pycuda device memory or a page-locked array; fakes without ``free`` are ignored."""
    target = resource
    if isinstance(resource, np.ndarray):
        target = resource.base
        while isinstance(target, np.ndarray):
            target = target.base
    free = getattr(target, 'free', None)
    if callable(free):
        try:
            free()
        except Exception as exc:
            _LOG.warning('freeing CUDA memory failed: %s', exc)


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
