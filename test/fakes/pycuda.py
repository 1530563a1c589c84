"""A fake ``pycuda`` / ``pycuda.driver`` over :class:`test.fakes.cuda_driver.FakeDriver`.

It models the pycuda behaviours the CUDA runtime must cope with: a ``Context`` belongs to the
thread that made it and ``detach()`` from another thread silently does nothing; ``detach()``
of a primary context that is not current pushes it, releases it and leaves it pushed; a
``Stream`` is destroyed by its destructor (whatever context is current then); memory and
copies need a current context. ``pycuda.compiler.SourceModule`` loads the source's kernels (the
module is unloaded by its destructor, like a stream); calling a function packs its arguments
as pycuda's ``_build_arg_buf`` does (NumPy scalars by ``dtype.char``, device allocations as
``P``, anything else a ``TypeError``) and the fake decodes that buffer by the kernel's C
signature, so a wrongly typed argument changes the buffer or the values the kernel sees.
"""
from __future__ import annotations

import struct
import threading
import types
from typing import Any

import numpy as np

from .cuda_driver import FakeContext, FakeDeviceMemory, FakeDriver
from .kernels import FakeFunction


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
            core.stream_synchronize(self.handle)

        def __del__(self) -> None:
            core.stream_destroy(self.handle)

    class Event:
        def __init__(self, flags: int = 0) -> None:
            self.handle = core.event_create(flags)

        def record(self, stream: Any = None) -> Event:
            core.event_record(self.handle, 0 if stream is None else stream.handle)
            return self

        def synchronize(self) -> Event:
            core.event_synchronize(self.handle)
            return self

        def __del__(self) -> None:  # pycuda destroys an event with its last reference
            if getattr(self, 'handle', None) is not None:
                core.event_destroy(self.handle)

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
    cuda.Event = Event  # type: ignore[attr-defined]
    cuda.event_flags = types.SimpleNamespace(  # type: ignore[attr-defined]
        DEFAULT=0, BLOCKING_SYNC=core.BLOCKING_SYNC, DISABLE_TIMING=core.DISABLE_TIMING)
    cuda.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    cuda.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = lambda d, s, stream: core.htod(d, s)  # type: ignore[attr-defined]
    cuda.memcpy_dtoh_async = lambda d, s, stream: core.dtoh(d, s)  # type: ignore[attr-defined]
    cuda.memcpy_htod = lambda d, s: core.htod(d, s)  # type: ignore[attr-defined]
    cuda.VERSION = version  # type: ignore[attr-defined]
    return cuda


class Function:
    """``pycuda.driver.Function``: ``function(*args, block=, grid=, stream=, shared=)``."""

    def __init__(self, core: FakeDriver, function: FakeFunction) -> None:
        self.core = core
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        grid = tuple(kwargs.pop('grid', (1, 1)))
        stream = kwargs.pop('stream', None)
        block = kwargs.pop('block', None)
        kwargs.pop('shared', 0)
        if kwargs:
            raise ValueError(f'extra keyword arguments: {",".join(kwargs)}')
        if block is None:
            raise ValueError('must specify block size')
        if len(grid) > 3 or len(block) > 3:
            raise ValueError(f'grid {grid} / block {block}: at most 3 dimensions')
        fmt, data = '', []
        for i, arg in enumerate(args):
            if isinstance(arg, np.number):
                fmt += arg.dtype.char
                data.append(arg)
            elif isinstance(arg, FakeDeviceMemory):  # a DeviceAllocation
                fmt += 'P'
                data.append(int(arg))
            else:
                raise TypeError(f'invalid type on parameter #{i} (0-based)')
        buffer = struct.pack(fmt, *data)
        expected = self.function.format
        if struct.calcsize(expected) != len(buffer):
            self.core.errors.append(f'{self.function.name}: {len(buffer)} argument bytes '
                                    f'({fmt}), the kernel takes {struct.calcsize(expected)}')
            raise AssertionError(self.core.errors[-1])
        values = list(struct.unpack(expected, buffer))
        pad = (1, 1, 1)
        self.core.launch(self.function, grid + pad[len(grid):], tuple(block) + pad[len(block):],
                         values, None if stream is None else stream.handle)


def make_fake_compiler(core: FakeDriver) -> types.ModuleType:
    """A fake ``pycuda.compiler`` (``SourceModule``) over ``core``."""
    compiler = types.ModuleType('pycuda.compiler')

    class SourceModule:
        def __init__(self, source: str, nvcc: str = 'nvcc', options: Any = None,
                     keep: bool = False, no_extern_c: bool = False, arch: Any = None,
                     code: Any = None, cache_dir: Any = None, include_dirs: Any = ()) -> None:
            core.compiles.append({'runtime': 'pycuda', 'nvcc': nvcc, 'arch': arch,
                                  'options': list(options or [])})
            if not no_extern_c:  # pycuda wraps the source in extern "C" { ... }
                source = 'extern "C" {\n' + source + '\n}\n'
            self.module = core.load_module(source)

        def get_function(self, name: str) -> Function:
            if name not in self.module.functions:
                raise RuntimeError(f'cuModuleGetFunction failed: named symbol not found ({name})')
            return Function(core, self.module.functions[name])

        def __del__(self) -> None:  # pycuda unloads with the last reference
            if getattr(self, 'module', None) is not None and self.module.loaded:
                current = core.current()
                if current is None or core.refcount[current.device] <= 0:
                    core.errors.append('module unloaded without its live context current')
                self.module.loaded = False

    compiler.SourceModule = SourceModule  # type: ignore[attr-defined]
    return compiler


def make_fake_pycuda(core: FakeDriver | None = None, version: tuple = (2025, 1, 2),
                     cuda_version: tuple = (12, 6, 0)) -> tuple[types.ModuleType,
                                                                types.ModuleType]:
    """``(pycuda, pycuda.driver)`` fake modules, ready for ``sys.modules``; ``pycuda.compiler``
    is an attribute of the first."""
    cuda = make_fake_driver(core, version, cuda_version)
    pycuda = types.ModuleType('pycuda')
    pycuda.driver = cuda  # type: ignore[attr-defined]
    pycuda.compiler = make_fake_compiler(cuda.core)  # type: ignore[attr-defined]
    pycuda.VERSION = version  # type: ignore[attr-defined]
    return pycuda, cuda
