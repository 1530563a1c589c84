"""Exception types, one per domain; each message names the file, topic or field at fault.

:func:`require_python` refuses features that need a newer Python than the runtime's 3.8 (training
and studies need 3.10+) with a :class:`ConfigError`.
"""
from __future__ import annotations

import sys


class Darknet53Error(Exception):
    """Base class of every error this package raises on purpose."""


class DarknetError(Darknet53Error):
    """A Darknet ``.cfg`` or ``.weights`` file is malformed or inconsistent."""


class ExportError(Darknet53Error):
    """A network cannot be exported to ONNX (unsupported layer, bad input size)."""


class ModelError(Darknet53Error):
    """An ONNX model does not follow this package's input/output contract."""


class BackendError(Darknet53Error):
    """An inference backend cannot be created or failed to run."""


class EngineError(BackendError):
    """A TensorRT engine cannot be built, loaded or does not match its metadata."""


class ImageError(Darknet53Error):
    """An image or image message cannot be decoded (encoding, size, corrupt data)."""


class SourceError(Darknet53Error):
    """An input source (file, folder, video, rosbag2, topic) cannot be read."""


class ConfigError(Darknet53Error):
    """A parameter, option or configuration value is invalid."""


class DatasetError(Darknet53Error):
    """A dataset (annotations, label files, images) is malformed."""


#: Python needed by training, evaluation plots and studies (PyTorch 2.x and the trainer).
TRAINING_PYTHON = (3, 10)


def require_python(feature: str, minimum: tuple[int, int] = TRAINING_PYTHON,
                   current: tuple[int, ...] | None = None, advice: str | None = None) -> None:
    """Raise :class:`ConfigError` when the running Python is older than ``minimum``;
    ``advice`` replaces the closing sentence (training's by default)."""
    running = tuple(current if current is not None else sys.version_info[:3])
    if running[:2] < minimum:
        have = '.'.join(str(v) for v in running)
        need = '.'.join(str(v) for v in minimum)
        raise ConfigError(
            f'{feature} needs Python {need}+ (this is Python {have}); the runtime (node, '
            'detect, replay, quantize, build-engine, verify-engine) works on Python 3.8+. '
            + (advice or f'Train on a machine with Python {need}+ and copy the ONNX model '
               'over.'))
