"""Shared fixtures: the official Darknet reference files (skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .fakes.fixtures import fakes  # noqa: F401 - fixture of the fake tensorrt/pycuda modules

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'darknet'


def shared_file(*parts: str) -> Path:
    """Path of a file under ../shared/darknet, skipping the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'reference file {path} is absent')
    return path


@pytest.fixture
def yolov3_cfg_path() -> Path:
    return shared_file('cfg', 'yolov3.cfg')


@pytest.fixture
def tiny_cfg_path() -> Path:
    return shared_file('cfg', 'yolov3-tiny.cfg')


@pytest.fixture
def darknet53_cfg_path() -> Path:
    return shared_file('cfg', 'darknet53.cfg')
