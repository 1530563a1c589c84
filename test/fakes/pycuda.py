"""A fake ``pycuda`` / ``pycuda.driver`` over :class:`test.fakes.cuda_driver.FakeDriver`.

It models the pycuda behaviours the CUDA runtime must cope with: a ``Context`` belongs to the
thread that made it and ``detach()`` from another thread silently does nothing; ``detach()``
of a primary context that is not current pushes it, releases it and leaves it pushed; a
``Stream`` is destroyed by its destructor (whatever context is current then); memory and
copies need a current context.
"""
from __future__ import annotations

import threading
import types
from typing import Any

import numpy as np

from .cuda_driver import FakeContext, FakeDriver


class FakeAllocator:
    def __init__(self) -> None:
        self.pinned: list[tuple] = []
        self.device: list[int] = []
        self.released: list[Any] = []

    def pinned_empty(self, shape: tuple, dtype: Any) -> np.ndarray:
        self.pinned.append(shape)
        return np.empty(shape, dtype)

    def device_alloc(self, nbytes: int) -> int:
        self.device.append(nbytes)
        return 1000 + len(self.device)

    def release(self, resource: Any) -> None:
        self.released.append(resource)


def make_fake_driver(core: FakeDriver | None = None, version: tuple = (2025, 1, 2),
                     cuda_version: tuple = (12, 6, 0)) -> types.ModuleType:
    core = core or FakeDriver()
    cuda = types.ModuleType('pycuda.driver')
    cuda.core = core  # type: ignore[attr-defined]
    cuda.events = core.events  # type: ignore[attr-defined]
    cuda.memory = core.memory  # type: ignore[attr-defined]
    cuda.stack = core.stack  # type: ignore[attr-defined]

    class Context:
        def __init__(self, primary: FakeContext) -> None:
            self.primary = primary
            self.handle = primary.address
            self.thread = threading.get_ident()
            self.valid = True

        def push(self) -> None:
            core.push(self.primary)

        @staticmethod
        def pop() -> None:
            core.pop()

        @staticmethod
        def get_current() -> Any:
            current = core.current()
            return None if current is None else Context(current)

        def detach(self) -> None:
            if not self.valid:
                return
            if threading.get_ident() != self.thread:
                core.events.append('detach ignored (other thread)')
                return  # pycuda: the owner thread is presumed gone; nothing is released
            if core.current() is not self.primary:
                core.push(self.primary)  # pycuda pushes to release and leaves it there
            core.release(self.primary.device)
            self.valid = False
            core.events.append('detach')

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return core.devices

        def name(self) -> str:
            return 'FakeGPU'

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            return Context(core.retain(self.index))

    class Stream:
        def __init__(self) -> None:
            self.handle = core.stream_create()

        def synchronize(self) -> None:
            core.require_context('stream synchronize')

        def __del__(self) -> None:
            core.stream_destroy(self.handle)

    def mem_alloc(nbytes: int) -> Any:
        return core.mem_alloc(nbytes)

    def pagelocked_empty(shape: tuple, dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        buffer = core.host_alloc(count * dtype.itemsize)
        return np.frombuffer(buffer, np.uint8, count=count * dtype.itemsize).view(
            dtype).reshape(shape)

    cuda.init = lambda: None  # type: ignore[attr-defined]
    cuda.get_version = lambda: cuda_version  # type: ignore[attr-defined]
    cuda.get_driver_version = lambda: cuda_version[0] * 1000  # type: ignore[attr-defined]
    cuda.Context = Context  # type: ignore[attr-defined]
    cuda.Device = Device  # type: ignore[attr-defined]
    cuda.Stream = Stream  # type: ignore[attr-defined]
    cuda.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    cuda.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = lambda d, s, stream: core.htod(d, s)  # type: ignore[attr-defined]
    cuda.memcpy_dtoh_async = lambda d, s, stream: core.dtoh(d, s)  # type: ignore[attr-defined]
    cuda.memcpy_htod = lambda d, s: core.htod(d, s)  # type: ignore[attr-defined]
    cuda.VERSION = version  # type: ignore[attr-defined]
    return cuda


def make_fake_pycuda(core: FakeDriver | None = None, version: tuple = (2025, 1, 2),
                     cuda_version: tuple = (12, 6, 0)) -> tuple[types.ModuleType,
                                                                types.ModuleType]:
    """``(pycuda, pycuda.driver)`` fake modules, ready for ``sys.modules``."""
    cuda = make_fake_driver(core, version, cuda_version)
    pycuda = types.ModuleType('pycuda')
    pycuda.driver = cuda  # type: ignore[attr-defined]
    pycuda.VERSION = version  # type: ignore[attr-defined]
    return pycuda, cuda
