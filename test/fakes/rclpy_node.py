"""A fake rclpy node and the few ROS message/QoS modules ``darknet53_ros.ros.ports`` imports, so
the ROS glue's parameter, QoS and topic logic runs without ROS.

The node follows rclpy (Humble) where the glue depends on it: a declared parameter takes its
override (``-p``, params file) and is checked against the descriptor's type; declaring and
setting call the on-set callbacks (newest first) before storing; read-only parameters are
refused by ``set_parameters``; ``qos_overriding_options`` declares read-only
``qos_overrides.<resolved topic>.<entity>.<policy>`` parameters and applies their overrides
(an unknown value raises ``RuntimeError``, as rclpy); ``resolve_topic_name`` applies remap rules
to the expanded name. The real-ROS tests (test_ros_conventions.py) check the same on rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import enum
import types
from typing import Any

# -- rcl_interfaces.msg ------------------------------------------------------------------------


class ParameterType:
    PARAMETER_NOT_SET, PARAMETER_BOOL, PARAMETER_INTEGER, PARAMETER_DOUBLE = 0, 1, 2, 3
    PARAMETER_STRING, PARAMETER_STRING_ARRAY = 4, 9


@dataclass
class FloatingPointRange:
    from_value: float = 0.0
    to_value: float = 0.0
    step: float = 0.0


@dataclass
class IntegerRange:
    from_value: int = 0
    to_value: int = 0
    step: int = 0


@dataclass
class ParameterDescriptor:
    name: str = ''
    type: int = 0
    description: str = ''
    additional_constraints: str = ''
    read_only: bool = False
    floating_point_range: list = field(default_factory=list)
    integer_range: list = field(default_factory=list)


@dataclass
class SetParametersResult:
    successful: bool = False
    reason: str = ''


# -- rclpy.qos ---------------------------------------------------------------------------------


class HistoryPolicy(enum.Enum):
    KEEP_LAST = 1
    KEEP_ALL = 2


class ReliabilityPolicy(enum.Enum):
    RELIABLE = 1
    BEST_EFFORT = 2


class DurabilityPolicy(enum.Enum):
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


@dataclass
class QoSProfile:
    history: HistoryPolicy = HistoryPolicy.KEEP_LAST
    depth: int = 10
    reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE
    durability: DurabilityPolicy = DurabilityPolicy.VOLATILE


class QoSOverridingOptions:
    def __init__(self, policy_kinds):
        self.policy_kinds = tuple(policy_kinds)

    @classmethod
    def with_default_policies(cls):
        return cls(('history', 'depth', 'reliability'))


# -- the node ----------------------------------------------------------------------------------
_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_STRING_ARRAY}


@dataclass
class Parameter:
    name: str
    value: Any = None


class InvalidParameterTypeException(Exception):  # noqa: N818 - rclpy's name
    pass


class InvalidParameterValueException(Exception):  # noqa: N818 - rclpy's name
    pass


class Logger:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def _log(self, level, text):
        self.lines.append((level, text))

    def info(self, text):
        self._log('info', text)

    def warning(self, text):
        self._log('warning', text)

    def error(self, text):
        self._log('error', text)

    def texts(self, level):
        return [text for lvl, text in self.lines if lvl == level]


@dataclass
class Entity:
    kind: str
    msg_type: Any
    topic: str
    qos_profile: QoSProfile
    callback: Any = None
    published: list = field(default_factory=list)
    raw: bool = False

    def publish(self, msg):
        self.published.append(msg)

    def get_subscription_count(self):
        return 0


class _Clock:
    class _Now:
        nanoseconds = 1_700_000_000_000_000_000

    def now(self):
        return self._Now()


class FakeNode:
    """The parts of ``rclpy.node.Node`` the detector's glue uses (see the module doc)."""

    def __init__(self, name='darknet53_detector', namespace='/', overrides=None, remaps=None):
        self.name, self.namespace = name, namespace
        self._parameter_overrides = {k: Parameter(k, v) for k, v in (overrides or {}).items()}
        self.remaps = dict(remaps or {})
        self.params: dict[str, Any] = {}
        self.descriptors: dict[str, ParameterDescriptor] = {}
        self.callbacks: list = []
        self.entities: list[Entity] = []
        self.timers: list = []
        self.logger = Logger()

    # parameters
    def _check_type(self, name, value, descriptor):
        kind = _TYPES.get(type(value))
        if descriptor.type and kind != descriptor.type:
            raise InvalidParameterTypeException(f'{name}: wrong parameter type')

    def _run_callbacks(self, parameters):
        for callback in list(self.callbacks):
            result = callback(parameters)
            if not result.successful:
                return result
        return SetParametersResult(successful=True)

    def declare_parameter(self, name, value=None, descriptor=None):
        if name in self.params:
            raise ValueError(f'parameter {name} already declared')
        descriptor = descriptor or ParameterDescriptor(type=_TYPES.get(type(value), 0))
        if name in self._parameter_overrides:
            value = self._parameter_overrides[name].value
        self._check_type(name, value, descriptor)
        result = self._run_callbacks([Parameter(name, value)])
        if not result.successful:
            raise InvalidParameterValueException(f'{name}: {result.reason}')
        self.params[name], self.descriptors[name] = value, descriptor
        return Parameter(name, value)

    def has_parameter(self, name):
        return name in self.params

    def get_parameter(self, name):
        return Parameter(name, self.params[name])

    def describe_parameter(self, name):
        return self.descriptors[name]

    def get_parameters_by_prefix(self, prefix):
        prefix = f'{prefix}.' if prefix else ''
        return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}

    def add_on_set_parameters_callback(self, callback):
        self.callbacks.insert(0, callback)

    def set_parameters(self, parameters):
        results = []
        for parameter in parameters:
            if parameter.name not in self.params:
                raise KeyError(f'parameter {parameter.name} is not declared')
            descriptor = self.descriptors[parameter.name]
            if descriptor.read_only:
                results.append(SetParametersResult(False, 'parameter is read-only'))
                continue
            try:
                self._check_type(parameter.name, parameter.value, descriptor)
            except InvalidParameterTypeException as exc:
                results.append(SetParametersResult(False, str(exc)))
                continue
            result = self._run_callbacks([parameter])
            if result.successful:
                self.params[parameter.name] = parameter.value
            results.append(result)
        return results

    # names
    def get_name(self):
        return self.name

    def resolve_topic_name(self, topic):
        if topic.startswith('~/'):
            expanded = f'{self.namespace.rstrip("/")}/{self.name}/{topic[2:]}'
        elif topic.startswith('/'):
            expanded = topic
        else:
            expanded = f'{self.namespace.rstrip("/")}/{topic}'
        return self.remaps.get(expanded, expanded)

    # entities
    def _entity(self, kind, msg_type, topic, qos, callback, options):
        final = self.resolve_topic_name(topic)
        qos = QoSProfile(qos.history, qos.depth, qos.reliability, qos.durability)
        for policy in (options.policy_kinds if options is not None else ()):
            name = f'qos_overrides.{final}.{kind}.{policy}'
            current = getattr(qos, policy)
            default = current if policy == 'depth' else current.name.lower()
            if name not in self.params:
                self.declare_parameter(name, default, ParameterDescriptor(read_only=True))
            value = self.params[name]
            if policy == 'depth':
                qos.depth = value
            else:
                enum_class = type(current)
                try:
                    setattr(qos, policy, enum_class[str(value).upper()])
                except KeyError:
                    raise RuntimeError(f'Unexpected QoS override for policy `{policy}`: '
                                       f'`{value}`') from None
        entity = Entity(kind, msg_type, final, qos, callback)
        self.entities.append(entity)
        return entity

    def create_publisher(self, msg_type, topic, qos, *, qos_overriding_options=None):
        return self._entity('publisher', msg_type, topic, qos, None, qos_overriding_options)

    def create_subscription(self, msg_type, topic, callback, qos, *,
                            qos_overriding_options=None, raw=False):
        entity = self._entity('subscription', msg_type, topic, qos, callback,
                              qos_overriding_options)
        entity.raw = raw  # rclpy hands a raw subscription's callback the CDR bytes
        return entity

    def destroy_publisher(self, entity):
        self.entities.remove(entity)

    def destroy_subscription(self, entity):
        self.entities.remove(entity)

    def create_timer(self, period, callback):
        timer = (period, callback)
        self.timers.append(timer)
        return timer

    def destroy_timer(self, timer):
        self.timers.remove(timer)

    def get_clock(self):
        return _Clock()

    def get_logger(self):
        return self.logger

    def topics(self, kind):
        return {e.topic: e for e in self.entities if e.kind == kind}


