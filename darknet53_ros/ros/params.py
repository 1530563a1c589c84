"""The detector node's parameters: declared once, as the fields of :class:`NodeParams`.

Each field of :class:`NodeParams` is declared with :func:`~darknet53_ros.ros.schema.param`,
which records the ROS parameter's default, description, runtime-changeability, range or choices
and, for detection thresholds, the :class:`~darknet53_ros.inference.detector.DetectorConfig`
field it sets; each camera's parameters (``NAME.topic`` ...) are the fields of
:class:`~darknet53_ros.ros.cameras.CameraSpec`, declared the same way. Everything else is
derived from those fields:

- :data:`PARAMETERS`: one :class:`ParamSpec` per node parameter, and
  :data:`~darknet53_ros.ros.cameras.CAMERA_PARAMETERS` per camera (what ``ports.py`` declares,
  what ``replay`` and the params YAML files in ``config/`` accept; tested);
- :func:`validate_parameter`, :meth:`NodeParams.from_dict` and :meth:`NodeParams.updated`:
  validation, errors are :class:`~darknet53_ros.errors.ConfigError` naming the parameter;
- :func:`is_runtime` (changeable while the node is configured; the others are applied at
  ``configure``) and :data:`DETECTOR_FIELDS` (parameter -> ``DetectorConfig`` field).

:func:`load_params_file` reads a ROS 2 params YAML file (``/**: ros__parameters: ...``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.backends.cuda_runtime import RUNTIMES as CUDA_RUNTIMES
from darknet53_ros.inference.backends.registry import backend_choices
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS
from darknet53_ros.ros.cameras import (
    CAMERA_PARAMETERS,
    CameraSpec,
    camera_key,
    check_camera_name,
    parse_cameras,
)
from darknet53_ros.ros.schema import PARAM_TYPES, ParamSpec, check_value, param, specs_of

__all__ = [
    'DETECTOR_FIELDS',
    'NODE_NAME',
    'PACKAGE',
    'PARAMETERS',
    'PARAM_TYPES',
    'RUNTIME_PARAMETERS',
    'NodeParams',
    'ParamSpec',
    'is_runtime',
    'load_params_file',
    'override_warning',
    'param',
    'validate_parameter',
]

PACKAGE = 'darknet53_ros'
NODE_NAME = 'darknet53_detector'

#: Retired parameters and what replaces them (named in errors and override warnings).
RETIRED = {
    'qos_reliability': 'per camera: NAME.reliability (or a qos_overrides./TOPIC.subscription.'
                       'reliability parameter)',
}


def _cameras(names: Any) -> tuple[CameraSpec, ...]:
    return parse_cameras(names)


@dataclass(frozen=True)
class NodeParams:
    """A validated parameter set (field names are the ROS parameter names)."""

    model: str = param(
        'models/demo.cfg',
        'Model: .onnx (ONNX Runtime), .engine/.plan (TensorRT) or a Darknet .cfg with '
        '.weights (and .names) beside it, exported to ONNX into a cache on start. '
        'Absolute, or relative to the package share directory, then to the '
        'darknet53_ros Python package (which holds the bundled demo in models/).',
        non_empty=True)
    backend: str = param(
        'auto',
        'Inference backend; auto picks by extension (.onnx: onnxruntime, '
        '.engine/.plan: tensorrt).', choices=backend_choices())
    class_names_file: str = param(
        '',
        'Optional class names file (one name per line), absolute or relative like '
        'model; empty: the names stored in the model.')
    cameras: tuple[CameraSpec, ...] = param(
        ['camera'],
        'Camera names, e.g. [front, left]. Each NAME has the parameters NAME.topic, '
        'NAME.transport, NAME.reliability, NAME.frame_id, NAME.conf_threshold and '
        'NAME.tracking (defaults from the name: NAME.topic is NAME/image_raw) and publishes '
        'NAME/detections, NAME/detections/image and NAME/label_info.',
        ros_type='string_array', convert=_cameras)
    prefix_camera_name: bool = param(
        True,
        'Publish under NAME/ (NAME/detections). false publishes detections and '
        'detections/image directly in the node namespace: one camera only, for one '
        'node per camera in the camera namespace.')
    conf_threshold: float = param(
        0.25,
        'Keep detections with score >= this (score = objectness * class probability). '
        'Changeable at runtime.', runtime=True, minimum=0.0, maximum=1.0,
        detector_field='conf_threshold')
    nms_threshold: float = param(
        0.45,
        'Suppress same-class boxes overlapping a better box with IoU above this. '
        'Changeable at runtime.', runtime=True, minimum=0.0, maximum=1.0,
        detector_field='nms_threshold')
    max_detections: int = param(
        100,
        'At most this many detections per image. Changeable at runtime.',
        runtime=True, minimum=1, maximum=10000, detector_field='max_detections')
    max_batch: int = param(
        4,
        'At most this many cameras per inference batch (one frame each); a TensorRT '
        'engine built for a fixed batch runs padded batches.', minimum=1, maximum=64)
    preprocess: str = param(
        'auto',
        'Where images are letterboxed: auto (on the GPU when the backend can: TensorRT), '
        'cpu, or gpu (TensorRT backend only; an error otherwise).',
        choices=('auto', 'cpu', 'gpu'))
    cuda_runtime: str = param(
        'auto',
        'CUDA runtime of the TensorRT backend: auto (pycuda if installed, else cuda-python), '
        'pycuda or cuda-python; ignored by ONNX Runtime.', choices=CUDA_RUNTIMES)
    max_frame_age: float = param(
        0.5,
        'Drop frames that waited longer than this many seconds for the inference '
        'thread (0 disables). Changeable at runtime.', runtime=True, minimum=0.0,
        maximum=3600.0)
    publish_annotated: bool = param(
        True,
        'Draw and publish NAME/detections/image (only while it has subscribers). '
        'Changeable at runtime.', runtime=True)
    class_id_format: str = param(
        'name',
        "results[].hypothesis.class_id: 'name' (class name) or 'index' (class index "
        'as text). Changeable at runtime.', runtime=True, choices=('name', 'index'))
    diagnostics_period: float = param(
        1.0, 'Seconds between /diagnostics messages.', minimum=0.1, maximum=60.0)
    log_throttle_period: float = param(
        10.0,
        'A repeated warning (bad frame, failed batch) is logged once per camera, then '
        'at most once per this many seconds. Changeable at runtime.', runtime=True,
        minimum=0.0, maximum=3600.0)
    max_image_pixels: int = param(
        DEFAULT_MAX_IMAGE_PIXELS,
        'Drop (as bad_image) frames with more pixels than this, checked on the Image '
        'width*height or the PNG/JPEG header before decoding; default: 8K DCI, 8192x4320. '
        'Changeable at runtime.', runtime=True, minimum=1, maximum=1 << 30)
    bond_heartbeat_period: float = param(
        0.1,
        'Lifecycle node: seconds between heartbeats of the bond to a lifecycle manager '
        "(bondpy; Nav2's lifecycle_manager breaks bring-up without it), formed at activate "
        'and broken at deactivate as Nav2 nodes do; 0 disables it. Ignored by the plain '
        'node.', minimum=0.0, maximum=10.0)
    # -- throughput at robot frame sizes (issue 21; doc/ros_performance.md) ---------------------
    decode_threads: int = param(
        2,
        'Threads that decode frames (JPEG/PNG, colour conversion) beside the inference '
        'thread, at most one per camera; 0 decodes on the inference thread.',
        minimum=0, maximum=16)
    decode_reduced: bool = param(
        True,
        'Decode JPEG frames at 1/2, 1/4 or 1/8 scale when the network input (after the '
        'letterbox) is at most that fraction of the frame; boxes stay in source pixels.')
    annotated_max_rate: float = param(
        10.0,
        'At most this many annotated images per second and camera, drawn off the inference '
        'thread (0: every detected frame). Changeable at runtime.', runtime=True,
        minimum=0.0, maximum=1000.0)
    annotated_scale: float = param(
        0.5,
        'Size of the annotated images relative to the camera frame, in (0, 1] (never above '
        'a reduced-scale decode); half size is a quarter of the bytes to publish and view. '
        'Changeable at runtime.', runtime=True, minimum=0.01, maximum=1.0)
    intra_op_threads: int = param(
        0,
        'ONNX Runtime threads per inference; 0: auto, half the CPU cores (2 on 2 to 4 cores, '
        'at most 4), leaving the rest of a shared robot CPU to other nodes. Ignored by '
        'TensorRT.',
        minimum=0, maximum=256)
    allow_spinning: bool = param(
        False,
        'Let ONNX Runtime worker threads spin while they wait for work: slightly lower '
        'latency, but a core burnt at 100 %. Ignored by TensorRT (which always blocks).')
    rate_warn_fraction: float = param(
        0.8,
        "Diagnostics WARN when a camera's received or detected rate is below this fraction "
        "of its publisher's rate (from header stamps), naming the reason; 0 disables. "
        'Changeable at runtime.', runtime=True, minimum=0.0, maximum=1.0)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = 'parameters',
                  ignore_unknown: bool = False) -> NodeParams:
        """Validate ``values`` (missing names take their defaults; ``NAME.<key>`` values of the
        cameras listed in ``cameras`` set those cameras).

        Args:
            values: parameter name -> value.
            source: where the values come from (a file name), for unknown-name errors.
            ignore_unknown: skip names that are not node parameters (another camera's
                ``NAME.topic`` ...) instead of raising; rclpy's own (``use_sim_time``,
                ``qos_overrides.*``) are always skipped.

        Raises:
            ConfigError: naming the parameter at fault.
        """
        checked = {spec.name: check_value(spec, values.get(spec.name, spec.default))
                   for spec in PARAMETERS}
        names = checked['cameras']
        checked['cameras'] = parse_cameras(names, values, checked['prefix_camera_name'],
                                           reserved=_RESERVED)
        unknown = sorted(n for n in values if n not in _SPECS and not _is_camera_param(n, names)
                         and not _ros_own(n))
        if unknown and not ignore_unknown:
            raise ConfigError(f'{source}: {_unknown_text(unknown, names)}')
        return cls(**checked)

    def as_dict(self) -> dict[str, Any]:
        """Parameter name -> ROS value: the node's, then every camera's ``NAME.<key>``."""
        out = {spec.name: getattr(self, spec.name) for spec in PARAMETERS}
        out['cameras'] = [c.name for c in self.cameras]
        for camera in self.cameras:
            out.update(camera.parameters())
        return out

    def detector_options(self) -> dict[str, Any]:
        """``DetectorConfig`` field -> value, for the parameters that set one; the detector's
        ``conf_threshold`` is the lowest camera threshold (the core filters each camera's
        detections at its own)."""
        options = {target: getattr(self, name) for name, target in DETECTOR_FIELDS.items()}
        options['conf_threshold'] = min(c.threshold(self.conf_threshold) for c in self.cameras)
        return options

    def updated(self, changes: Mapping[str, Any], ignore_unknown: bool = True
                ) -> tuple[NodeParams, dict[str, Any]]:
        """These parameters with runtime ``changes`` applied: ``(params, applied)``.

        Names that are neither node nor camera parameters are skipped (rclpy's own, like
        ``use_sim_time``) unless ``ignore_unknown`` is false. Resolved camera topics are kept.

        Raises:
            ConfigError: a value is invalid, or a parameter applied at configure differs from
                the current value.
        """
        current = self.as_dict()
        names = current['cameras']
        applied: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in _SPECS and not _is_camera_param(name, names):
                if ignore_unknown:
                    continue
                raise ConfigError(f'parameter {name}: {_unknown_text([name], names)}')
            checked = validate_parameter(name, value)
            if not is_runtime(name) and checked != current[name]:
                raise ConfigError(f'parameter {name}: applied at configure; change it while '
                                  'the node is unconfigured (lifecycle node: deactivate, '
                                  'cleanup, set, configure, activate) or restart the node')
            applied[name] = checked
        if not applied:
            return self, applied
        params = NodeParams.from_dict({**current, **applied})
        cameras = tuple(replace(c, resolved_topic=old.resolved_topic)
                        for c, old in zip(params.cameras, self.cameras))
        return replace(params, cameras=cameras), applied


PARAMETERS: tuple[ParamSpec, ...] = specs_of(NodeParams)
"""The node's parameters, in declaration order (derived from :class:`NodeParams`)."""

