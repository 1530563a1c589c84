"""Shared fixtures: the official Darknet reference files (skipped when absent) and the planted
model of :mod:`test.planted`, exported once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from .fakes.fixtures import fakes  # noqa: F401 - fixture of the fake tensorrt/pycuda modules
from .planted import export_planted

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


@pytest.fixture(scope='session')
def planted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted ONNX model (:func:`test.planted.export_planted`), exported once."""
    return export_planted(tmp_path_factory.mktemp('planted') / 'planted.onnx')


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ``darknet53 synth`` dataset: 6 train and 3 val scenes of 96x64 (read-only)."""
    from darknet53_ros.training.synthetic import write_dataset

    root = tmp_path_factory.mktemp('synth')
    write_dataset(root, 6, 0, 96, 64, 'train')
    write_dataset(root, 3, 5, 96, 64, 'val')
    return root
