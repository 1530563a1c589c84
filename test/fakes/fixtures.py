"""Fixtures installing the fakes in ``sys.modules`` (registered in ``test/conftest.py``)."""
from __future__ import annotations

import sys

import pytest

from darknet53_ros.inference.backends import engine_file

from .pycuda import make_fake_pycuda
from .tensorrt import make_fake_trt


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Install fake ``pycuda``, ``pycuda.driver`` and ``tensorrt``; returns ``(cuda, trt)``."""
    pycuda, cuda = make_fake_pycuda()
    trt = make_fake_trt(cuda.memory)
    monkeypatch.setitem(sys.modules, 'pycuda', pycuda)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(engine_file, '_TRT_LOGGER', None)
    return cuda, trt