_SPECS = {spec.name: spec for spec in PARAMETERS}
_CAMERA_SPECS = {spec.name: spec for spec in CAMERA_PARAMETERS}
# rclpy's own parameters and prefixes: never camera names.
_ROS_OWN = ('use_sim_time', 'start_type_description_service', 'qos_overrides')
_RESERVED = frozenset(_SPECS) | frozenset(_ROS_OWN)

RUNTIME_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if not spec.read_only)
"""Node parameters that can be changed while the node is configured (the others are applied
at ``configure``); per camera, :func:`is_runtime` tells."""

DETECTOR_FIELDS: dict[str, str] = {spec.name: spec.detector_field for spec in PARAMETERS
                                   if spec.detector_field is not None}
"""Parameter name -> the ``DetectorConfig`` field it sets."""


def _ros_own(name: str) -> bool:
    """rclpy's own parameters (``use_sim_time``, ``qos_overrides.*`` ...): never misspellings
    of the node's."""
    return name in _ROS_OWN or name.startswith('qos_overrides.')


def _is_camera_param(name: str, cameras: Iterable[str]) -> bool:
    parts = camera_key(name)
    return parts is not None and parts[0] in cameras


def _unknown_text(unknown: list[str], cameras: list[str]) -> str:
    items = []
    for name in unknown:
        parts = camera_key(name)
        if name in RETIRED:
            items.append(f'{name} (retired: {RETIRED[name]})')
        elif parts is not None:
            items.append(f'{name} (no camera {parts[0]} in cameras: {", ".join(cameras)})')
        else:
            close = difflib.get_close_matches(name, list(_SPECS), n=1)
            items.append(f'{name} (did you mean {close[0]}?)' if close else name)
    return f'unknown parameter(s) {", ".join(items)} (known: {", ".join(_SPECS)}, and ' \
           f'NAME.{{{",".join(_CAMERA_SPECS)}}} per camera NAME)'


