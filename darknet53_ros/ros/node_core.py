"""Everything the ROS 2 detector node does, as plain Python objects (no rclpy).

``darknet53_ros/node.py`` is thin rclpy glue around :class:`NodeCore`, and
``darknet53 replay`` feeds rosbag2 messages through the same core offline, so one code path
is tested without ROS:

- **Parameters** (:data:`PARAMETERS`): one :class:`ParamSpec` per ROS parameter (type,
  default, description, range/choices, read-only). The node declares exactly these; the
  params YAML files in ``config/`` must use exactly these names (tested).
  :meth:`NodeParams.from_dict` validates a whole set; errors are :class:`ConfigError` naming
  the parameter.
- **Cameras** (``cameras`` parameter): ROS parameters cannot be nested dicts, so each camera is
  one string ``'NAME[:TOPIC[:TRANSPORT]]'`` (see :func:`parse_camera`).
- **Processing** (:meth:`NodeCore.process_batch`): the :class:`~darknet53_ros.ros.scheduler.
  FrameScheduler` hands the newest frame of up to ``max_batch`` cameras to one
  :class:`~darknet53_ros.ros.scheduler.InferenceWorker` thread; frames are decoded there (so image
  callbacks never block), run through the one shared
  :class:`~darknet53_ros.inference.detector.Detector`
  as one batch, and a ``Detection2DArray`` (always, also when empty) plus, when someone
  listens, an annotated image are emitted per camera with the source header unchanged.
- **Accounting**: bad frames (corrupt data, unsupported encoding) and failed batches are
  dropped and counted per camera and reason, logged once per camera and reason and then at
  most once per ``log_throttle_period``; the core keeps running.
- **Diagnostics** (:meth:`NodeCore.diagnostics_msg`): per camera input and output rate,
  stamp-to-publish latency and drops by reason; for the detector backend, precision, engine
  file, batching and inference time.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
import hashlib
import logging
import math
import os
from pathlib import Path
import re
import threading
import time
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.inference.backends.registry import backend_choices
from darknet53_ros.io.draw import draw_detections
from darknet53_ros.ros.scheduler import (
    DROP_REASONS,
    FrameScheduler,
    InferenceWorker,
    QueuedFrame,
    RateMeter,
)

__all__ = [
    'ALL_DROP_REASONS',
    'CORE_DROP_REASONS',
    'NODE_NAME',
    'PACKAGE',
    'PARAMETERS',
    'CameraSpec',
    'NodeCore',
    'NodeParams',
    'Outputs',
    'ParamSpec',
    'ThrottledLog',
    'load_detector',
    'load_params_file',
    'make_converter',
    'package_share_dir',
    'parse_camera',
    'parse_cameras',
    'prepare_model',
    'resolve_data_path',
    'validate_parameter',
]

PACKAGE = 'darknet53_ros'
NODE_NAME = 'darknet53_detector'

CORE_DROP_REASONS = ('bad_image', 'inference_error', 'publish_error')
"""Drops decided by the core: undecodable frame, failed inference batch, failed publish."""
ALL_DROP_REASONS = tuple(DROP_REASONS) + CORE_DROP_REASONS
"""Every drop reason reported in diagnostics (the scheduler's ``superseded``, ``stale``,
``closed`` first)."""

PARAM_TYPES = ('string', 'bool', 'integer', 'double', 'string_array')


# -- parameter model ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter of the node.

    Attributes:
        name: parameter name.
        type: one of ``string``, ``bool``, ``integer``, ``double``, ``string_array``.
        default: default value.
        description: text for ``ros2 param describe``.
        read_only: a change needs a node restart (declared read-only).
        minimum, maximum: inclusive numeric range (integer/double).
        choices: allowed string values.
    """

    name: str
    type: str
    default: Any
    description: str
    read_only: bool = True
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def constraints(self) -> str:
        """Human-readable constraint text (ParameterDescriptor.additional_constraints)."""
        if self.choices:
            return 'one of: ' + ', '.join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f'in [{self.minimum:g}, {self.maximum:g}]'
        return ''


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec('model', 'string', 'models/demo.cfg',
              'Model: .onnx (ONNX Runtime), .engine/.plan (TensorRT) or a Darknet .cfg with '
              '.weights (and .names) beside it, exported to ONNX into a cache on start. '
              'Absolute, or relative to the package share directory, then to the '
              'darknet53_ros Python package (which holds the bundled demo in models/).'),
    ParamSpec('backend', 'string', 'auto',
              'Inference backend; auto picks by extension (.onnx: onnxruntime, '
              '.engine/.plan: tensorrt).', choices=backend_choices()),
    ParamSpec('class_names_file', 'string', '',
              'Optional class names file (one name per line), absolute or relative like '
              'model; empty: the names stored in the model.'),
    ParamSpec('cameras', 'string_array', ['camera'],
              "Cameras, one string each: 'NAME[:TOPIC[:TRANSPORT]]'. NAME prefixes the "
              'output topics (NAME/detections); TOPIC defaults to NAME/image_raw (relative '
              "names follow the node namespace); TRANSPORT is 'raw' (sensor_msgs/Image) or "
              "'compressed' (sensor_msgs/CompressedImage on TOPIC/compressed), default raw "
              'unless TOPIC ends with /compressed.'),
    ParamSpec('prefix_camera_name', 'bool', True,
              'Publish under NAME/ (NAME/detections). false publishes detections and '
              'detections/image directly in the node namespace: one camera only, for one '
              'node per camera in the camera namespace.'),
    ParamSpec('conf_threshold', 'double', 0.25,
              'Keep detections with score >= this (score = objectness * class probability). '
              'Changeable at runtime.', read_only=False, minimum=0.0, maximum=1.0),
    ParamSpec('nms_threshold', 'double', 0.45,
              'Suppress same-class boxes overlapping a better box with IoU above this. '
              'Changeable at runtime.', read_only=False, minimum=0.0, maximum=1.0),
    ParamSpec('max_detections', 'integer', 100,
              'At most this many detections per image. Changeable at runtime.',
              read_only=False, minimum=1, maximum=10000),
    ParamSpec('max_batch', 'integer', 4,
              'At most this many cameras per inference batch (one frame each); a TensorRT '
              'engine built for a fixed batch runs padded batches.', minimum=1, maximum=64),
    ParamSpec('max_frame_age', 'double', 0.5,
              'Drop frames that waited longer than this many seconds for the inference '
              'thread (0 disables). Changeable at runtime.', read_only=False, minimum=0.0,
              maximum=3600.0),
    ParamSpec('publish_annotated', 'bool', True,
              'Draw and publish NAME/detections/image (only while it has subscribers). '
              'Changeable at runtime.', read_only=False),
    ParamSpec('class_id_format', 'string', 'name',
              "results[].hypothesis.class_id: 'name' (class name) or 'index' (class index "
              'as text). Changeable at runtime.', read_only=False, choices=('name', 'index')),
    ParamSpec('qos_reliability', 'string', 'best_effort',
              'Reliability of the image subscriptions (keep last 1): best_effort (sensor '
              'data, matches any publisher) or reliable.', choices=('best_effort', 'reliable')),
    ParamSpec('diagnostics_period', 'double', 1.0,
              'Seconds between /diagnostics messages.', minimum=0.1, maximum=60.0),
    ParamSpec('log_throttle_period', 'double', 10.0,
              'A repeated warning (bad frame, failed batch) is logged once per camera, then '
              'at most once per this many seconds. Changeable at runtime.', read_only=False,
              minimum=0.0, maximum=3600.0),
)
"""The node's parameters: the single source of truth for node.py, replay and config files."""

