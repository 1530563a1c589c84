"""Fake CUDA kernels for :class:`test.fakes.cuda_driver.FakeDriver`.

Compiling parses the ``extern "C" __global__`` signatures out of the CUDA C source (so the
argument list a launch must match is the real kernel's, read from ``letterbox.cu``); launching
decodes the packed arguments by that signature and runs the kernel's NumPy model on the fake
device memory. The letterbox kernel runs :func:`darknet53_ros.inference.backends.
gpu_preprocess.model_kernel`, reading the source image and writing the output slot through the
device pointers it was given, so wrong pointers, sizes or argument packing show up in the
results.
"""
from __future__ import annotations

from collections.abc import Callable
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from darknet53_ros.inference.backends.gpu_preprocess import model_kernel

if TYPE_CHECKING:
    from .cuda_driver import FakeDriver

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
#: C parameter type -> ``struct`` character (pointers: ``P``).
_TYPES = {'int': 'i', 'unsigned int': 'I', 'float': 'f', 'size_t': 'N'}


class FakeFunction:
    """One kernel of a loaded module: its name and ``(struct char, parameter name)`` list."""

    def __init__(self, module: FakeModule, name: str, params: list[tuple[str, str]]) -> None:
        self.module = module
        self.name = name
        self.params = params

    @property
    def format(self) -> str:
        """The ``struct`` format of the parameter buffer (native alignment, like C)."""
        return ''.join(char for char, _ in self.params)


class FakeModule:
    """A module loaded into the fake context."""

    def __init__(self, source: str) -> None:
        self.functions = {name: FakeFunction(self, name, params)
                          for name, params in parse_kernels(source).items()}
        self.loaded = True


def declaration(source: str, name: str) -> str:
    """The parameter list of kernel ``name`` in ``source``, as written."""
    return next(m.group(2) for m in _SIGNATURE.finditer(source) if m.group(1) == name)


def parse_kernels(source: str) -> dict[str, list[tuple[str, str]]]:
    """``{kernel name: [(struct char, parameter name), ...]}`` of the ``extern "C"``
    kernels in ``source``."""
    kernels = {}
    for match in _SIGNATURE.finditer(source):
        params = []
        for part in match.group(2).split(','):
            words = part.replace('*', ' * ').split()
            name = words[-1]
            ctype = ' '.join(w for w in words[:-1] if w not in ('const', '__restrict__'))
            params.append(('P' if '*' in ctype else _TYPES[ctype], name))
        kernels[match.group(1)] = params
    return kernels


def _letterbox(driver: FakeDriver, grid: tuple[int, ...], block: tuple[int, ...],
               values: list[Any]) -> None:
    named = dict(zip(('src', 'src_w', 'src_h', 'src_pitch'), values[:4]))
    net_w, net_h = values[9], values[10]
    if grid[0] * block[0] < net_w or grid[1] * block[1] < net_h:
        driver.errors.append(f'letterbox grid {grid} x block {block} does not cover '
                             f'{net_w}x{net_h}')
    rows = driver.read(named['src'], named['src_h'] * named['src_pitch']).reshape(
        named['src_h'], named['src_pitch'])
    driver.write(values[8], model_kernel(rows, values))


#: Kernel name -> NumPy body run by a launch.
BODIES: dict[str, Callable[[FakeDriver, tuple[int, ...], tuple[int, ...], list[Any]],
                           None]] = {'letterbox_nchw': _letterbox}


def run(driver: FakeDriver, function: FakeFunction, grid: tuple[int, ...],
        block: tuple[int, ...], values: list[Any], stream: Any) -> None:
    """Launch ``function`` with decoded argument ``values`` (what the device would see)."""
    driver.require_context(f'launch {function.name}')
    if not function.module.loaded:
        driver.errors.append(f'launch of {function.name} from an unloaded module')
    if stream is not None and int(stream) != 0 and not driver.streams.get(int(stream)):
        driver.errors.append(f'launch of {function.name} on dead stream {stream}')
    if len(values) != len(function.params):
        raise AssertionError(f'{function.name}: {len(values)} arguments for '
                             f'{len(function.params)} parameters')
    if len(grid) != 3 or len(block) != 3 or min(*grid, *block) < 1:
        raise AssertionError(f'{function.name}: grid {grid}, block {block}')
    driver.launches.append(function.name)
    BODIES[function.name](driver, grid, block, [np.asarray(v).item() for v in values])
