"""The backend registry: every inference backend, its name, file extensions and loader.

Adding a backend is one module implementing
:class:`~darknet53_ros.inference.backends.base.Backend` plus one :class:`BackendSpec` line in
:data:`BACKENDS`. The factory, the node's
``backend`` parameter, the CLI's ``--backend`` choices and diagnostics all read this table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import importlib
import os
from pathlib import Path
from typing import Any

from darknet53_ros.errors import BackendError, ConfigError
from darknet53_ros.inference.backends.base import Backend

AUTO = 'auto'


@dataclass(frozen=True)
class BackendSpec:
    """One backend: its ``name`` (and ``title`` for messages), the model file ``extensions``
    it loads (lower case, with the dot), the ``loader`` (``module:Class``, imported only when
    used) and the ``install`` hint given when the loader cannot be imported."""

    name: str
    title: str
    extensions: tuple[str, ...]
    loader: str
    install: str

    def load_class(self) -> Callable[..., Backend]:
        """Import the backend class.

        Raises:
            BackendError: its runtime (onnxruntime, tensorrt, pycuda) cannot be imported.
        """
        module_name, _, class_name = self.loader.partition(':')
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendError(f'the {self.title} backend is unavailable ({exc}); '
                               f'{self.install}') from None
        cls: Callable[..., Backend] = getattr(module, class_name)
        return cls


BACKENDS: tuple[BackendSpec, ...] = (
    BackendSpec('onnxruntime', 'ONNX Runtime', ('.onnx',),
                'darknet53_ros.inference.backends.onnxruntime_backend:OnnxRuntimeBackend',
                "install ONNX Runtime: pip install 'darknet53_ros[cpu]'"),
    BackendSpec('tensorrt', 'TensorRT', ('.engine', '.plan'),
                'darknet53_ros.inference.backends.tensorrt_backend:TensorRTBackend',
                'install TensorRT and pycuda (JetPack on Jetson) or use an .onnx model with '
                'ONNX Runtime'),
)


def backend_names() -> tuple[str, ...]:
    """Registered backend names, in registry order."""
    return tuple(spec.name for spec in BACKENDS)


def backend_choices() -> tuple[str, ...]:
    """What a ``backend`` option accepts: ``auto`` and every registered name."""
    return (AUTO, *backend_names())


def model_extensions() -> tuple[str, ...]:
    """Every model file extension a backend loads."""
    return tuple(ext for spec in BACKENDS for ext in spec.extensions)


def get_backend(name: str) -> BackendSpec:
    """The registered backend called ``name``.

    Raises:
        ConfigError: no such backend.
    """
    for spec in BACKENDS:
        if spec.name == name:
            return spec
    raise ConfigError(f'backend: {name!r}, expected one of {", ".join(backend_choices())}')


def backend_for_path(model_path: str | os.PathLike[str]) -> BackendSpec:
    """The backend ``auto`` picks for ``model_path``, by its extension.

    Raises:
        ConfigError: no backend loads that extension.
    """
    suffix = Path(model_path).suffix.lower()
    for spec in BACKENDS:
        if suffix in spec.extensions:
            return spec
    raise ConfigError(f'{model_path}: cannot pick a backend for extension {suffix!r} '
                      f'(expected {", ".join(model_extensions())})')


def backend_for(model_path: str | os.PathLike[str]) -> str:
    """The backend name ``auto`` picks for ``model_path`` (by extension)."""
    return backend_for_path(model_path).name


def create_backend(model_path: str | os.PathLike[str], backend: str = AUTO,
                   **opts: Any) -> Backend:
    """Load ``model_path`` with ``backend`` (``auto``: by extension, see :data:`BACKENDS`);
    ``opts`` go to the backend's constructor.

    Raises:
        ConfigError: unknown backend name or extension.
        BackendError: the backend's runtime (onnxruntime, tensorrt) cannot be imported.
        ModelError: the model does not follow the contract.
    """
    spec = backend_for_path(model_path) if backend == AUTO else get_backend(backend)
    try:
        cls = spec.load_class()
    except BackendError as exc:
        raise BackendError(f'{model_path}: {exc}') from None
    return cls(model_path, **opts)
