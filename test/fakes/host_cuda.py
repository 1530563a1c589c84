"""Run a CUDA kernel's own source on the host: a fake device where no GPU is present.

:func:`compile_on_host` compiles the ``extern "C" __global__`` kernel with the host C++
compiler under a small shim (``__global__`` and ``__restrict__`` dropped, ``blockIdx`` /
``threadIdx`` / ``blockDim`` as globals, CUDA's integer ``min``), plus a generated entry
point that walks the whole grid and block, thread by thread, calling the kernel. Device
pointers are host addresses (NumPy arrays' ``ctypes.data``). Compiled with
``-ffp-contract=off`` and no fast-math, every float ``+``, ``-``, ``*`` is one IEEE single
rounding as on the GPU under ``--fmad=false`` (the runtime's :data:`KERNEL_OPTIONS`), so the
results are what the GPU computes, not a model of it: index arithmetic, clamping, channel
order, pitch and slot addressing included. What it cannot show: memory-model or launch
effects (concurrency, races, alignment faults), which a real GPU would.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import ctypes
from pathlib import Path
import shutil
import subprocess
from typing import Any

from .kernels import declaration, parse_kernels

SHIM = """
#include <math.h>
#include <stddef.h>
struct dim3_host { unsigned int x, y, z; };
static dim3_host blockIdx, threadIdx, blockDim;
#define __global__
#define __restrict__ __restrict
static inline int min(int a, int b) { return a < b ? a : b; }
"""
_CTYPES = {'i': ctypes.c_int32, 'I': ctypes.c_uint32, 'f': ctypes.c_float,
           'N': ctypes.c_size_t, 'P': ctypes.c_void_p}


def host_compiler() -> str | None:
    """The host C++ compiler (``g++`` or ``clang++``), or None."""
    return shutil.which('g++') or shutil.which('clang++')


def compile_on_host(source: str, name: str, folder: Path,
                    ) -> Callable[[Sequence[int], Sequence[int], Sequence[Any], Any], None]:
    """``launch(grid, block, args, stream)`` running kernel ``name`` of ``source`` on the host
    (``stream`` ignored: the launch completes before it returns)."""
    compiler = host_compiler()
    if compiler is None:
        raise RuntimeError('no host C++ compiler (g++ or clang++)')
    params = parse_kernels(source)[name]
    names = ', '.join(param for _, param in params)
    entry = (f'\nextern "C" void run_grid_{name}(int gx_, int gy_, int bx_, int by_, '
             f'{declaration(source, name)}) {{\n'
             '  blockDim.x = bx_; blockDim.y = by_; blockDim.z = 1;\n'
             '  blockIdx.z = 0; threadIdx.z = 0;\n'
             '  for (int gy = 0; gy < gy_; ++gy) for (int gx = 0; gx < gx_; ++gx)\n'
             '    for (int ty = 0; ty < by_; ++ty) for (int tx = 0; tx < bx_; ++tx) {\n'
             '      blockIdx.x = gx; blockIdx.y = gy; threadIdx.x = tx; threadIdx.y = ty;\n'
             f'      {name}({names});\n'
             '    }\n}\n')
    cpp = folder / f'{name}_host.cpp'
    cpp.write_text(SHIM + source + entry)
    library = folder / f'lib{name}_host.so'
    subprocess.run([compiler, '-O2', '-shared', '-fPIC', '-ffp-contract=off', '-fno-fast-math',
                    '-o', str(library), str(cpp)], check=True, capture_output=True, text=True,
                   timeout=120)
    function = getattr(ctypes.CDLL(str(library)), f'run_grid_{name}')
    function.restype = None
    function.argtypes = [ctypes.c_int] * 4 + [_CTYPES[char] for char, _ in params]

    def launch(grid: Sequence[int], block: Sequence[int], args: Sequence[Any],
               stream: Any = None) -> None:
        if len(args) != len(params):
            raise TypeError(f'{name}: {len(args)} arguments, the kernel takes {len(params)}')
        values = [a.item() if hasattr(a, 'item') else a for a in args]
        function(int(grid[0]), int(grid[1]), int(block[0]), int(block[1]), *values)

    return launch
