"""A fake ``cuda.bindings.driver`` and ``cuda.bindings.nvrtc`` (cuda-python) over
:class:`test.fakes.cuda_driver.FakeDriver`: every call returns ``(CUresult, values...)`` (or
``(nvrtcResult, ...)``) like the real bindings.

NVRTC "compiles" to a fake PTX (a header naming ``compute_XY``, then the source) written into
the caller's buffer as the real ``nvrtcGetPTX`` does; ``cuModuleLoadData`` refuses PTX for a
newer architecture than the device; ``cuLaunchKernel`` takes ``kernelParams`` as the address
of an array of pointers to each argument (``void**``) and reads every argument by the
kernel's C signature, so a wrongly packed argument reaches the kernel wrong.
"""
from __future__ import annotations

import ctypes
import enum
import re
import struct
import types
from typing import Any

import numpy as np

from .cuda_driver import FakeContext, FakeDriver
from .kernels import FakeFunction, FakeModule


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_INVALID_CONTEXT = 201


class nvrtcResult(enum.IntEnum):  # noqa: N801 - the binding's name
    NVRTC_SUCCESS = 0
    NVRTC_ERROR_INVALID_INPUT = 3
    NVRTC_ERROR_INVALID_OPTION = 5
    NVRTC_ERROR_COMPILATION = 6


class CUdevice_attribute(enum.IntEnum):  # noqa: N801 - the binding's name
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


class CUevent_flags(enum.IntEnum):  # noqa: N801 - the binding's name
    CU_EVENT_DEFAULT = 0
    CU_EVENT_BLOCKING_SYNC = 1
    CU_EVENT_DISABLE_TIMING = 2


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
        'cuStreamSynchronize': lambda s: (core.stream_synchronize(int(s)), (ok,))[1],
        'cuEventCreate': lambda flags: (ok, Handle(core.event_create(int(flags)))),
        'cuEventRecord': lambda e, s: (core.event_record(int(e), int(s)), (ok,))[1],
        'cuEventSynchronize': lambda e: (core.event_synchronize(int(e)), (ok,))[1],
        'cuEventDestroy': lambda e: (core.event_destroy(int(e)), (ok,))[1],
        'cuStreamDestroy': lambda s: (core.stream_destroy(int(s)), (ok,))[1],
        'cuMemAlloc': lambda n: (ok, Handle(core.mem_alloc(n).address)),
        'cuMemFree': lambda p: (core.by_address(ptr(p)).free(), (ok,))[1],
        'cuMemcpyHtoD': lambda d, src, n: (core.htod(ptr(d), _host(src, n)), (ok,))[1],
        'cuMemcpyHtoDAsync': lambda d, src, n, s: (core.htod(ptr(d), _host(src, n)),
                                                   (ok,))[1],
        'cuMemcpyDtoHAsync': lambda dst, d, n, s: (core.dtoh(_host(dst, n), ptr(d)),
                                                   (ok,))[1],
        'cuModuleUnload': lambda m: (core.unload_module(m.target), (ok,))[1],
    }

    def module_load_data(image: Any) -> tuple:
        raw = np.asarray(image).tobytes().split(b'\x00', 1)[0].decode()
        target = re.match(r'// fake PTX compute_(\d)(\d)\n', raw)
        if target is None:
            return CUresult.CUDA_ERROR_INVALID_VALUE, None
        if (int(target[1]), int(target[2])) > (8, 7):  # the fake device is compute 8.7
            return CUresult.CUDA_ERROR_INVALID_VALUE, None
        return ok, Handle(id(image), core.load_module(raw))

    def module_get_function(module: Handle, name: bytes) -> tuple:
        if not isinstance(name, bytes):
            raise TypeError('cuModuleGetFunction: name must be bytes')
        function = module.target.functions.get(name.decode())
        return (ok, Handle(id(function), function)) if function else \
            (CUresult.CUDA_ERROR_INVALID_VALUE, None)

    def launch_kernel(function: Handle, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                      shared: int, stream: Any, params: Any, extra: Any) -> tuple:
        kernel: FakeFunction = function.target
        if not isinstance(params, int):
            raise AssertionError('the fake takes kernelParams as a void** address (int)')
        pointers = (ctypes.c_uint64 * len(kernel.params)).from_address(params)
        values = [struct.unpack(char, ctypes.string_at(pointer, struct.calcsize(char)))[0]
                  for (char, _), pointer in zip(kernel.params, pointers)]
        core.launch(kernel, (gx, gy, gz), (bx, by, bz), values, int(stream))
        return (ok,)

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
    drv.cuModuleLoadData = module_load_data  # type: ignore[attr-defined]
    drv.cuModuleGetFunction = module_get_function  # type: ignore[attr-defined]
    drv.cuLaunchKernel = launch_kernel  # type: ignore[attr-defined]
    drv.cuMemFreeHost = mem_free_host  # type: ignore[attr-defined]
    drv.CUresult = CUresult  # type: ignore[attr-defined]
    drv.CUdevice_attribute = CUdevice_attribute  # type: ignore[attr-defined]
    drv.CUevent_flags = CUevent_flags  # type: ignore[attr-defined]
    drv.core = core  # type: ignore[attr-defined]
    nvrtc = make_fake_nvrtc(core)
    bindings = types.ModuleType('cuda.bindings')
    bindings.driver = drv  # type: ignore[attr-defined]
    bindings.nvrtc = nvrtc  # type: ignore[attr-defined]
    cuda = types.ModuleType('cuda')
    cuda.bindings = bindings  # type: ignore[attr-defined]
    return {'cuda': cuda, 'cuda.bindings': bindings, 'cuda.bindings.driver': drv,
            'cuda.bindings.nvrtc': nvrtc}


