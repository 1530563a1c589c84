"""NVIDIA's cuda-python (``cuda.bindings.driver``) behind
:class:`~darknet53_ros.inference.backends.cuda_driver.CudaDriver`.

cuda-python is what NVIDIA's TensorRT samples use from 10.13 on: ``pip install
'cuda-python>=12,<13'`` for CUDA 12 (JetPack 6), ``'cuda-python>=13,<14'`` for CUDA 13
(JetPack 7), ``'cuda-python>=11.8,<12'`` for CUDA 11.4 (JetPack 5). Every call returns
``(CUresult, values...)``; a result other than ``CUDA_SUCCESS`` raises :class:`BackendError`
with the driver's error name. Releases before 12.6 have the module at ``cuda.cuda``.

Kernels compile with NVRTC (``cuda.bindings.nvrtc``, the toolkit's ``libnvrtc``; no ``nvcc``)
to PTX for the device's ``compute_XY``, which the driver loads (``cuModuleLoadData``) and
JIT-compiles; NVRTC must not be newer than the driver (true with the JetPack that installed
both). Launches pass ``cuLaunchKernel`` the ``void**`` address of an array of pointers to
each argument's value.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import ctypes
import importlib
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError
from darknet53_ros.inference.backends.cuda_driver import CudaDriver

INSTALL = ("pip install cuda-python matching the CUDA major version (JetPack 5: "
           "'cuda-python>=11.8,<12', JetPack 6: '>=12,<13', JetPack 7: '>=13,<14'); or use "
           '--cuda-runtime pycuda')


def _import_binding(name: str, legacy: str) -> Any:
    """``cuda.bindings.<name>``, or ``cuda.<legacy>`` before cuda-python 12.6."""
    try:
        return importlib.import_module(f'cuda.bindings.{name}')
    except ImportError:
        try:
            return importlib.import_module(f'cuda.{legacy}')
        except ImportError as exc:
            raise BackendError(f'cuda-python is not installed ({exc}): {INSTALL}') from exc


def _import_driver() -> Any:
    return _import_binding('driver', 'cuda')


@contextmanager
def _library_errors(library: str) -> Iterator[None]:
    """cuda-python 12.8+ loads its libraries on first use and raises cuda.pathfinder's own
    error when one is missing: turn that into one :class:`BackendError` naming ``library``."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f'cuda-python cannot load {library}: {type(exc).__name__}: '
                           f'{exc}') from exc


