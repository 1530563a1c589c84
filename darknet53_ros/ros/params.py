"""The detector node's parameters: declared once, as the fields of :class:`NodeParams`.

Each field of :class:`NodeParams` is declared with :func:`param`, which records the ROS
parameter's default, description, runtime-changeability, range or choices and, for detection
thresholds, the :class:`~darknet53_ros.inference.detector.DetectorConfig` field it sets. Everything
else is derived from those fields:

- :data:`PARAMETERS`: one :class:`ParamSpec` per ROS parameter (what ``node.py`` declares, what
  ``replay`` and the params YAML files in ``config/`` accept; tested);
- :func:`validate_parameter` and :meth:`NodeParams.from_dict`: validation, errors are
  :class:`~darknet53_ros.errors.ConfigError` naming the parameter;
- :data:`RUNTIME_PARAMETERS` (changeable while the node runs) and :data:`DETECTOR_FIELDS`
  (parameter -> ``DetectorConfig`` field).

:func:`load_params_file` reads a ROS 2 params YAML file (``/**: ros__parameters: ...``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
import difflib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.backends.cuda_runtime import RUNTIMES as CUDA_RUNTIMES
from darknet53_ros.inference.backends.registry import backend_choices
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS
from darknet53_ros.ros.cameras import CameraSpec, parse_cameras

__all__ = [
    'DETECTOR_FIELDS',
    'NODE_NAME',
    'PACKAGE',
    'PARAMETERS',
    'PARAM_TYPES',
    'RUNTIME_PARAMETERS',
    'NodeParams',
    'ParamSpec',
    'load_params_file',
    'override_warning',
    'param',
    'validate_parameter',
]

PACKAGE = 'darknet53_ros'
NODE_NAME = 'darknet53_detector'

PARAM_TYPES = ('string', 'bool', 'integer', 'double', 'string_array')
# ROS parameter type of a NodeParams field, by its annotation (``from __future__ import
# annotations`` keeps annotations as source text).
_ANNOTATION_TYPES = {'str': 'string', 'bool': 'bool', 'int': 'integer', 'float': 'double'}
_SPEC_KEY = 'darknet53_ros.param'


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter of the node (derived from a :class:`NodeParams` field).

    Attributes:
        name: parameter name.
        type: one of ``string``, ``bool``, ``integer``, ``double``, ``string_array``.
        default: default value (the ROS value).
        description: text for ``ros2 param describe``.
        read_only: a change needs a node restart (declared read-only).
        minimum, maximum: inclusive numeric range (integer/double).
        choices: allowed string values.
        detector_field: the ``DetectorConfig`` field this parameter sets, if any.
        non_empty: an empty (whitespace-only) string is rejected by
            :meth:`NodeParams.from_dict`.
    """

    name: str
    type: str
    default: Any
    description: str
    read_only: bool = True
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    detector_field: str | None = None
    non_empty: bool = False

    @property
    def constraints(self) -> str:
        """Human-readable constraint text (ParameterDescriptor.additional_constraints)."""
        if self.choices:
            return 'one of: ' + ', '.join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f'in [{self.minimum:g}, {self.maximum:g}]'
        return ''

    @property
    def default_text(self) -> str:
        """The default as written in YAML and the README (``true``, ``''``, ``['camera']``)."""
        if isinstance(self.default, bool):
            return 'true' if self.default else 'false'
        if self.default == '':
            return "''"
        return str(self.default)


