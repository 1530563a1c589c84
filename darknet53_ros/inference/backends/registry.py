"""Create an inference backend for a model file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from darknet53_ros.errors import BackendError, ConfigError
from darknet53_ros.inference.backends.base import Backend

BACKENDS = ('auto', 'onnxruntime', 'tensorrt')
_BY_EXTENSION = {'.onnx': 'onnxruntime', '.engine': 'tensorrt', '.plan': 'tensorrt'}


def backend_for(model_path: str | os.PathLike[str]) -> str:
    """The backend name ``'auto'`` picks for ``model_path`` (by extension)."""
    suffix = Path(model_path).suffix.lower()
    try:
        return _BY_EXTENSION[suffix]
    except KeyError:
        raise ConfigError(f'{model_path}: cannot pick a backend for extension {suffix!r} '
                          '(expected .onnx, .engine or .plan)') from None


def create_backend(model_path: str | os.PathLike[str], backend: str = 'auto',
                   **opts: Any) -> Backend:
    """Load ``model_path`` with ``backend`` (``'auto'``: ``.onnx`` -> ONNX Runtime,
    ``.engine``/``.plan`` -> TensorRT); ``opts`` go to the backend's constructor.

    Raises:
        ConfigError: unknown backend name or extension.
        BackendError: the backend's runtime (onnxruntime, tensorrt) cannot be imported.
        ModelError: the model does not follow the contract.
    """
    if backend not in BACKENDS:
        raise ConfigError(f'backend: {backend!r}, expected one of {", ".join(BACKENDS)}')
    if backend == 'auto':
        backend = backend_for(model_path)
    if backend == 'onnxruntime':
        from darknet53_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, **opts)
    try:
        from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend
    except ImportError as exc:
        raise BackendError(f'{model_path}: the TensorRT backend is unavailable ({exc}); '
                           'install TensorRT and pycuda (JetPack on Jetson) or use an .onnx '
                           'model with ONNX Runtime') from None
    return TensorRTBackend(Path(model_path), **opts)
