"""Fixtures installing the fakes in ``sys.modules`` (registered in ``test/conftest.py``)."""
from __future__ import annotations

import sys

import pytest

from darknet53_ros.inference.backends import engine_file

from .cuda_driver import FakeDriver
from .cuda_python import make_fake_cuda_python
from .pycuda import make_fake_pycuda
from .tensorrt import make_fake_trt


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Install fake ``pycuda``, ``cuda.bindings`` (cuda-python) and ``tensorrt`` over one fake
    driver; returns ``(pycuda.driver, tensorrt)`` (the driver is ``cuda.core``)."""
    core = FakeDriver()
    pycuda, cuda = make_fake_pycuda(core)
    trt = make_fake_trt(core)
    monkeypatch.setitem(sys.modules, 'pycuda', pycuda)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', cuda)
    monkeypatch.setitem(sys.modules, 'pycuda.compiler', pycuda.compiler)
    for name, module in make_fake_cuda_python(core).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(engine_file, '_TRT_LOGGER', None)
    return cuda, trt
