"""NVIDIA's cuda-python (``cuda.bindings.driver``) behind :class:`~darknet53_ros.inference.
backends.cuda_driver.CudaDriver`.

cuda-python is what NVIDIA's TensorRT samples use from 10.13 on: ``pip install
'cuda-python>=12,<13'`` for CUDA 12 (JetPack 6), ``'cuda-python>=13,<14'`` for CUDA 13
(JetPack 7), ``'cuda-python>=11.8,<12'`` for CUDA 11.4 (JetPack 5). Every call returns
``(CUresult, values...)``; a result other than ``CUDA_SUCCESS`` raises :class:`BackendError`
with the driver's error name. Releases before 12.6 have the module at ``cuda.cuda``.
"""
from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError
from darknet53_ros.inference.backends.cuda_driver import CudaDriver

INSTALL = ("pip install cuda-python matching the CUDA major version (JetPack 5: "
           "'cuda-python>=11.8,<12', JetPack 6: '>=12,<13', JetPack 7: '>=13,<14'); or use "
           '--cuda-runtime pycuda')


def _import_driver() -> Any:
    try:
        return importlib.import_module('cuda.bindings.driver')
    except ImportError:
        try:
            return importlib.import_module('cuda.cuda')  # cuda-python < 12.6
        except ImportError as exc:
            raise BackendError(f'cuda-python is not installed ({exc}): {INSTALL}') from exc


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
