"""A fake ``cuda.bindings.driver`` (cuda-python) over :class:`test.fakes.cuda_driver.
FakeDriver`: every call returns ``(CUresult, values...)`` like the real bindings."""
from __future__ import annotations

import enum
import types
from typing import Any

import numpy as np

from .cuda_driver import FakeContext, FakeDriver


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_INVALID_CONTEXT = 201


class CUdevice_attribute(enum.IntEnum):  # noqa: N801 - the binding's name
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


class Handle:
    """``CUcontext``/``CUstream``/``CUdeviceptr``: ``int()`` is the address."""

    def __init__(self, address: int, target: Any = None) -> None:
        self.address = address
        self.target = target

    def __int__(self) -> int:
        return self.address


def make_fake_cuda_python(core: FakeDriver) -> dict[str, types.ModuleType]:
    """``{'cuda': ..., 'cuda.bindings': ..., 'cuda.bindings.driver': ...}`` for sys.modules."""
    drv = types.ModuleType('cuda.bindings.driver')
    ok = CUresult.CUDA_SUCCESS
    pinned: dict[int, Any] = {}

    def context(handle: Any) -> FakeContext:
        for primary in core.primary.values():
            if primary.address == int(handle):
                return primary
        raise AssertionError(f'unknown context {handle}')

    def ptr(value: Any) -> int:
        return int(value)

    functions = {
        'cuInit': lambda flags: (ok,),
        'cuGetErrorName': lambda err: (ok, CUresult(err).name.encode()),
        'cuDeviceGetCount': lambda: (ok, core.devices),
        'cuDeviceGet': lambda i: ((ok, i) if 0 <= i < core.devices
                                  else (CUresult.CUDA_ERROR_INVALID_VALUE, None)),
        'cuDeviceGetName': lambda n, dev: (ok, b'FakeGPU' + b'\x00' * (n - 7)),
        'cuDeviceGetAttribute': lambda attr, dev: (
            ok, 8 if attr == CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
            else 7),
        'cuDevicePrimaryCtxRetain': lambda dev: (ok, Handle(core.retain(dev).address)),
        'cuDevicePrimaryCtxRelease': lambda dev: (core.release(dev), (ok,))[1],
        'cuCtxPushCurrent': lambda ctx: (core.push(context(ctx)), (ok,))[1],
        'cuCtxPopCurrent': lambda: (ok, Handle(core.pop().address)),
        'cuCtxGetCurrent': lambda: (ok, Handle(core.current().address if core.current()
                                               else 0)),
        'cuStreamCreate': lambda flags: (ok, Handle(core.stream_create())),
        'cuStreamSynchronize': lambda s: (core.require_context('stream synchronize'),
                                          (ok,))[1],
        'cuStreamDestroy': lambda s: (core.stream_destroy(int(s)), (ok,))[1],
        'cuMemAlloc': lambda n: (ok, Handle(core.mem_alloc(n).address)),
        'cuMemFree': lambda p: (core.by_address(ptr(p)).free(), (ok,))[1],
        'cuMemcpyHtoD': lambda d, src, n: (core.htod(ptr(d), _host(src, n)), (ok,))[1],
        'cuMemcpyHtoDAsync': lambda d, src, n, s: (core.htod(ptr(d), _host(src, n)),
                                                   (ok,))[1],
        'cuMemcpyDtoHAsync': lambda dst, d, n, s: (core.dtoh(_host(dst, n), ptr(d)),
                                                   (ok,))[1],
    }

    def mem_host_alloc(nbytes: int, flags: int) -> tuple:
        buffer = core.host_alloc(nbytes)
        array = np.frombuffer(buffer, np.uint8)
        pinned[array.ctypes.data] = buffer
        return ok, array.ctypes.data

    def mem_free_host(address: int) -> tuple:
        pinned.pop(int(address)).free()
        return (ok,)

    for name, function in functions.items():
        setattr(drv, name, function)
    drv.cuMemHostAlloc = mem_host_alloc  # type: ignore[attr-defined]
    drv.cuMemFreeHost = mem_free_host  # type: ignore[attr-defined]
    drv.CUresult = CUresult  # type: ignore[attr-defined]
    drv.CUdevice_attribute = CUdevice_attribute  # type: ignore[attr-defined]
    drv.core = core  # type: ignore[attr-defined]
    bindings = types.ModuleType('cuda.bindings')
    bindings.driver = drv  # type: ignore[attr-defined]
    cuda = types.ModuleType('cuda')
    cuda.bindings = bindings  # type: ignore[attr-defined]
    return {'cuda': cuda, 'cuda.bindings': bindings, 'cuda.bindings.driver': drv}


def _host(address: int, nbytes: int) -> np.ndarray:
    """A uint8 view of ``nbytes`` at host ``address`` (ctypes, like the real driver)."""
    import ctypes

    raw = (ctypes.c_char * nbytes).from_address(int(address))
    return np.frombuffer(memoryview(raw).cast('B'), np.uint8, count=nbytes)
