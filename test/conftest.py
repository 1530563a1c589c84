"""Shared fixtures: the official Darknet reference files (skipped when absent), and optional
dependencies as per-test markers, and the planted model of :mod:`test.planted`, exported once
per session.

Never skip a whole module at import time (a module-level ``pytest.importorskip`` or
``pytest.skip``): launch_testing's pytest plugin, active wherever ROS 2 is sourced, imports
every test module during collection, and a skip raised there skips the whole ``test`` package
(``colcon test`` then reports success with nothing run). Use ``pytestmark = requires(...)`` and
:func:`optional_module` instead; ``test/ros/test_launch_collection.py`` guards this.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
import time
from types import ModuleType

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


@pytest.fixture(scope='session')
def planted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted ONNX model (:func:`test.planted.export_planted`), exported once (skips the
    tests that use it where ``onnx`` is not installed: a robot needs it only for .cfg models)."""
    pytest.importorskip('onnx', reason='onnx not installed (exporting the test model needs it)')
    from .planted import export_planted

    return export_planted(tmp_path_factory.mktemp('planted') / 'planted.onnx')


@pytest.fixture(autouse=True)
def _package_logs_reach_caplog():
    """Keep the package's log records visible to ``caplog`` with ROS 2 sourced.

    launch_testing's pytest plugin imports ``launch``, whose logging module makes every logger
    created afterwards a non-propagating ``LaunchLogger``: the package's module loggers then
    never reach the root logger that ``caplog`` listens on.
    """
    logger_class = logging.getLoggerClass()
    logging.setLoggerClass(logging.Logger)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split('.')[0] in ('darknet53', 'darknet53_ros') \
                and isinstance(logger, logging.Logger):
            logger.propagate = True
    try:
        yield
    finally:
        logging.setLoggerClass(logger_class)


def optional_module(name: str) -> ModuleType | None:
    """The module ``name``, or None when it (or something it needs) cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def missing_modules(*names: str) -> list[str]:
    """Those of ``names`` that cannot be imported."""
    return [name for name in names if optional_module(name) is None]


def requires(*names: str, reason: str = '') -> pytest.MarkDecorator:
    """A ``skipif`` marker for tests that need the optional modules ``names``.

    Use as a decorator or as a module's ``pytestmark``: every test is collected and reported
    as skipped with the reason, instead of the module (or package) vanishing.
    """
    missing = missing_modules(*names)
    text = reason or f'{", ".join(missing)} not installed'
    return pytest.mark.skipif(bool(missing), reason=text)


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ``darknet53 synth`` dataset: 6 train and 3 val scenes of 96x64 (read-only)."""
    from darknet53_ros.training.synthetic import write_dataset

    root = tmp_path_factory.mktemp('synth')
    write_dataset(root, 6, 0, 96, 64, 'train')
    write_dataset(root, 3, 5, 96, 64, 'val')
    return root


@pytest.fixture
def context():
    """A fresh rclpy context, initialised and shut down around the test (the ROS tests that
    use it are skipped by their own markers where rclpy is missing)."""
    rclpy = pytest.importorskip('rclpy')
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope='session')
def message_types():
    """The real ROS 2 message classes the node builds its messages from (a
    :class:`~darknet53_ros.io.messages.MessageTypes`): rclpy's generated classes where a ROS 2
    is sourced (``MessageTypes.from_rclpy()``, what the node uses), else rosbags' Humble
    typestore classes, else the test is skipped with both reasons.

    Tests using it must work with either flavour: build messages with keywords only, byte
    fields with :func:`~darknet53_ros.io.messages.byte_data`, CDR with :func:`cdr_serialize`
    / :func:`cdr_deserialize` (no ``__msgtype__``, no positional constructors, no
    ``dataclasses.replace``). A test that needs rosbags itself (its typestore, bags) keeps its
    own ``requires('rosbags')``.
    """
    from darknet53_ros.errors import ConfigError
    from darknet53_ros.io.messages import MessageTypes

    try:
        return MessageTypes.from_rclpy()
    except ConfigError as exc:
        no_rclpy = str(exc)
    if optional_module('rosbags.typesys') is not None:
        return MessageTypes.from_rosbags('humble')
    pytest.skip(f'no ROS 2 message classes: rosbags not installed, and rclpy messages not '
                f'importable ({no_rclpy})')


def cdr_serialize(types, msg) -> bytes:
    """CDR bytes of ``msg`` with the serializer of its flavour (rclpy's or rosbags')."""
    if types.flavor == 'rclpy':
        from rclpy.serialization import serialize_message

        return bytes(serialize_message(msg))
    return types.serialize(msg)


def cdr_deserialize(types, data: bytes, msg_class):
    """A message of ``msg_class`` (one of ``types``' classes) read from CDR ``data``."""
    if types.flavor == 'rclpy':
        from rclpy.serialization import deserialize_message

        return deserialize_message(bytes(data), msg_class)
    return types.deserialize(data, msg_class.__msgtype__)


def cdr_round_trip(types, msg):
    """``msg`` serialized to CDR and read back (the same flavour)."""
    return cdr_deserialize(types, cdr_serialize(types, msg), type(msg))


def export_tiny_model(path: Path, names, size: int = 96, seed: int = 0) -> Path:
    """A tiny random-weight YOLOv3 (``len(names)`` classes, ``size`` x ``size`` input, 1/8 of
    the filters) exported to ONNX at ``path``; skips the test where onnx is not installed."""
    pytest.importorskip('onnx', reason='onnx not installed (exporting the test model needs it; '
                        'the README robot recipe installs it)')
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import random_weights

    network = parse_cfg(yolov3_cfg(classes=len(names), width=size, height=size,
                                   width_multiplier=0.125))
    export_onnx(network, random_weights(network, seed=seed), path, names=list(names))
    return path


def spin_until(executor, done, timeout: float = 30.0, each=None) -> bool:
    """Spin ``executor`` (calling ``each()`` before every spin) until ``done()`` is true; False
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if each is not None:
            each()
        executor.spin_once(timeout_sec=0.05)
        if done():
            return True
    return False


def ros_not_ready(*modules: str) -> str:
    """Why a test of the installed package on a sourced ROS 2 cannot run here ('' when it can):
    a missing module of ``modules`` or the package not installed in the sourced workspace."""
    missing = missing_modules(*modules)
    if missing:
        return f'{", ".join(missing)} not installed: needs a sourced ROS 2'
    ament_index = optional_module('ament_index_python.packages')
    if ament_index is None:
        return 'ament_index_python not installed: needs a sourced ROS 2'
    try:
        ament_index.get_package_share_directory('darknet53_ros')
    except ament_index.PackageNotFoundError:
        return 'darknet53_ros is not installed in the sourced workspace (colcon build first)'
    return ''