_SPECS = {spec.name: spec for spec in PARAMETERS}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == 'bool':
        return isinstance(value, bool | np.bool_)
    if kind == 'integer':
        return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if kind == 'double':
        return isinstance(value, int | float | np.integer | np.floating) \
            and not isinstance(value, bool | np.bool_)
    if kind == 'string':
        return isinstance(value, str)
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def validate_parameter(name: str, value: Any) -> Any:
    """Check one parameter value against its :class:`ParamSpec`; return it normalised.

    Raises:
        ConfigError: unknown parameter, wrong type, out of range or not one of the choices
            (the message starts with ``parameter <name>``).
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ConfigError(f'parameter {name}: unknown (known: {", ".join(_SPECS)})')
    if not _type_ok(spec.type, value):
        raise ConfigError(f'parameter {name}: expected {spec.type}, got '
                          f'{type(value).__name__} {value!r}')
    if spec.type == 'double':
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f'parameter {name}: {value!r} is not a finite number')
    elif spec.type == 'integer':
        value = int(value)
    elif spec.type == 'bool':
        value = bool(value)
    elif spec.type == 'string_array':
        value = [str(v) for v in value]
    if spec.minimum is not None and value < spec.minimum or \
            spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f'parameter {name}: {value!r} is outside '
                          f'[{spec.minimum:g}, {spec.maximum:g}]')
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f'parameter {name}: {value!r} is not one of '
                          f'{", ".join(spec.choices)}')
    return value


# -- cameras -----------------------------------------------------------------------------------
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')
_TOPIC_RE = re.compile(r'^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')
TRANSPORTS = ('raw', 'compressed')


@dataclass(frozen=True)
class CameraSpec:
    """One camera: its name, input topic and transport, and where its outputs go.

    Attributes:
        name: relative ROS name (``front``, ``arm/wrist``): output prefix and diagnostics name.
        topic: the subscribed topic (relative names follow the node namespace); for the
            compressed transport it ends with ``/compressed``.
        compressed: ``sensor_msgs/CompressedImage`` (else ``sensor_msgs/Image``).
        prefix: output namespace relative to the node (``name`` or empty).
    """

    name: str
    topic: str
    compressed: bool = False
    prefix: str | None = None

    @property
    def output_prefix(self) -> str:
        """``'<name>/'`` (or ``''`` with ``prefix_camera_name: false``)."""
        prefix = self.name if self.prefix is None else self.prefix
        return f'{prefix}/' if prefix else ''

    @property
    def detections_topic(self) -> str:
        """Relative output topic of the Detection2DArray messages."""
        return f'{self.output_prefix}detections'

    @property
    def annotated_topic(self) -> str:
        """Relative output topic of the annotated images."""
        return f'{self.output_prefix}detections/image'

    @property
    def transport(self) -> str:
        """``'compressed'`` or ``'raw'``."""
        return 'compressed' if self.compressed else 'raw'

    def entry(self) -> str:
        """The ``cameras`` parameter string of this camera."""
        return f'{self.name}:{self.topic}:{self.transport}'


def parse_camera(entry: str, where: str = 'cameras') -> CameraSpec:
    """Parse one ``'NAME[:TOPIC[:TRANSPORT]]'`` camera string.

    - ``front`` -> topic ``front/image_raw``, raw ``sensor_msgs/Image``.
    - ``front:/front/image_raw`` -> that topic, raw.
    - ``left:/left/image_raw/compressed`` -> CompressedImage (topic ends with ``/compressed``).
    - ``left:/left/image_raw:compressed`` -> CompressedImage on ``/left/image_raw/compressed``
      (image_transport's naming).

    Raises:
        ConfigError: naming ``where`` (e.g. ``cameras[2]``) and the part at fault.
    """
    if not isinstance(entry, str):
        raise ConfigError(f'parameter {where}: expected a string, got {entry!r}')
    parts = [p.strip() for p in entry.strip().split(':')]
    if not parts[0] or len(parts) > 3:
        raise ConfigError(f"parameter {where}: {entry!r} is not 'NAME[:TOPIC[:TRANSPORT]]'")
    name = parts[0]
    if not _NAME_RE.match(name) or '__' in name:
        raise ConfigError(f'parameter {where}: camera name {name!r} in {entry!r} is not a '
                          'relative ROS name (letters, digits, _ and /, not starting with a '
                          'digit or /)')
    topic = parts[1] if len(parts) > 1 and parts[1] else f'{name}/image_raw'
    if not _TOPIC_RE.match(topic) or '__' in topic:
        raise ConfigError(f'parameter {where}: topic {topic!r} in {entry!r} is not a valid '
                          'ROS topic name')
    ends_compressed = topic.endswith('/compressed')
    transport = parts[2].lower() if len(parts) > 2 and parts[2] else (
        'compressed' if ends_compressed else 'raw')
    if transport not in TRANSPORTS:
        raise ConfigError(f'parameter {where}: transport {parts[2]!r} in {entry!r} is not '
                          f'one of {", ".join(TRANSPORTS)}')
    if transport == 'compressed' and not ends_compressed:
        topic = f'{topic}/compressed'
    if transport == 'raw' and ends_compressed:
        raise ConfigError(f'parameter {where}: topic {topic!r} in {entry!r} ends with '
                          "/compressed but the transport is 'raw'")
    return CameraSpec(name, topic, transport == 'compressed')


def parse_cameras(entries: Iterable[str], prefix_camera_name: bool = True,
                  param: str = 'cameras') -> tuple[CameraSpec, ...]:
    """Parse the ``cameras`` parameter (see :func:`parse_camera`).

    Raises:
        ConfigError: empty list, a bad entry, duplicate names or topics, or several cameras
            with ``prefix_camera_name`` false (their outputs would collide).
    """
    if isinstance(entries, str):
        raise ConfigError(f'parameter {param}: expected a list of strings, got the string '
                          f'{entries!r}')
    items = list(entries)
    if not items:
        raise ConfigError(f'parameter {param}: at least one camera is required')
    cameras = [parse_camera(entry, f'{param}[{i}]') for i, entry in enumerate(items)]
    for attr in ('name', 'topic'):
        values = [getattr(c, attr) for c in cameras]
        dups = sorted({v for v in values if values.count(v) > 1})
        if dups:
            raise ConfigError(f'parameter {param}: duplicate camera {attr}(s) '
                              f'{", ".join(dups)}')
    if not prefix_camera_name:
        if len(cameras) > 1:
            raise ConfigError('parameter prefix_camera_name: false needs exactly one camera '
                              f'({len(cameras)} in {param}), else outputs would collide')
        cameras = [replace(c, prefix='') for c in cameras]
    return tuple(cameras)


# -- the whole parameter set -------------------------------------------------------------------
@dataclass(frozen=True)
class NodeParams:
    """A validated parameter set (field names are the ROS parameter names)."""

    model: str = 'models/demo.cfg'
    backend: str = 'auto'
    class_names_file: str = ''
    cameras: tuple[CameraSpec, ...] = field(
        default_factory=lambda: (CameraSpec('camera', 'camera/image_raw'),))
    prefix_camera_name: bool = True
    conf_threshold: float = 0.25
    nms_threshold: float = 0.45
    max_detections: int = 100
    max_batch: int = 4
    max_frame_age: float = 0.5
    publish_annotated: bool = True
    class_id_format: str = 'name'
    qos_reliability: str = 'best_effort'
    diagnostics_period: float = 1.0
    log_throttle_period: float = 10.0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = 'parameters',
                  ignore_unknown: bool = False) -> NodeParams:
        """Validate ``values`` (missing names take their defaults).

        Args:
            values: parameter name -> value.
            source: where the values come from (a file name), for unknown-name errors.
            ignore_unknown: skip names that are not node parameters (rclpy's own
                ``use_sim_time`` ...) instead of raising.

        Raises:
            ConfigError: naming the parameter at fault.
        """
        unknown = sorted(set(values) - set(_SPECS))
        if unknown and not ignore_unknown:
            raise ConfigError(f'{source}: unknown parameter(s) {", ".join(unknown)} (known: '
                              f'{", ".join(_SPECS)})')
        checked = {spec.name: validate_parameter(spec.name, values.get(spec.name,
                                                                       spec.default))
                   for spec in PARAMETERS}
        checked['cameras'] = parse_cameras(checked['cameras'], checked['prefix_camera_name'])
        for name in ('model',):
            if not checked[name].strip():
                raise ConfigError(f'parameter {name}: must not be empty')
        return cls(**checked)

    def as_dict(self) -> dict[str, Any]:
        """Parameter name -> ROS value (cameras as their strings)."""
        out = {spec.name: getattr(self, spec.name) for spec in PARAMETERS}
        out['cameras'] = [c.entry() for c in self.cameras]
        return out


def load_params_file(path: str | os.PathLike[str], node_name: str | None = None
                     ) -> dict[str, Any]:
    """Read a ROS 2 params YAML file (``/**: ros__parameters: ...``) into a flat dict.

    Sections ``/**`` and ``*`` apply to every node; others only when their name (last path
    component, with or without namespace) equals ``node_name`` or ``node_name`` is None.
    Nested mappings are flattened with dots (``a: {b: 1}`` -> ``a.b``), as ROS does.

    Raises:
        ConfigError: unreadable file or not a params file (naming the file).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f'params file {path}: cannot read ({exc})') from None
    if not isinstance(data, dict):
        raise ConfigError(f'params file {path}: expected a mapping of node names to '
                          "'ros__parameters'")
    values: dict[str, Any] = {}
    wildcard = [k for k in data if str(k) in ('/**', '**', '*', '/*')]
    named = [k for k in data if k not in wildcard]
    for key in wildcard + named:
        section = data[key]
        if key in named and node_name is not None and \
                str(key).strip('/').split('/')[-1] != node_name.strip('/').split('/')[-1]:
            continue
        if not isinstance(section, dict) or 'ros__parameters' not in section:
            raise ConfigError(f"params file {path}: section {key!r} has no 'ros__parameters'")
        params = section['ros__parameters'] or {}
        if not isinstance(params, dict):
            raise ConfigError(f'params file {path}: {key!r}.ros__parameters is not a mapping')
        _flatten(params, '', values)
    return values


def _flatten(tree: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            _flatten(value, f'{name}.', out)
        else:
            out[name] = value


# -- model files -------------------------------------------------------------------------------
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
    from darknet53_ros.fileio import atomic_path
    from darknet53_ros.model.cfg import load_cfg
    from darknet53_ros.model.names import read_names
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import read_weights

    network = load_cfg(path)
    weights = read_weights(weights_path, network)
    names = read_names(names_path) if names_path.is_file() else None
    with atomic_path(onnx_path) as tmp:
        export_onnx(network, weights, tmp, names=names)
    return onnx_path


def _read_names(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except OSError as exc:
        raise ConfigError(f'parameter class_names_file: cannot read {path} ({exc})') from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise ConfigError(f'parameter class_names_file: {path} holds no names')
    return names


def load_detector(params: NodeParams, share_dir: str | os.PathLike[str] | None | bool = True,
                  model_path: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Path]:
    """Load the :class:`~darknet53_ros.inference.detector.Detector` the parameters describe.

    ``model_path`` (e.g. a command-line path) overrides the ``model`` parameter. Returns
    ``(detector, model file)``.

    Raises:
        ConfigError, ModelError, BackendError: naming the parameter or file at fault.
    """
    from darknet53_ros.inference.detector import Detector

    if model_path is not None:
        resolved = Path(model_path)
        if not resolved.is_file():
            raise ConfigError(f'model: {resolved} does not exist')
    else:
        resolved = resolve_data_path(params.model, 'model', share_dir)
    resolved = prepare_model(resolved, cache_dir)
    names = None
    if params.class_names_file:
        names = _read_names(resolve_data_path(params.class_names_file, 'class_names_file',
                                              share_dir))
    detector = Detector.from_model(resolved, backend=params.backend,
                                   conf_threshold=params.conf_threshold,
                                   nms_threshold=params.nms_threshold,
                                   max_detections=params.max_detections, class_names=names)
    classes = (getattr(detector.backend, 'metadata', None) or {}).get('classes')
    if names is not None and classes is not None and len(names) != classes:
        detector.close()
        raise ConfigError(f'parameter class_names_file: {len(names)} names but the model '
                          f'{resolved} has {classes} classes')
    return detector, resolved


# -- helpers: image conversion, throttled logs, drawing ----------------------------------------
def make_converter(prefer_cv_bridge: bool = True) -> tuple[str, Callable[[Any], np.ndarray]]:
    """``(name, convert)``: a message -> uint8 BGR function.

    With ``prefer_cv_bridge`` and ``cv_bridge`` importable (rclpy messages on a robot), cv_bridge
    converts and :func:`~darknet53_ros.io.encodings.msg_to_bgr` is the fallback for encodings it
    rejects; otherwise ``msg_to_bgr`` alone (rclpy or rosbags messages).
    """
    from darknet53_ros.io.encodings import is_compressed_msg, msg_to_bgr

    bridge = None
    if prefer_cv_bridge:
        try:
            from cv_bridge import CvBridge

            bridge = CvBridge()
        except Exception:  # ImportError, or a cv_bridge built against another numpy
            bridge = None
    if bridge is None:
        return 'darknet53_ros.io.encodings', msg_to_bgr

    def convert(msg: Any) -> np.ndarray:
        try:
            if is_compressed_msg(msg):
                return bridge.compressed_imgmsg_to_cv2(msg, 'bgr8')
            return bridge.imgmsg_to_cv2(msg, 'bgr8')
        except Exception:
            return msg_to_bgr(msg)

    return 'cv_bridge', convert


class ThrottledLog:
    """Log a message for a key at once, then at most once per ``period_s`` for that key.

    Suppressed repeats are counted and reported with the next message of the key.
    ``logger`` needs ``warning``/``error``/``info`` methods taking one string (a
    ``logging.Logger`` or an rclpy logger).
    """

    def __init__(self, logger: Any, period_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create the throttle; nothing is logged yet."""
        self.logger = logger
        self.period_s = float(period_s)
        self.clock = clock
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any, message: str, level: str = 'warning') -> bool:
        """Log ``message`` unless ``key`` logged within the period; True when logged."""
        with self._lock:
            now = self.clock()
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message = f'{message} ({suppressed} more since the last report)'
        getattr(self.logger, level)(message)
        return True


# -- the core ----------------------------------------------------------------------------------
class Outputs:
    """Where the core's messages go; the node, the replay and tests override these."""

    def detections(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        """Publish a ``vision_msgs/Detection2DArray`` (``stamp_ns``: publish time)."""

    def wants_annotated(self, camera: CameraSpec) -> bool:
        """Whether an annotated image of ``camera`` is wanted now (e.g. has subscribers)."""
        return False

    def annotated(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        """Publish an annotated ``sensor_msgs/Image``."""


@dataclass
class _CameraStats:
    published: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CORE_DROP_REASONS, 0))
    output_rate: RateMeter = field(default_factory=RateMeter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    last_error: str = ''
    reported: dict[str, int] = field(default_factory=dict)


def _stamp_ns(header: Any) -> int | None:
    stamp = getattr(header, 'stamp', None)
    if stamp is None:
        return None
    try:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        return None


class NodeCore:
    """The detector node without ROS: scheduler, worker, conversion, messages, diagnostics.

    Args:
        params: validated :class:`NodeParams`.
        detector: a :class:`~darknet53_ros.inference.detector.Detector` (owned: closed by
            :meth:`shutdown`).
        types: :class:`~darknet53_ros.io.messages.MessageTypes` (rclpy or rosbags).
        outputs: where messages go (:class:`Outputs`).
        logger: ``warning``/``error``/``info`` taking one string (default: ``logging``).
        clock: monotonic seconds for the scheduler (arrival, staleness, rates) and log
            throttling.
        now_ns: the ROS clock in ns (node clock, or bag time offline): publish time for
            stamp-to-publish latency and diagnostics headers.
        converter: ``(name, msg -> BGR)``; default :func:`make_converter` without cv_bridge.
        model_path: the model file (reported in diagnostics).
        node_name: prefix of the diagnostic status names.
    """

    def __init__(self, params: NodeParams, detector: Any, types: Any,
                 outputs: Outputs | None = None, logger: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 now_ns: Callable[[], int] = time.time_ns,
                 converter: tuple[str, Callable[[Any], np.ndarray]] | None = None,
                 model_path: str | os.PathLike[str] | None = None,
                 node_name: str = NODE_NAME) -> None:
        """Build the scheduler (the worker starts with :meth:`start`)."""
        self.params = params
        self.detector = detector
        self.types = types
        self.outputs = outputs or Outputs()
        self.logger = logger or logging.getLogger(f'{PACKAGE}.node')
        self.clock = clock
        self.now_ns = now_ns
        self.converter_name, self.convert = converter or make_converter(False)
        backend = detector.backend
        self.model_path = str(model_path) if model_path is not None else str(
            getattr(backend, 'engine_path', None) or getattr(backend, 'path', ''))
        self.node_name = node_name.strip('/') or NODE_NAME
        self.cameras: dict[str, CameraSpec] = {c.name: c for c in params.cameras}
        self.scheduler = FrameScheduler(list(self.cameras), params.max_batch,
                                        params.max_frame_age, clock=clock)
        self.throttle = ThrottledLog(self.logger, params.log_throttle_period, clock)
        self._stats = {name: _CameraStats() for name in self.cameras}
        self._lock = threading.Lock()
        self._batches = 0
        self._frames = 0
        self._inference_s: deque[float] = deque(maxlen=100)
        self._worker: InferenceWorker | None = None
        self._closed = False
        self._started_at = clock()
        self._last_report_at = self._started_at
        self._backend_info: dict[str, Any] | None = None
        self.backend_info()  # read now, while the backend is open

    # -- input ---------------------------------------------------------------------------------
    def submit(self, camera: str, msg: Any) -> bool:
        """Offer an image message of ``camera`` (from a subscription callback); never waits for
        inference or decodes. Returns False when shutting down."""
        header = getattr(msg, 'header', None)
        stamp = _stamp_ns(header)
        return self.scheduler.submit(camera, msg, None if stamp is None else stamp * 1e-9,
                                     header)

    # -- processing ----------------------------------------------------------------------------
    def _drop(self, camera: str, reason: str, exc: BaseException, key: Any = None) -> None:
        text = f'{type(exc).__name__}: {exc}'
        with self._lock:
            stats = self._stats[camera]
            stats.dropped[reason] += 1
            stats.last_error = text
        spec = self.cameras[camera]
        what = {'bad_image': 'dropped a frame it cannot decode',
                'inference_error': 'dropped a frame: inference failed',
                'publish_error': 'could not publish'}[reason]
        self.throttle(key or (camera, reason), f'camera {camera} ({spec.topic}): {what}: {text}',
                      'error' if reason == 'inference_error' else 'warning')

    def process_batch(self, batch: Sequence[QueuedFrame]) -> int:
        """Decode, detect (one batch for all cameras) and emit; returns frames published.

        Never raises for bad frames or a failing backend: those frames are dropped, counted
        and logged (throttled).
        """
        frames: list[QueuedFrame] = []
        images: list[np.ndarray] = []
        for queued in batch:
            try:
                image = self.convert(queued.frame)
                if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) \
                        or image.size == 0:
                    raise ValueError(f'decoded to {type(image).__name__} '
                                     f'{getattr(image, "shape", "")}')
            except Exception as exc:
                self._drop(queued.camera, 'bad_image', exc)
                continue
            frames.append(queued)
            images.append(image)
        if not frames:
            return 0
        start = time.perf_counter()
        try:
            results = self.detector.detect_batch(images)
            if len(results) != len(images):
                raise RuntimeError(f'{len(results)} results for {len(images)} images')
        except Exception as exc:
            for queued in frames:
                self._drop(queued.camera, 'inference_error', exc, key=('inference', 'batch'))
            return 0
        elapsed = time.perf_counter() - start
        with self._lock:
            self._batches += 1
            self._frames += len(frames)
            self._inference_s.append(elapsed)
        params = self.params
        names = self.detector.names
        published = 0
        for queued, image, det in zip(frames, images, results):
            camera = self.cameras[queued.camera]
            try:
                published += self._emit(camera, queued, image, det, names, params)
            except Exception as exc:
                self._drop(queued.camera, 'publish_error', exc)
        return published

    def _emit(self, camera: CameraSpec, queued: QueuedFrame, image: np.ndarray, det: Any,
              names: Sequence[str] | None, params: NodeParams) -> int:
        from darknet53_ros.io.messages import detections_to_msg, header_msg, image_msg

        header = queued.header if queued.header is not None else header_msg(
            self.types, self.now_ns(), '')
        msg = detections_to_msg(self.types, header, det.boxes, det.scores, det.class_ids,
                                names, params.class_id_format)
        now = self.now_ns()
        self.outputs.detections(camera, msg, now)
        stamp = _stamp_ns(header)
        with self._lock:
            stats = self._stats[camera.name]
            stats.published += 1
            stats.output_rate.add(self.clock())
            if stamp is not None and stamp > 0:
                stats.latencies.append((now - stamp) * 1e-9)
        if params.publish_annotated and self.outputs.wants_annotated(camera):
            annotated = draw_detections(image, det.boxes, det.scores, det.class_ids, names)
            self.outputs.annotated(camera, image_msg(self.types, header, annotated), now)
        return 1

    def process_pending(self) -> int:
        """Process every waiting frame now, in this thread (offline, deterministic mode);
        returns frames published."""
        published = 0
        while True:
            batch = self.scheduler.next_batch(timeout=0)
            if not batch:
                return published
            published += self.process_batch(batch)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> NodeCore:
        """Start the inference thread; returns self."""
        if self._worker is None:
            self._worker = InferenceWorker(self.scheduler, self.process_batch,
                                           on_error=self._on_worker_error).start()
        return self

    def _on_worker_error(self, exc: BaseException, batch: list[QueuedFrame]) -> None:
        self.throttle(('worker',), f'inference thread: unexpected {type(exc).__name__}: {exc}',
                      'error')

    @property
    def running(self) -> bool:
        """True while the inference thread runs."""
        return self._worker is not None and self._worker.running

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop the worker (after its current batch), then close the detector (frees the
        engine / CUDA context from the thread that is not using it any more). Idempotent.
        Returns False when the worker did not stop in time (the detector is then left open
        rather than freed under a running inference)."""
        if self._closed:
            return True
        stopped = True
        if self._worker is not None:
            stopped = self._worker.stop(timeout)
        else:
            self.scheduler.close()
        if not stopped:
            self.logger.error(f'inference thread did not stop within {timeout:g} s; the '
                              'backend is left open')
            return False
        self._closed = True
        try:
            self.detector.close()
        except Exception as exc:
            self.logger.error(f'closing the backend failed: {type(exc).__name__}: {exc}')
        return True

    # -- runtime parameters --------------------------------------------------------------------
    def update_parameters(self, changes: Mapping[str, Any], ignore_unknown: bool = True
                          ) -> dict[str, Any]:
        """Apply runtime parameter changes atomically (all validated first).

        Returns the applied values. Names that are not node parameters are ignored (rclpy's
        own, like ``use_sim_time``) unless ``ignore_unknown`` is false.

        Raises:
            ConfigError: a value is invalid or the parameter is read-only (needs a restart).
        """
        applied: dict[str, Any] = {}
        for name, value in changes.items():
            spec = _SPECS.get(name)
            if spec is None:
                if ignore_unknown:
                    continue
                raise ConfigError(f'parameter {name}: unknown')
            checked = validate_parameter(name, value)
            if spec.read_only and checked != getattr(self.params, name, checked):
                raise ConfigError(f'parameter {name}: read-only; restart the node to change it')
            applied[name] = checked
        runtime = {k: v for k, v in applied.items() if not _SPECS[k].read_only}
        if not runtime:
            return applied
        config = self.detector.config
        det_fields = {k: runtime[k] for k in ('conf_threshold', 'nms_threshold',
                                              'max_detections') if k in runtime}
        new_config = replace(config, **det_fields) if det_fields else config
        self.detector.config = new_config
        self.params = replace(self.params, **runtime)
        if 'max_frame_age' in runtime:
            age = runtime['max_frame_age']
            self.scheduler.max_age_s = age if age > 0 else None
        if 'log_throttle_period' in runtime:
            self.throttle.period_s = runtime['log_throttle_period']
        return applied

    # -- statistics and diagnostics ------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-camera counters: the scheduler's (``received``, ``processed``, rates ...) plus
        ``published``, ``output_hz``, ``latency_s`` (last), ``latency_mean_s``,
        ``latency_max_s``, ``dropped`` (by every reason), ``dropped_total``, ``last_error``."""
        sched = self.scheduler.stats()
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, own in self._stats.items():
                entry = dict(sched[name])
                dropped = {**entry['dropped'], **own.dropped}
                lat = list(own.latencies)
                entry.update(
                    published=own.published, output_hz=own.output_rate.rate(now),
                    dropped=dropped, dropped_total=sum(dropped.values()),
                    latency_s=lat[-1] if lat else None,
                    latency_mean_s=float(np.mean(lat)) if lat else None,
                    latency_max_s=max(lat) if lat else None, last_error=own.last_error)
                out[name] = entry
        return out

    def backend_info(self) -> dict[str, Any]:
        """Backend name, precision, engine file, input size, classes and providers."""
        if self._backend_info is None:
            self._backend_info = self._read_backend_info()
        return dict(self._backend_info)

    def _read_backend_info(self) -> dict[str, Any]:
        info: dict[str, Any] = dict(self.detector.backend.describe())
        info['engine_file'] = info.pop('model_file', str(self.model_path))
        info['input_size'] = f'{self.detector.width}x{self.detector.height}'
        if self.detector.names:
            info['classes'] = len(self.detector.names)
        return info

    def diagnostics(self) -> dict[str, dict[str, Any]]:
        """Diagnostic statuses as plain dicts (see
        :func:`~darknet53_ros.io.messages.diagnostic_array_msg`): one for the detector, one per
        camera. Levels compare with the previous call: WARN when a camera received nothing
        or dropped bad frames since then, ERROR when inference failed since then."""
        now = self.clock()
        stats = self.stats()
        period = max(now - self._last_report_at, 1e-9)
        self._last_report_at = now
        config = self.detector.config
        with self._lock:
            batches, frames = self._batches, self._frames
            inference = list(self._inference_s)
        failed_total = sum(s['dropped']['inference_error'] for s in stats.values())
        detector_status: dict[str, Any] = {
            **self.backend_info(),
            'cameras': len(self.cameras), 'max_batch': self.params.max_batch,
            'batches': batches, 'frames': frames,
            'mean_batch_size': frames / batches if batches else 0.0,
            'inference_ms_mean': 1e3 * float(np.mean(inference)) if inference else 0.0,
            'inference_ms_max': 1e3 * max(inference) if inference else 0.0,
            'conf_threshold': config.conf_threshold, 'nms_threshold': config.nms_threshold,
            'max_frame_age_s': self.params.max_frame_age, 'image_converter': self.converter_name,
            'inference_thread': 'running' if self.running else 'stopped',
        }
        statuses: dict[str, dict[str, Any]] = {}
        new_failures = 0
        for name, entry in stats.items():
            own = self._stats[name]
            previous = own.reported
            delta = {k: entry['dropped'][k] - previous.get(k, 0) for k in ALL_DROP_REASONS}
            received_delta = entry['received'] - previous.get('received', 0)
            own.reported = {**entry['dropped'], 'received': entry['received']}
            new_failures += delta['inference_error']
            level, message = 0, 'ok'
            if entry['received'] == 0:
                level, message = 1, f'no images received on {self.cameras[name].topic}'
            elif received_delta == 0:
                level, message = 1, f'no images in the last {period:.1f} s'
            if delta['bad_image']:
                level, message = 1, f'{delta["bad_image"]} undecodable frame(s) dropped'
            if delta['inference_error'] or delta['publish_error']:
                level, message = 2, f'{delta["inference_error"] + delta["publish_error"]} ' \
                                    'frame(s) lost to inference/publish errors'
            status: dict[str, Any] = {
                'level': level, 'message': message, 'topic': self.cameras[name].topic,
                'detections_topic': self.cameras[name].detections_topic,
                'input_hz': entry['received_hz'], 'output_hz': entry['output_hz'],
                'received': entry['received'], 'published': entry['published'],
                'latency_ms': _ms(entry['latency_s']),
                'latency_ms_mean': _ms(entry['latency_mean_s']),
                'latency_ms_max': _ms(entry['latency_max_s']),
                'queue_wait_ms_max': 1e3 * entry['max_wait_s'],
                'dropped': entry['dropped_total'],
            }
            status.update({f'dropped_{k}': v for k, v in entry['dropped'].items()})
            if entry['last_error']:
                status['last_error'] = entry['last_error']
            statuses[f'{self.node_name}: {name}'] = status
        level = 2 if new_failures else 0 if self.running or self._worker is None else 2
        message = (f'{new_failures} frame(s) failed inference' if new_failures else
                   f'{detector_status["backend"]} {detector_status["precision"]}, '
                   f'{len(self.cameras)} camera(s)')
        if self._closed:
            level, message = 0, 'shut down'
        elif self._worker is not None and not self.running:
            message = 'inference thread stopped'
        detector_status.update(level=level, message=message,
                               inference_errors_total=failed_total)
        return {f'{self.node_name}: detector': detector_status, **statuses}

    def diagnostics_msg(self, stamp_ns: int | None = None, hardware_id: str = '') -> Any:
        """A ``diagnostic_msgs/DiagnosticArray`` of :meth:`diagnostics`."""
        from darknet53_ros.io.messages import diagnostic_array_msg, header_msg

        stamp = self.now_ns() if stamp_ns is None else stamp_ns
        return diagnostic_array_msg(self.types, header_msg(self.types, stamp, ''),
                                    self.diagnostics(), hardware_id or self.node_name)

    def label_info_msg(self, stamp_ns: int | None = None) -> Any | None:
        """``vision_msgs/LabelInfo`` (class map, conf threshold), or None when the message
        type is unavailable or the model has no class names."""
        from darknet53_ros.io.messages import header_msg, label_info_msg

        if self.types.LabelInfo is None or not self.detector.names:
            return None
        stamp = self.now_ns() if stamp_ns is None else stamp_ns
        return label_info_msg(self.types, header_msg(self.types, stamp, ''),
                              self.detector.names, self.detector.config.conf_threshold)


def _ms(seconds: float | None) -> float | str:
    return 'n/a' if seconds is None else 1e3 * seconds
