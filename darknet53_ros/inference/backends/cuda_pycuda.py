"""pycuda behind :class:`~darknet53_ros.inference.backends.cuda_driver.CudaDriver`.

pycuda is imported when a driver is made (never ``pycuda.autoinit``). Two pycuda behaviours
shape this module: a pycuda ``Stream`` is destroyed only when its last Python reference goes
(so :class:`~darknet53_ros.inference.backends.cuda_runtime.CudaContext` drops it inside the
context scope), and ``Context.detach()`` of a primary context that is not current pushes it,
releases it and leaves it on the calling thread's stack (so
:meth:`PycudaDriver.release_primary` pops it afterwards). CUDA 13 (JetPack 7) needs pycuda >=
2025.1.2.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import os
import shutil
from typing import Any

import numpy as np

from darknet53_ros.errors import BackendError
from darknet53_ros.inference.backends.cuda_driver import CudaDriver

#: The first pycuda release built for CUDA 13 (``cuCtxCreate`` changed there).
PYCUDA_FOR_CUDA13 = (2025, 1, 2)
INSTALL = ("pip install 'pycuda>=2025.1.2' on CUDA 13 (JetPack 7) or 'pycuda>=2022.1' on "
           'JetPack 5/6, with the CUDA toolkit of JetPack on PATH; or use --cuda-runtime '
           'cuda-python')


def find_nvcc() -> str:
    """``nvcc`` on ``PATH``, else in ``$CUDA_HOME/bin`` or ``/usr/local/cuda/bin`` (JetPack
    installs it there without adding it to ``PATH``); ``'nvcc'`` when none is found."""
    found = shutil.which('nvcc')
    if found:
        return found
    for home in (os.environ.get('CUDA_HOME'), '/usr/local/cuda'):
        if home and os.path.isfile(os.path.join(home, 'bin', 'nvcc')):
            return os.path.join(home, 'bin', 'nvcc')
    return 'nvcc'


def check_pycuda_version(pycuda_version: tuple[int, ...], cuda_version: tuple[int, ...],
                         driver_version: int) -> None:
    """Refuse a pycuda too old for CUDA 13 (``cuda_version``: what pycuda was built with;
    ``driver_version``: ``cuDriverGetVersion``, e.g. 13000)."""
    cuda13 = tuple(cuda_version[:1]) >= (13,) or driver_version >= 13000
    if cuda13 and tuple(pycuda_version) < PYCUDA_FOR_CUDA13:
        found = '.'.join(str(v) for v in pycuda_version)
        raise BackendError(f'pycuda {found} does not support CUDA 13 (JetPack 7): '
                           f'{INSTALL}')


@dataclass
class _Context:
    """A retained primary context and its handle value (valid after ``detach``)."""

    context: Any
    handle: int


class PycudaDriver(CudaDriver):
    """The CUDA driver API through pycuda."""

    name = 'pycuda'

    def __init__(self) -> None:
        try:
            import pycuda
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendError(f'pycuda is not installed ({exc}): {INSTALL}') from exc
        try:
            cuda.init()
        except Exception as exc:
            raise BackendError(f'pycuda cannot initialise CUDA: {exc}') from exc
        version = tuple(getattr(pycuda, 'VERSION', (0,)))
        built = tuple(cuda.get_version()) if hasattr(cuda, 'get_version') else (0,)
        driver = int(cuda.get_driver_version()) if hasattr(cuda, 'get_driver_version') else 0
        check_pycuda_version(version, built, driver)
        self._cuda = cuda

    def device_count(self) -> int:
        return int(self._cuda.Device.count())

    def device_name(self, index: int) -> str:
        return str(self._cuda.Device(index).name())

    def compute_capability(self, index: int) -> tuple[int, int]:
        major, minor = self._cuda.Device(index).compute_capability()
        return int(major), int(minor)

    def retain_primary(self, index: int) -> _Context:
        context = self._cuda.Device(index).retain_primary_context()
        return _Context(context, int(context.handle))

    def release_primary(self, index: int, context: Any) -> None:
        context.context.detach()
        if self.is_current(context):  # detach() pushed it to release it: take it off again
            self._cuda.Context.pop()

    def push(self, context: Any) -> None:
        context.context.push()

    def pop(self) -> None:
        self._cuda.Context.pop()

    def is_current(self, context: Any) -> bool:
        current = self._cuda.Context.get_current()
        return current is not None and int(current.handle) == context.handle

    def stream_create(self) -> Any:
        return self._cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        """pycuda destroys a stream with its last reference, which the caller drops now."""

    def event_create(self) -> Any:
        flags = self._cuda.event_flags
        return self._cuda.Event(flags.BLOCKING_SYNC | flags.DISABLE_TIMING)

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_synchronize(self, event: Any) -> None:
        event.synchronize()  # pycuda releases the GIL around cuEventSynchronize

    def event_destroy(self, event: Any) -> None:
        """pycuda destroys an event with its last reference, which the caller drops now."""

    def mem_alloc(self, nbytes: int) -> tuple[int, Any]:
        alloc = self._cuda.mem_alloc(nbytes)
        return int(alloc), alloc

    def mem_free(self, token: Any) -> None:
        token.free()

    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[np.ndarray,
                                                                                 Any]:
        array = self._cuda.pagelocked_empty(shape, dtype)
        return array, array

    def host_free(self, token: Any) -> None:
        target = token.base
        while isinstance(target, (np.ndarray, memoryview)):
            target = target.base if isinstance(target, np.ndarray) else target.obj
        free = getattr(target, 'free', None)
        if callable(free):
            free()

    def memcpy_htod_async(self, dest: int, src: np.ndarray, stream: Any) -> None:
        self._cuda.memcpy_htod_async(dest, src, stream)

    def memcpy_dtoh_async(self, dest: np.ndarray, src: int, stream: Any) -> None:
        self._cuda.memcpy_dtoh_async(dest, src, stream)

    def memcpy_htod(self, dest: int, src: np.ndarray) -> None:
        self._cuda.memcpy_htod(dest, src)

    def compile_kernel(self, source: str, name: str, options: Sequence[str],
                       capability: tuple[int, int]) -> tuple[Any, Any]:
        error = ''
        try:
            from pycuda.compiler import SourceModule

            module = SourceModule(source, nvcc=find_nvcc(), options=list(options),
                                  no_extern_c=True, arch=f'sm_{capability[0]}{capability[1]}')
        except Exception as exc:  # pycuda.driver.CompileError, nvcc missing, LogicError
            raise BackendError(f'pycuda cannot compile CUDA kernel {name!r}: {exc} (pycuda runs '
                               'nvcc: install the CUDA toolkit of JetPack, or use '
                               '--cuda-runtime cuda-python, or preprocess cpu)') from exc
        try:
            return module, module.get_function(name)
        except Exception as exc:
            error = str(exc)  # the traceback would keep the module alive past the scope
        del module  # unloaded now, while the context is current
        raise BackendError(f'pycuda: no kernel {name!r} in the compiled module: {error}')

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], stream: Any) -> None:
        function(*args, block=tuple(block), grid=tuple(grid), stream=stream)

    def module_unload(self, module: Any) -> None:
        """pycuda unloads a module with its last reference, which the caller drops now."""
