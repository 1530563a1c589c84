"""A fake CUDA driver: per-thread context stacks, primary-context reference counts, device
memory in host memory, streams, and a record of every lifecycle rule broken.

The fake ``pycuda.driver`` (:mod:`test.fakes.pycuda`) and ``cuda.bindings.driver``
(:mod:`test.fakes.cuda_python`) are thin layers over one :class:`FakeDriver`, so the same
checks apply to both runtimes. ``errors`` collects what a real driver would punish (often
silently): work without a current context, a stream destroyed after its context was released,
streams or memory alive when the primary context is released, a context left on a thread's
stack. Tests assert ``errors == []``.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np


class FakeContext:
    """A device's primary context (one object per device, like the driver's handle)."""

    def __init__(self, device: int) -> None:
        self.device = device
        self.address = 0xC0000 + device


class FakeDeviceMemory:
    def __init__(self, nbytes: int, driver: FakeDriver) -> None:
        self.data = bytearray(nbytes)
        self.freed = False
        driver.memory.append(self)
        self.address = 0x1000 * len(driver.memory)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.freed = True


class HostAllocation(bytearray):
    """Page-locked host memory (a numpy array's buffer)."""

    freed = False

    def free(self) -> None:
        self.freed = True


class FakeDriver:
    """Driver state shared by the fake runtimes."""

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self._local = threading.local()
        self.lock = threading.Lock()
        self.primary = {d: FakeContext(d) for d in range(devices)}
        self.refcount = {d: 0 for d in range(devices)}
        self.memory: list[FakeDeviceMemory] = []
        self.host: list[HostAllocation] = []
        self.streams: dict[int, bool] = {}  # handle -> alive
        self.events: list[str] = []
        self.errors: list[str] = []
        self._next_stream = 77

    # context stack ------------------------------------------------------------------------
    def stack(self) -> list[FakeContext]:
        if not hasattr(self._local, 'items'):
            self._local.items = []
        return self._local.items

    def current(self) -> FakeContext | None:
        stack = self.stack()
        return stack[-1] if stack else None

    def require_context(self, what: str) -> None:
        current = self.current()
        if current is None or self.refcount[current.device] <= 0:
            self.errors.append(f'{what} without a live current context')
            raise AssertionError(f'{what} without a live current context')

    def retain(self, device: int) -> FakeContext:
        with self.lock:
            self.refcount[device] += 1
        self.events.append('retain')
        return self.primary[device]

    def release(self, device: int) -> None:
        with self.lock:
            self.refcount[device] -= 1
            last = self.refcount[device] == 0
        self.events.append('release')
        if last:
            alive = [h for h, ok in self.streams.items() if ok]
            if alive:
                self.errors.append(f'streams {alive} alive when the context was released')
            if any(not m.freed for m in self.memory):
                self.errors.append('device memory alive when the context was released')

    def push(self, context: FakeContext) -> None:
        if self.refcount[context.device] <= 0:
            self.errors.append('push of a released context')
        self.stack().append(context)

    def pop(self) -> FakeContext:
        stack = self.stack()
        if not stack:
            self.errors.append('pop of an empty context stack')
            raise AssertionError('pop of an empty context stack')
        return stack.pop()

    # resources ----------------------------------------------------------------------------
    def stream_create(self) -> int:
        self.require_context('stream create')
        with self.lock:
            handle = self._next_stream
            self._next_stream += 1
            self.streams[handle] = True
        return handle

    def stream_destroy(self, handle: int) -> None:
        current = self.current()
        if current is None or self.refcount[current.device] <= 0:
            self.errors.append(f'stream {handle} destroyed without its live context current')
        self.streams[handle] = False

    def mem_alloc(self, nbytes: int) -> FakeDeviceMemory:
        self.require_context('mem_alloc')
        return FakeDeviceMemory(nbytes, self)

    def by_address(self, address: int) -> FakeDeviceMemory:
        for memory in self.memory:
            if memory.address == int(address) and not memory.freed:
                return memory
        raise AssertionError(f'no live device memory at 0x{int(address):x}')

    def host_alloc(self, nbytes: int) -> HostAllocation:
        self.require_context('host alloc')
        buffer = HostAllocation(max(nbytes, 1))
        self.host.append(buffer)
        return buffer

    def htod(self, address: int, src: np.ndarray) -> None:
        self.require_context('memcpy htod')
        raw = np.ascontiguousarray(src).tobytes()
        self.by_address(address).data[:len(raw)] = raw

    def dtoh(self, dest: np.ndarray, address: int) -> None:
        self.require_context('memcpy dtoh')
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = np.frombuffer(bytes(self.by_address(address).data[:dest.nbytes]), np.uint8)

    def check_stream(self, handle: Any) -> None:
        """What TensorRT's enqueue needs: a live stream and a live current context."""
        self.require_context('execute_async_v3')
        if not self.streams.get(int(handle)):
            self.errors.append(f'execute on dead stream {handle}')