def is_runtime(name: str) -> bool:
    """Whether the (node or ``NAME.<key>`` camera) parameter ``name`` can change while the node
    is configured; the others are applied at ``configure``."""
    if name in _SPECS:
        return not _SPECS[name].read_only
    parts = camera_key(name)
    return parts is not None and not _CAMERA_SPECS[parts[1]].read_only


def parameter_spec(name: str) -> ParamSpec | None:
    """The :class:`ParamSpec` of a node parameter or of a camera parameter ``NAME.<key>``
    (its ``name`` is then the key)."""
    if name in _SPECS:
        return _SPECS[name]
    parts = camera_key(name)
    return None if parts is None else _CAMERA_SPECS[parts[1]]


def validate_parameter(name: str, value: Any) -> Any:
    """Check one parameter value (a node parameter or ``NAME.<key>``); return it normalised.

    Raises:
        ConfigError: unknown parameter, wrong type, out of range, not one of the choices or a
            bad camera name or topic (the message starts with ``parameter <name>``).
    """
    if name == 'cameras':
        value = check_value(_SPECS[name], value)
        parse_cameras(value, reserved=_RESERVED)
        return value
    spec = parameter_spec(name)
    if spec is None:
        raise ConfigError(f'parameter {name}: {_unknown_text([name], [])}')
    value = check_value(spec, value, name)
    parts = camera_key(name)
    if parts is not None:
        camera, key = parts
        check_camera_name(camera, name, _RESERVED)
        if key == 'topic':
            parse_cameras([camera], {name: value})
    return value