def _nvrtc_call(nvrtc: Any, function: str, *args: Any) -> Any:
    result = getattr(nvrtc, function)(*args)
    if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        try:
            text = nvrtc.nvrtcGetErrorString(result[0])[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:
            text = str(result[0])
        raise BackendError(f'NVRTC {function} failed: {text}')
    return result[1] if len(result) == 2 else None


def _nvrtc_log(nvrtc: Any, program: Any) -> str:
    try:
        size = _nvrtc_call(nvrtc, 'nvrtcGetProgramLogSize', program)
        log = b' ' * max(int(size), 2)  # written in place: never a cached 1-byte object
        _nvrtc_call(nvrtc, 'nvrtcGetProgramLog', program, log)
        return log.rstrip(b'\x00 ').decode(errors='replace').strip()
    except BackendError:
        return ''


def compile_ptx(source: str, name: str, options: Sequence[str],
                capability: tuple[int, int]) -> bytes:
    """PTX of ``source`` for ``compute_XY`` through NVRTC (NUL-terminated, for
    ``cuModuleLoadData``)."""
    nvrtc = _import_binding('nvrtc', 'nvrtc')
    with _library_errors('NVRTC (libnvrtc, from the CUDA toolkit or nvidia-cuda-nvrtc)'):
        program = _nvrtc_call(nvrtc, 'nvrtcCreateProgram', source.encode(),
                              f'{name}.cu'.encode(), 0, [], [])
    try:
        opts = [f'--gpu-architecture=compute_{capability[0]}{capability[1]}'.encode()]
        opts += [option.encode() for option in options]
        try:
            _nvrtc_call(nvrtc, 'nvrtcCompileProgram', program, len(opts), opts)
        except BackendError as exc:
            raise BackendError(f'{exc}: {_nvrtc_log(nvrtc, program)}') from exc
        size = _nvrtc_call(nvrtc, 'nvrtcGetPTXSize', program)
        ptx = b' ' * max(int(size), 2)
        _nvrtc_call(nvrtc, 'nvrtcGetPTX', program, ptx)  # written into ``ptx``, as in C
        return ptx
    finally:
        nvrtc.nvrtcDestroyProgram(program)  # clean-up: its result must not hide an error


def _address(handle: Any) -> int:
    """The pointer value of a cuda-python handle (``CUcontext``, ``CUstream``, ...)."""
    try:
        return int(handle)
    except TypeError:
        return int(handle.getPtr())


class CudaPythonDriver(CudaDriver):
    """The CUDA driver API through cuda-python."""

    name = 'cuda-python'

    def __init__(self) -> None:
        self._driver = _import_driver()
        with _library_errors('the NVIDIA driver (libcuda)'):
            self._call('cuInit', 0)

    def _call(self, function: str, *args: Any) -> Any:
        result = getattr(self._driver, function)(*args)
        error, values = result[0], result[1:]
        if error != self._driver.CUresult.CUDA_SUCCESS:
            try:
                name = self._driver.cuGetErrorName(error)[1]
                name = name.decode() if isinstance(name, bytes) else str(name)
            except Exception:
                name = str(error)
            raise BackendError(f'CUDA {function} failed: {name}')
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def _device(self, index: int) -> Any:
        return self._call('cuDeviceGet', index)

    def device_count(self) -> int:
        return int(self._call('cuDeviceGetCount'))

    def device_name(self, index: int) -> str:
        raw = self._call('cuDeviceGetName', 256, self._device(index))
        text = raw.decode(errors='replace') if isinstance(raw, bytes) else str(raw)
        return text.split('\x00', 1)[0].strip()

    def compute_capability(self, index: int) -> tuple[int, int]:
        attr = self._driver.CUdevice_attribute
        device = self._device(index)
        major = self._call('cuDeviceGetAttribute',
                           attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        minor = self._call('cuDeviceGetAttribute',
                           attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        return int(major), int(minor)

    def retain_primary(self, index: int) -> Any:
        return self._call('cuDevicePrimaryCtxRetain', self._device(index))

    def release_primary(self, index: int, context: Any) -> None:
        self._call('cuDevicePrimaryCtxRelease', self._device(index))

    def push(self, context: Any) -> None:
        self._call('cuCtxPushCurrent', context)

    def pop(self) -> None:
        self._call('cuCtxPopCurrent')

    def is_current(self, context: Any) -> bool:
        current = self._call('cuCtxGetCurrent')
        return current is not None and _address(current) != 0 and \
            _address(current) == _address(context)

    def stream_create(self) -> Any:
        return self._call('cuStreamCreate', 0)

    def stream_handle(self, stream: Any) -> int:
        return _address(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._call('cuStreamSynchronize', stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call('cuStreamDestroy', stream)

    def event_create(self) -> Any:
        flags = self._driver.CUevent_flags
        return self._call('cuEventCreate', int(flags.CU_EVENT_BLOCKING_SYNC)
                          | int(flags.CU_EVENT_DISABLE_TIMING))

    def event_record(self, event: Any, stream: Any) -> None:
        self._call('cuEventRecord', event, stream)

    def event_synchronize(self, event: Any) -> None:
        self._call('cuEventSynchronize', event)  # the binding releases the GIL

    def event_destroy(self, event: Any) -> None:
        self._call('cuEventDestroy', event)

    def mem_alloc(self, nbytes: int) -> tuple[int, Any]:
        pointer = self._call('cuMemAlloc', nbytes)
        return _address(pointer), pointer

    def mem_free(self, token: Any) -> None:
        self._call('cuMemFree', token)

    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[np.ndarray,
                                                                                 Any]:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        pointer = _address(self._call('cuMemHostAlloc', max(nbytes, 1), 0))
        raw = (ctypes.c_char * max(nbytes, 1)).from_address(pointer)
        array = np.frombuffer(memoryview(raw).cast('B'), np.uint8, count=nbytes)
        array = array.view(dtype).reshape(shape)
        return array, pointer

    def host_free(self, token: Any) -> None:
        self._call('cuMemFreeHost', token)

    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: Any) -> None:
        self._call('cuMemcpyHtoDAsync', dest, src.ctypes.data, src.nbytes, stream)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: Any) -> None:
        self._call('cuMemcpyDtoHAsync', dest.ctypes.data, src, dest.nbytes, stream)

    def memcpy_htod(self, dest: int, src: np.ndarray) -> None:
        self._call('cuMemcpyHtoD', dest, src.ctypes.data, src.nbytes)

    def compile_kernel(self, source: str, name: str, options: Sequence[str],
                       capability: tuple[int, int]) -> tuple[Any, Any]:
        ptx = compile_ptx(source, name, options, capability)
        module = self._call('cuModuleLoadData', np.char.array(ptx))
        try:
            return module, self._call('cuModuleGetFunction', module, name.encode())
        except BackendError:
            self._call('cuModuleUnload', module)
            raise

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], stream: Any) -> None:
        values = [np.array([arg], dtype=np.asarray(arg).dtype) for arg in args]
        params = np.array([value.ctypes.data for value in values], dtype=np.uint64)
        self._call('cuLaunchKernel', function, int(grid[0]), int(grid[1]), int(grid[2]),
                   int(block[0]), int(block[1]), int(block[2]), 0,
                   0 if stream is None else stream, params.ctypes.data, 0)

    def module_unload(self, module: Any) -> None:
        self._call('cuModuleUnload', module)
