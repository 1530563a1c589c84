"""Typed parameter declarations: :class:`ParamSpec`, the :func:`param` field helper, checks.

The node's parameters (:mod:`darknet53_ros.ros.params`) and each camera's parameters
(:mod:`darknet53_ros.ros.cameras`) are dataclass fields declared with :func:`param`; this
module turns those fields into :class:`ParamSpec` objects (:func:`specs_of`) and checks values
against them (:func:`check_value`). Plain Python, no ROS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
import math
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError

__all__ = ['PARAM_TYPES', 'ParamSpec', 'check_value', 'param', 'specs_of']

PARAM_TYPES = ('string', 'bool', 'integer', 'double', 'string_array')
# ROS parameter type of a field, by its annotation (``from __future__ import annotations``
# keeps annotations as source text).
_ANNOTATION_TYPES = {'str': 'string', 'bool': 'bool', 'int': 'integer', 'float': 'double'}
_SPEC_KEY = 'darknet53_ros.param'

NAME_PLACEHOLDER = '{name}'
"""In a per-camera default, replaced by the camera name (``{name}/image_raw``)."""


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter (derived from a dataclass field declared with :func:`param`).

    Attributes:
        name: parameter name (for a camera parameter: the key after ``NAME.``).
        type: one of :data:`PARAM_TYPES`.
        default: default value (the ROS value); a per-camera string default may contain
            :data:`NAME_PLACEHOLDER`.
        description: text for ``ros2 param describe``.
        read_only: applied at configure only (a change needs a lifecycle ``cleanup`` and
            ``configure``, or a restart of the plain node); else changeable at runtime.
        minimum, maximum: inclusive numeric range (integer/double).
        choices: allowed string values.
        detector_field: the ``DetectorConfig`` field this parameter sets, if any.
        non_empty: an empty (whitespace-only) string is rejected.
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
        """The default as written in YAML and the README (``true``, ``''``, ``NAME/image_raw``)."""
        if isinstance(self.default, bool):
            return 'true' if self.default else 'false'
        if self.default == '':
            return "''"
        return str(self.default).replace(NAME_PLACEHOLDER, 'NAME')

    def default_for(self, camera: str) -> Any:
        """The default of this (per-camera) parameter for the camera ``camera``."""
        if isinstance(self.default, str):
            return self.default.replace(NAME_PLACEHOLDER, camera)
        return list(self.default) if isinstance(self.default, (list, tuple)) else self.default


def param(default: Any, description: str, *, runtime: bool = False,
          minimum: float | None = None, maximum: float | None = None,
          choices: tuple[str, ...] | None = None, detector_field: str | None = None,
          non_empty: bool = False, ros_type: str = '',
          convert: Callable[[Any], Any] | None = None) -> Any:
    """Declare one parameter as a dataclass field.

    Args:
        default: the ROS default value.
        description: ``ros2 param describe`` text.
        runtime: changeable while the node runs (else applied at configure).
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


def specs_of(cls: type) -> tuple[ParamSpec, ...]:
    """The :class:`ParamSpec` of every field of the dataclass ``cls`` declared with
    :func:`param`, in declaration order."""
    out = []
    for item in fields(cls):
        spec = item.metadata.get(_SPEC_KEY)
        if spec is not None:
            out.append(replace(spec, name=item.name,
                               type=spec.type or _ANNOTATION_TYPES[str(item.type)]))
    return tuple(out)


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


def check_value(spec: ParamSpec, value: Any, name: str | None = None) -> Any:
    """Check ``value`` against ``spec``; return it normalised (float, int, bool, list).

    Raises:
        ConfigError: wrong type, not finite, out of range or not one of the choices; the
            message starts with ``parameter <name>`` (``name`` defaults to ``spec.name``).
    """
    name = name or spec.name
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
    if spec.non_empty and isinstance(value, str) and not value.strip():
        raise ConfigError(f'parameter {name}: must not be empty')
    return value