def fake_ros_modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries for ``rcl_interfaces.msg``, ``rclpy.qos``,
    ``rclpy.qos_overriding_options`` and ``diagnostic_msgs.msg``."""
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    rcl_msg = module('rcl_interfaces.msg', ParameterDescriptor=ParameterDescriptor,
                     ParameterType=ParameterType, FloatingPointRange=FloatingPointRange,
                     IntegerRange=IntegerRange, SetParametersResult=SetParametersResult)
    qos = module('rclpy.qos', QoSProfile=QoSProfile, HistoryPolicy=HistoryPolicy,
                 ReliabilityPolicy=ReliabilityPolicy, DurabilityPolicy=DurabilityPolicy)
    options = module('rclpy.qos_overriding_options', QoSOverridingOptions=QoSOverridingOptions)
    rclpy = module('rclpy', qos=qos, qos_overriding_options=options)
    rclpy.__path__ = []
    rcl = module('rcl_interfaces', msg=rcl_msg)
    rcl.__path__ = []
    diag_msg = module('diagnostic_msgs.msg', DiagnosticArray=type('DiagnosticArray', (), {}))
    diag = module('diagnostic_msgs', msg=diag_msg)
    diag.__path__ = []
    return {'rclpy': rclpy, 'rclpy.qos': qos, 'rclpy.qos_overriding_options': options,
            'rcl_interfaces': rcl, 'rcl_interfaces.msg': rcl_msg,
            'diagnostic_msgs': diag, 'diagnostic_msgs.msg': diag_msg}
