"""A fake ``pycuda.driver``: contexts, device memory and copies in host memory.

Data really flows host -> "device" -> host, and every call that needs a current CUDA context
asserts that one is current (per thread, like CUDA).
"""
from __future__ import annotations

import threading
import types
from typing import Any

import numpy as np


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


class FakeDeviceMemory:
    def __init__(self, nbytes: int, registry: list) -> None:
        self.data = bytearray(nbytes)
        self.freed = False
        registry.append(self)
        self.address = 0x1000 * len(registry)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.freed = True


def make_fake_driver() -> types.ModuleType:
    cuda = types.ModuleType('pycuda.driver')
    stacks = threading.local()
    cuda.events = []  # type: ignore[attr-defined]
    cuda.memory = []  # type: ignore[attr-defined]

    def stack() -> list:
        if not hasattr(stacks, 'items'):
            stacks.items = []
        return stacks.items

    class Context:
        def push(self) -> None:
            stack().append(self)

        @staticmethod
        def pop() -> None:
            stack().pop()

        @staticmethod
        def get_current() -> Any:
            return stack()[-1] if stack() else None

        def detach(self) -> None:
            if stack() and stack()[-1] is self:
                stack().pop()
            cuda.events.append('detach')

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return 'FakeGPU'

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            return Context()

    class Stream:
        handle = 77

        def synchronize(self) -> None:
            assert stack(), 'stream used without a current context'

    def require_context() -> None:
        assert stack(), 'CUDA call without a current context'

    def mem_alloc(nbytes: int) -> FakeDeviceMemory:
        require_context()
        return FakeDeviceMemory(nbytes, cuda.memory)

    def pagelocked_empty(shape: tuple, dtype: Any) -> np.ndarray:
        require_context()
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest: FakeDeviceMemory, src: np.ndarray, stream: Any) -> None:
        require_context()
        raw = np.ascontiguousarray(src).tobytes()
        dest.data[:len(raw)] = raw

    def memcpy_dtoh_async(dest: np.ndarray, src: FakeDeviceMemory, stream: Any) -> None:
        require_context()
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = np.frombuffer(bytes(src.data[:dest.nbytes]), np.uint8)

    cuda.init = lambda: None  # type: ignore[attr-defined]
    cuda.Context = Context  # type: ignore[attr-defined]
    cuda.Device = Device  # type: ignore[attr-defined]
    cuda.Stream = Stream  # type: ignore[attr-defined]
    cuda.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    cuda.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
    cuda.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    cuda.stack = stack  # type: ignore[attr-defined]
    return cuda


def make_fake_pycuda() -> tuple[types.ModuleType, types.ModuleType]:
    """``(pycuda, pycuda.driver)`` fake modules, ready for ``sys.modules``."""
    cuda = make_fake_driver()
    pycuda = types.ModuleType('pycuda')
    pycuda.driver = cuda  # type: ignore[attr-defined]
    return pycuda, cuda
