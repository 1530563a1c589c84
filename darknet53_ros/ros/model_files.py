"""Model files of the detector node: where a ``model`` parameter points, and loading it.

Relative paths are looked up in the package share directory, then in the Python package
(:func:`resolve_data_path`); a Darknet ``.cfg`` is exported to ONNX once into a cache
(:func:`prepare_model`); :func:`load_detector` builds the
:class:`~darknet53_ros.inference.detector.Detector` a :class:`~darknet53_ros.ros.params.NodeParams`
describes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from darknet53_ros.errors import ConfigError, DarknetError, ModelError
from darknet53_ros.fileio import atomic_path
from darknet53_ros.inference.backends.onnxruntime_backend import shared_cpu_threads
from darknet53_ros.inference.backends.registry import AUTO, backend_for_path, get_backend
from darknet53_ros.inference.detector import Detector
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.names import read_names
from darknet53_ros.model.weights import read_weights
from darknet53_ros.ros.params import PACKAGE, NodeParams

__all__ = ['DEMO_MODEL', 'DEMO_WARNING', 'is_bundled_demo', 'load_detector', 'package_share_dir',
           'prepare_model', 'resolve_data_path']

#: The bundled demo model (the ``model`` parameter's default).
DEMO_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'demo.cfg'
#: What the node says while it serves the demo model.
DEMO_WARNING = ('serving the bundled demo model: it detects 5 synthetic classes (box, cone, '
                'ball, person, sign) trained on generated scenes, not real objects; pass '
                'model:=/path/to/your.engine (or .onnx, .cfg)')


def is_bundled_demo(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is the bundled demo model's cfg."""
    try:
        return Path(path).resolve() == DEMO_MODEL
    except OSError:
        return False



def package_share_dir() -> Path | None:
    """The package's ament share directory, or None without ament / when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # ImportError, PackageNotFoundError
        return None


def resolve_data_path(value: str, param: str = 'model',
                      share_dir: str | os.PathLike[str] | None | bool = True) -> Path:
    """Find a model/engine/names file given as a parameter.

    Absolute paths (``~`` expanded) are used as they are; relative ones are looked up in the
    package share directory (``share_dir``: a path, True to ask ament, False/None to skip),
    then in the darknet53_ros Python package (``models/demo.cfg``), then in its ``models/``.

    Raises:
        ConfigError: not found (naming the parameter and every place looked in).
    """
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = []
        share = package_share_dir() if share_dir is True else share_dir or None
        if share:
            candidates.append(Path(share) / path)
        package = Path(__file__).resolve().parents[1]
        candidates.append(package / path)
        if path.parts and path.parts[0] != 'models':
            candidates.append(package / 'models' / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f'parameter {param}: {value!r} not found (looked in: '
                      f'{", ".join(str(c) for c in candidates)})')


def _cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / PACKAGE


def prepare_model(path: str | os.PathLike[str],
                  cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a file a backend can load: ``.onnx``/``.engine``/``.plan`` as they are; a
    Darknet ``.cfg`` (with ``.weights`` and optional ``.names`` of the same stem) is exported
    to ONNX once into ``cache_dir`` (default ``~/.cache/darknet53_ros``), keyed by content.

    Raises:
        ModelError: the ``.weights`` file is missing; DarknetError/ExportError from export.
    """
    path = Path(path)
    if path.suffix.lower() != '.cfg':
        return path
    weights_path = path.with_suffix('.weights')
    if not weights_path.is_file():
        raise ModelError(f'{path}: no weights file {weights_path.name} beside the cfg')
    names_path = path.with_suffix('.names')
    digest = hashlib.sha256(path.read_bytes())
    for extra in (weights_path, names_path):
        if extra.is_file():
            stat = extra.stat()
            digest.update(f'{extra.resolve()}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
    target = Path(cache_dir) if cache_dir is not None else _cache_dir()
    onnx_path = target / f'{path.stem}-{digest.hexdigest()[:16]}.onnx'
    if onnx_path.is_file():
        return onnx_path
    export_onnx = _onnx_exporter(path)
    network = load_cfg(path)
    weights = read_weights(weights_path, network)
    names = read_names(names_path) if names_path.is_file() else None
    with atomic_path(onnx_path) as tmp:
        export_onnx(network, weights, tmp, names=names)
    return onnx_path


def _onnx_exporter(cfg_path: Path) -> Any:
    """:func:`~darknet53_ros.model.onnx_export.export_onnx`, imported only for a ``.cfg`` model:
    ``.onnx`` and ``.engine`` models need no ``onnx`` package (it has no rosdep key).

    Raises:
        ModelError: naming the cfg and the package to install when ``onnx`` is missing.
    """
    try:
        from darknet53_ros.model.onnx_export import export_onnx
    except ImportError as exc:
        raise ModelError(f'{cfg_path}: a Darknet .cfg model is exported to ONNX first, which '
                         f'needs the onnx package ({exc}): python3 -m pip install onnx, or '
                         'pass an .onnx or .engine model') from None
    return export_onnx


def _class_names(params: NodeParams,
                 share_dir: str | os.PathLike[str] | None | bool) -> list[str] | None:
    """The ``class_names_file`` parameter's names (None when it is empty)."""
    if not params.class_names_file:
        return None
    path = resolve_data_path(params.class_names_file, 'class_names_file', share_dir)
    try:
        return read_names(path)
    except DarknetError as exc:
        raise ConfigError(f'parameter class_names_file: {exc}') from None


def load_detector(params: NodeParams, share_dir: str | os.PathLike[str] | None | bool = True,
                  model_path: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> tuple[Detector, Path]:
    """Load the :class:`~darknet53_ros.inference.detector.Detector` the parameters describe.

    ``model_path`` (e.g. a command-line path) overrides the ``model`` parameter. Returns
    ``(detector, model file)``: the file the parameter names (a ``.cfg`` rather than the
    ONNX file exported from it, so :func:`is_bundled_demo` can tell the demo model).

    Raises:
        ConfigError, ModelError, BackendError: naming the parameter or file at fault.
    """
    if model_path is not None:
        resolved = Path(model_path)
        if not resolved.is_file():
            raise ConfigError(f'model: {resolved} does not exist')
    else:
        resolved = resolve_data_path(params.model, 'model', share_dir)
    prepared = prepare_model(resolved, cache_dir)
    names = _class_names(params, share_dir)
    spec = backend_for_path(prepared) if params.backend == AUTO else get_backend(params.backend)
    backend_options: dict[str, Any] = {'cuda_runtime': params.cuda_runtime} \
        if spec.name == 'tensorrt' else {}
    if spec.name == 'onnxruntime':  # issue 21: no spinning, a thread count for a shared CPU
        backend_options.update(allow_spinning=params.allow_spinning,
                               intra_op_threads=params.intra_op_threads or shared_cpu_threads())
    detector = Detector.from_model(prepared, backend=spec.name, class_names=names,
                                   preprocess=params.preprocess, **backend_options,
                                   **params.detector_options())
    classes = detector.backend.metadata.get('classes')
    if names is not None and classes is not None and len(names) != classes:
        detector.close()
        raise ConfigError(f'parameter class_names_file: {len(names)} names but the model '
                          f'{resolved} has {classes} classes')
    return detector, resolved