class _Program:
    def __init__(self, source: str) -> None:
        self.source = source
        self.ptx = b''
        self.log = b''
        self.destroyed = False


def make_fake_nvrtc(core: FakeDriver) -> types.ModuleType:
    """A fake ``cuda.bindings.nvrtc``; every compilation is recorded in ``core.compiles``."""
    nvrtc = types.ModuleType('cuda.bindings.nvrtc')
    ok = nvrtcResult.NVRTC_SUCCESS
    programs: list[_Program] = []

    def create(src: bytes, name: bytes, count: int, headers: Any, names: Any) -> tuple:
        if not isinstance(src, bytes) or not isinstance(name, bytes):
            raise TypeError('nvrtcCreateProgram: src and name must be bytes')
        programs.append(_Program(src.decode()))
        return ok, len(programs) - 1

    def compile_program(prog: int, count: int, options: list) -> tuple:
        program = programs[prog]
        if count != len(options) or not all(isinstance(o, bytes) for o in options):
            return (nvrtcResult.NVRTC_ERROR_INVALID_INPUT,)
        arch = [o for o in options if o.startswith(b'--gpu-architecture=compute_')]
        if len(arch) != 1:
            return (nvrtcResult.NVRTC_ERROR_INVALID_OPTION,)
        core.compiles.append({'runtime': 'cuda-python', 'arch': arch[0].decode(),
                              'options': [o.decode() for o in options]})
        if not FakeModule(program.source).functions:
            program.log = b'error: no extern "C" __global__ kernel\x00'
            return (nvrtcResult.NVRTC_ERROR_COMPILATION,)
        target = arch[0].split(b'_')[-1]
        program.ptx = b'// fake PTX compute_' + target + b'\n' + program.source.encode() + b'\x00'
        return (ok,)

    def into(buffer: bytes, data: bytes) -> tuple:
        """Write ``data`` into the caller's ``bytes`` buffer, as the real binding does."""
        if len(buffer) < len(data):
            return (nvrtcResult.NVRTC_ERROR_INVALID_INPUT,)
        ctypes.memmove(ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value, data,
                       len(data))
        return (ok,)

    def destroy(prog: int) -> tuple:
        programs[prog].destroyed = True
        return (ok,)

    nvrtc.nvrtcResult = nvrtcResult  # type: ignore[attr-defined]
    nvrtc.nvrtcCreateProgram = create  # type: ignore[attr-defined]
    nvrtc.nvrtcCompileProgram = compile_program  # type: ignore[attr-defined]
    nvrtc.nvrtcGetPTXSize = lambda p: (ok, len(programs[p].ptx))  # type: ignore[attr-defined]
    nvrtc.nvrtcGetPTX = lambda p, buf: into(buf, programs[p].ptx)  # type: ignore[attr-defined]
    nvrtc.nvrtcGetProgramLogSize = (  # type: ignore[attr-defined]
        lambda p: (ok, max(len(programs[p].log), 1)))
    nvrtc.nvrtcGetProgramLog = (  # type: ignore[attr-defined]
        lambda p, buf: into(buf, programs[p].log or b'\x00'))
    nvrtc.nvrtcDestroyProgram = destroy  # type: ignore[attr-defined]
    nvrtc.nvrtcGetErrorString = (  # type: ignore[attr-defined]
        lambda err: (ok, nvrtcResult(err).name.encode()))
    nvrtc.programs = programs  # type: ignore[attr-defined]
    return nvrtc


def _host(address: int, nbytes: int) -> np.ndarray:
    """A uint8 view of ``nbytes`` at host ``address`` (ctypes, like the real driver)."""
    import ctypes

    raw = (ctypes.c_char * nbytes).from_address(int(address))
    return np.frombuffer(memoryview(raw).cast('B'), np.uint8, count=nbytes)