def param(default: Any, description: str, *, runtime: bool = False,
          minimum: float | None = None, maximum: float | None = None,
          choices: tuple[str, ...] | None = None, detector_field: str | None = None,
          non_empty: bool = False, ros_type: str = '',
          convert: Callable[[Any], Any] | None = None) -> Any:
    """Declare one node parameter as a :class:`NodeParams` field.

    Args:
        default: the ROS default value.
        description: ``ros2 param describe`` text.
        runtime: changeable while the node runs (else read-only).
        minimum, maximum: inclusive numeric range.
        choices: allowed string values.
        detector_field: the ``DetectorConfig`` field the parameter sets.
        non_empty: reject empty strings.
        ros_type: the ROS type when the field's annotation does not tell it.
        convert: turns the ROS value into the field's value (the field default is
            ``convert(default)``).
    """
    spec = ParamSpec('', ros_type, default, description, not runtime, minimum, maximum,
                     choices, detector_field, non_empty)
    metadata = {_SPEC_KEY: spec}
    if convert is not None:
        return field(default_factory=lambda: convert(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
        "Cameras, one string each: 'NAME[:TOPIC[:TRANSPORT]]'. NAME prefixes the "
        'output topics (NAME/detections); TOPIC defaults to NAME/image_raw (relative '
        "names follow the node namespace); TRANSPORT is 'raw' (sensor_msgs/Image) or "
        "'compressed' (sensor_msgs/CompressedImage on TOPIC/compressed), default raw "
        'unless TOPIC ends with /compressed.', ros_type='string_array', convert=parse_cameras)
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
    qos_reliability: str = param(
        'best_effort',
        'Reliability of the image subscriptions (keep last 1): best_effort (sensor '
        'data, matches any publisher) or reliable.', choices=('best_effort', 'reliable'))
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
        'ONNX Runtime threads per inference; 0: auto, half the CPU cores (at least 1, at '
        'most 4), leaving the rest of a shared robot CPU to other nodes. Ignored by TensorRT.',
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
        for spec in PARAMETERS:
            if spec.non_empty and not checked[spec.name].strip():
                raise ConfigError(f'parameter {spec.name}: must not be empty')
        return cls(**checked)

    def as_dict(self) -> dict[str, Any]:
        """Parameter name -> ROS value (cameras as their strings)."""
        out = {spec.name: getattr(self, spec.name) for spec in PARAMETERS}
        out['cameras'] = [c.entry() for c in self.cameras]
        return out

    def detector_options(self) -> dict[str, Any]:
        """``DetectorConfig`` field -> value, for the parameters that set one."""
        return {target: getattr(self, name) for name, target in DETECTOR_FIELDS.items()}


def _spec_of(item: Any) -> ParamSpec:
    spec: ParamSpec = item.metadata[_SPEC_KEY]
    return replace(spec, name=item.name, type=spec.type or _ANNOTATION_TYPES[item.type])


PARAMETERS: tuple[ParamSpec, ...] = tuple(_spec_of(item) for item in fields(NodeParams))
"""The node's parameters, in declaration order (derived from :class:`NodeParams`)."""

_SPECS = {spec.name: spec for spec in PARAMETERS}

RUNTIME_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if not spec.read_only)
"""Parameters that can be changed while the node runs (the others are read-only)."""

DETECTOR_FIELDS: dict[str, str] = {spec.name: spec.detector_field for spec in PARAMETERS
                                   if spec.detector_field is not None}
"""Parameter name -> the ``DetectorConfig`` field it sets."""


def _type_ok(kind: str, value: Any) -> bool:
    if kind == 'bool':
        return isinstance(value, (bool, np.bool_))
    if kind == 'integer':
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if kind == 'double':
        return isinstance(value, (int, float, np.integer, np.floating)) \
            and not isinstance(value, (bool, np.bool_))
    if kind == 'string':
        return isinstance(value, str)
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


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


# Parameters rclpy itself declares or reads; overrides of them are not misspellings.
_ROS_OWN = ('use_sim_time', 'start_type_description_service', 'qos_overrides.')


def override_warning(names: Iterable[str]) -> str:
    """The warning for parameter overrides (a params file, ``-p``) that match no node
    parameter, which rclpy ignores silently; ``''`` when every name is known."""
    unknown = sorted(n for n in names if n not in _SPECS and not n.startswith(_ROS_OWN))
    if not unknown:
        return ''
    items = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(_SPECS), n=1)
        items.append(f'{name} (did you mean {close[0]}?)' if close else name)
    return (f'ignored parameter override(s) matching no parameter of this node: '
            f'{", ".join(items)}')


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