def override_warning(names: Iterable[str], cameras: Iterable[str] = ()) -> str:
    """The warning for parameter overrides (a params file, ``-p``) that match no node or
    camera parameter, which rclpy ignores silently; ``''`` when every name is known.
    ``qos_overrides.*`` are checked once the publishers and subscriptions exist
    (:func:`darknet53_ros.ros.qos.unmatched_qos_overrides`)."""
    cameras = list(cameras)
    unknown = sorted(n for n in names if n not in _SPECS and not _is_camera_param(n, cameras)
                     and not _ros_own(n))
    if not unknown:
        return ''
    return ('ignored parameter override(s) matching no parameter of this node: '
            + _unknown_text(unknown, cameras))


# -- params YAML files -------------------------------------------------------------------------
def load_params_file(path: str | os.PathLike[str], node_name: str | None = None
                     ) -> dict[str, Any]:
    """Read a ROS 2 params YAML file (``/**: ros__parameters: ...``) into a flat dict.

    Sections ``/**`` and ``*`` apply to every node; others only when their name (last path
    component, with or without namespace) equals ``node_name`` or ``node_name`` is None.
    Nested mappings are flattened with dots (``a: {b: 1}`` -> ``a.b``), as ROS does.

    Raises:
        ConfigError: unreadable file or not a params file (naming the file).
    """
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
