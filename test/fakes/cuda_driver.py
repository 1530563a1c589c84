"""A fake CUDA driver: per-thread context stacks, primary-context reference counts, device
memory in host memory, streams, and a record of every lifecycle rule broken.

The fake ``pycuda.driver`` (:mod:`test.fakes.pycuda`) and ``cuda.bindings.driver``
(:mod:`test.fakes.cuda_python`) are thin layers over one :class:`FakeDriver`, so the same
checks apply to both runtimes. ``errors`` collects what a real driver would punish (often
silently): work without a current context, a stream destroyed after its context was released,
streams or memory alive when the primary context is released, a context left on a thread's
stack, a module still loaded then, a launch without a live stream. Tests assert
``errors == []``. Kernels (:mod:`test.fakes.kernels`) run NumPy models on the device memory.

Waiting is modelled as the driver does it: ``waits`` records ``'spin'`` for
``cuStreamSynchronize`` (the default context flags, ``CU_CTX_SCHED_AUTO``, spin a core while
the GPU works when the process has fewer contexts than CPUs) and for events created without
``CU_EVENT_BLOCKING_SYNC``, ``'block'`` for a blocking-sync event (the thread sleeps).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .kernels import FakeFunction, FakeModule, run


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
        self.address = driver.next_address  # disjoint ranges, a guard page between them
        driver.next_address += (nbytes // 0x1000 + 2) * 0x1000

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
        self.next_address = 0x1000
        self.modules: list[FakeModule] = []
        self.compiles: list[dict[str, Any]] = []  # one entry per compilation, with options
        self.launches: list[str] = []  # kernel name per launch
        self.event_objects: dict[int, dict[str, Any]] = {}  # handle -> flags, alive, recorded
        self.waits: list[str] = []  # 'spin' or 'block' per synchronisation

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
            if any(m.loaded for m in self.modules):
                self.errors.append('a module was loaded when the context was released')
            if any(e['alive'] for e in self.event_objects.values()):
                self.errors.append('an event was alive when the context was released')

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

    def stream_synchronize(self, handle: Any) -> None:
        """``cuStreamSynchronize``: spins under the default context flags."""
        self.require_context('stream synchronize')
        self.waits.append('spin')

    BLOCKING_SYNC, DISABLE_TIMING = 1, 2  # CU_EVENT_* flag values

    def event_create(self, flags: int) -> int:
        self.require_context('event create')
        with self.lock:
            handle = self._next_stream
            self._next_stream += 1
            self.event_objects[handle] = {'flags': int(flags), 'alive': True, 'recorded': False}
        return handle

    def event_record(self, handle: int, stream: Any) -> None:
        self.require_context('event record')
        event = self.event_objects[int(handle)]
        if not event['alive'] or not self.streams.get(int(stream)):
            self.errors.append(f'event record on a dead event {handle} or stream {stream}')
        event['recorded'] = True

    def event_synchronize(self, handle: int) -> None:
        self.require_context('event synchronize')
        event = self.event_objects[int(handle)]
        if not event['alive']:
            self.errors.append(f'synchronize on destroyed event {handle}')
        self.waits.append('block' if event['flags'] & self.BLOCKING_SYNC else 'spin')

    def event_destroy(self, handle: int) -> None:
        current = self.current()
        if current is None or self.refcount[current.device] <= 0:
            self.errors.append(f'event {handle} destroyed without its live context current')
        self.event_objects[int(handle)]['alive'] = False

    def mem_alloc(self, nbytes: int) -> FakeDeviceMemory:
        self.require_context('mem_alloc')
        return FakeDeviceMemory(nbytes, self)

    def by_address(self, address: int) -> FakeDeviceMemory:
        for memory in self.memory:
            if memory.address == int(address) and not memory.freed:
                return memory
        raise AssertionError(f'no live device memory at 0x{int(address):x}')

    def locate(self, address: int, nbytes: int) -> tuple[FakeDeviceMemory, int]:
        """The live allocation holding ``[address, address + nbytes)`` and the offset."""
        for memory in self.memory:
            offset = int(address) - memory.address
            if not memory.freed and 0 <= offset and offset + nbytes <= len(memory.data):
                return memory, offset
        raise AssertionError(f'no live device memory holds {nbytes} bytes at '
                             f'0x{int(address):x}')

    def read(self, address: int, nbytes: int) -> np.ndarray:
        """A uint8 copy of device memory (a kernel's load)."""
        memory, offset = self.locate(address, nbytes)
        return np.frombuffer(bytes(memory.data[offset:offset + nbytes]), np.uint8)

    def write(self, address: int, array: np.ndarray) -> None:
        """Store ``array``'s bytes in device memory (a kernel's store)."""
        raw = np.ascontiguousarray(array).tobytes()
        memory, offset = self.locate(address, len(raw))
        memory.data[offset:offset + len(raw)] = raw

    # kernels ------------------------------------------------------------------------------
    def load_module(self, source: str) -> FakeModule:
        """Load the kernels of ``source`` into the current context."""
        self.require_context('module load')
        module = FakeModule(source)
        if not module.functions:
            raise AssertionError('no extern "C" __global__ kernel in the source')
        self.modules.append(module)
        return module

    def unload_module(self, module: FakeModule) -> None:
        """``cuModuleUnload``: needs the module's live context current."""
        self.require_context('module unload')
        if not module.loaded:
            self.errors.append('module unloaded twice')
        module.loaded = False

    def launch(self, function: FakeFunction, grid: tuple[int, ...], block: tuple[int, ...],
               values: list[Any], stream: Any) -> None:
        """Run a kernel with decoded arguments (see :func:`test.fakes.kernels.run`)."""
        run(self, function, grid, block, values, stream)

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
