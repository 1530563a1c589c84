"""The driver calls the CUDA runtime interface needs (:class:`CudaDriver`), implemented once
per Python CUDA binding (:mod:`~darknet53_ros.inference.backends.cuda_pycuda`,
:mod:`~darknet53_ros.inference.backends.cuda_python`) and used by
:class:`~darknet53_ros.inference.backends.cuda_runtime.CudaContext`."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np


class CudaDriver(abc.ABC):
    """The driver calls :class:`CudaContext` needs; one subclass per Python CUDA binding.

    Handles (context, stream, allocations) are the binding's own objects, opaque here.
    """

    name = ''

    @abc.abstractmethod
    def device_count(self) -> int:
        """Number of CUDA devices."""

    @abc.abstractmethod
    def device_name(self, index: int) -> str:
        """The device's name."""

    @abc.abstractmethod
    def compute_capability(self, index: int) -> tuple[int, int]:
        """``(major, minor)`` of the device."""

    @abc.abstractmethod
    def retain_primary(self, index: int) -> Any:
        """Retain the device's primary context (not made current); return its handle."""

    @abc.abstractmethod
    def release_primary(self, index: int, context: Any) -> None:
        """Release the primary context retained by :meth:`retain_primary`; the context is not
        current in the calling thread and is left off its stack."""

    @abc.abstractmethod
    def push(self, context: Any) -> None:
        """Make ``context`` current in the calling thread."""

    @abc.abstractmethod
    def pop(self) -> None:
        """Pop the calling thread's current context."""

    @abc.abstractmethod
    def is_current(self, context: Any) -> bool:
        """Whether ``context`` is the calling thread's current context."""

    @abc.abstractmethod
    def stream_create(self) -> Any:
        """A new stream in the current context."""

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` value TensorRT's ``execute_async_v3`` takes."""

    @abc.abstractmethod
    def stream_synchronize(self, stream: Any) -> None:
        """Wait for the stream's work."""

    @abc.abstractmethod
    def stream_destroy(self, stream: Any) -> None:
        """Destroy the stream now (the context is current); no reference may be kept."""

    @abc.abstractmethod
    def event_create(self) -> Any:
        """An event with ``CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING`` in the current
        context: a thread waiting on it sleeps until the GPU is done instead of spinning
        (``cuStreamSynchronize`` spins under the default context flags when the process has
        fewer contexts than CPUs, burning a core per waiting thread)."""

    @abc.abstractmethod
    def event_record(self, event: Any, stream: Any) -> None:
        """Record ``event`` on ``stream`` (after the work queued so far)."""

    @abc.abstractmethod
    def event_synchronize(self, event: Any) -> None:
        """Wait for ``event`` (blocking, without holding the GIL)."""

    @abc.abstractmethod
    def event_destroy(self, event: Any) -> None:
        """Destroy the event now (the context is current); no reference may be kept."""

    @abc.abstractmethod
    def mem_alloc(self, nbytes: int) -> tuple[int, Any]:
        """Device memory: ``(pointer, token for mem_free)``."""

    @abc.abstractmethod
    def mem_free(self, token: Any) -> None:
        """Free device memory."""

    @abc.abstractmethod
    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[np.ndarray,
                                                                                 Any]:
        """A page-locked host array: ``(array, token for host_free)``."""

    @abc.abstractmethod
    def host_free(self, token: Any) -> None:
        """Free page-locked host memory."""

    @abc.abstractmethod
    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: Any) -> None:
        """Asynchronous copy of the contiguous ``src`` to device pointer ``dest``."""

    @abc.abstractmethod
    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: Any) -> None:
        """Asynchronous copy from device pointer ``src`` into the contiguous ``dest``."""

    @abc.abstractmethod
    def memcpy_htod(self, dest: int, src: np.ndarray) -> None:
        """Synchronous host-to-device copy."""

    @abc.abstractmethod
    def compile_kernel(self, source: str, name: str, options: Sequence[str],
                       capability: tuple[int, int]) -> tuple[Any, Any]:
        """Compile CUDA C ``source`` (its kernels declared ``extern "C"``) for a device of
        compute ``capability`` and load it into the current context: ``(module token for
        module_unload, function name)``."""

    @abc.abstractmethod
    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], stream: Any) -> None:
        """Launch ``function`` on ``stream`` (``None``: the default stream); ``args`` are NumPy
        scalars in the kernel's parameter order (``np.uintp`` for pointers)."""

    @abc.abstractmethod
    def module_unload(self, module: Any) -> None:
        """Unload a module made by :meth:`compile_kernel` (the context is current); no
        reference may be kept."""
