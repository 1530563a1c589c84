"""Cameras of the detector node, in the ROS 2 convention: a list of names plus per-name parameters.

``cameras: [front, left]`` names the cameras; each name ``NAME`` has the parameters of
:data:`CAMERA_PARAMETERS` as ``NAME.topic``, ``NAME.transport``, ``NAME.reliability``,
``NAME.frame_id``, ``NAME.conf_threshold`` and ``NAME.tracking`` (as Nav2's
``observation_sources: scan`` + ``scan.topic``), each defaulting from the name, so
``cameras:="[front, left]"`` alone subscribes ``front/image_raw`` and ``left/image_raw``.
In a params file::

    cameras: [front, left]
    front: {topic: /front/image_raw}
    left: {topic: /left/image_raw, transport: compressed, conf_threshold: 0.4}

:func:`parse_cameras` validates names and values into :class:`CameraSpec` objects; every error
is one line naming the camera and key (``parameter left.transport: 'zip' is not one of raw,
compressed``). The retired ``'NAME:TOPIC:TRANSPORT'`` strings are refused with the equivalent
parameters.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
import re
from typing import Any

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.schema import NAME_PLACEHOLDER, ParamSpec, check_value, param, specs_of

__all__ = ['CAMERA_PARAMETERS', 'INHERIT', 'RELIABILITIES', 'TRANSPORTS', 'CameraSpec',
           'applies_to', 'camera_key', 'check_camera_name', 'parse_cameras', 'resolve_topics']

_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_TOPIC_RE = re.compile(r'^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')
TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable')
INHERIT = -1.0
"""``NAME.conf_threshold`` default: use the node's ``conf_threshold``."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera: its name, input and the per-camera settings (fields = ``NAME.<key>``).

    Attributes:
        name: a ROS name token (``front``, ``arm_wrist``): parameter prefix, output namespace
            and diagnostics name.
        topic: the base image topic, as image_transport names it (never ``.../compressed``).
        transport: ``raw`` (``sensor_msgs/Image`` on ``topic``) or ``compressed``
            (``sensor_msgs/CompressedImage`` on ``<resolved topic>/compressed``).
        reliability: QoS reliability of the subscription.
        frame_id: replaces ``header.frame_id`` of the outputs (``''``: keep the image's).
        conf_threshold: this camera's threshold; negative: the node's ``conf_threshold``.
        tracking: track objects of this camera (read by the tracker).
        prefix: output namespace relative to the node (``None``: the name; ``''``: none).
        resolved_topic: ``topic`` expanded and remapped by the node (``''`` until then).
    """

    name: str
    topic: str = param(
        f'{NAME_PLACEHOLDER}/image_raw',
        'Base image topic (relative names follow the node namespace). With transport '
        'compressed the node subscribes <topic>/compressed after expanding and remapping '
        'topic, as image_transport names transports.', non_empty=True)
    transport: str = param(
        'raw', 'raw: sensor_msgs/Image on topic; compressed: sensor_msgs/CompressedImage '
        '(JPEG/PNG) on <topic>/compressed.', choices=TRANSPORTS)
    reliability: str = param(
        'best_effort', 'Reliability of the image subscription (keep last 1): best_effort '
        '(sensor data; matches reliable and best-effort publishers) or reliable. A '
        'qos_overrides parameter of the topic takes precedence.', choices=RELIABILITIES)
    frame_id: str = param(
        '', "Replaces header.frame_id of this camera's detections, label info and annotated "
        "images; '' keeps the image's (for drivers with a wrong or empty frame_id).")
    conf_threshold: float = param(
        INHERIT, "This camera's score threshold, in [0, 1]; -1: the node's conf_threshold. "
        'Changeable at runtime.', runtime=True, minimum=-1.0, maximum=1.0)
    tracking: bool = param(
        False, "Track this camera's objects across frames (Detection2D.id); off by default.")
    prefix: str | None = None
    resolved_topic: str = ''

    def __post_init__(self) -> None:
        if NAME_PLACEHOLDER in self.topic:
            object.__setattr__(self, 'topic', self.topic.replace(NAME_PLACEHOLDER, self.name))

    @property
    def compressed(self) -> bool:
        """``sensor_msgs/CompressedImage`` input (else ``sensor_msgs/Image``)."""
        return self.transport == 'compressed'

    @property
    def input_topic(self) -> str:
        """The subscribed topic: the (resolved) base topic, plus ``/compressed`` for the
        compressed transport."""
        base = self.resolved_topic or self.topic
        return f'{base}/compressed' if self.compressed else base

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
    def label_info_topic(self) -> str:
        """Relative topic of this camera's ``vision_msgs/LabelInfo`` (beside its detections)."""
        return f'{self.output_prefix}label_info'

    def threshold(self, node_threshold: float) -> float:
        """This camera's effective score threshold."""
        return node_threshold if self.conf_threshold < 0 else self.conf_threshold

    def parameters(self) -> dict[str, Any]:
        """``{'NAME.key': value}`` of this camera's parameters."""
        return {f'{self.name}.{spec.name}': getattr(self, spec.name)
                for spec in CAMERA_PARAMETERS}


CAMERA_PARAMETERS: tuple[ParamSpec, ...] = specs_of(CameraSpec)
"""The per-camera parameters (names are the keys after ``NAME.``)."""
_CAMERA_SPECS = {spec.name: spec for spec in CAMERA_PARAMETERS}


def camera_key(name: str) -> tuple[str, str] | None:
    """``'front.topic'`` -> ``('front', 'topic')``; None when ``name`` is no camera parameter."""
    camera, dot, key = name.rpartition('.')
    if not dot or key not in _CAMERA_SPECS or not _NAME_RE.match(camera):
        return None
    return camera, key


def applies_to(name: str, cameras: Collection[str]) -> bool:
    """Whether the parameter ``name`` concerns a node serving ``cameras`` (True unless it is
    another camera's ``NAME.<key>``)."""
    parts = camera_key(name)
    return parts is None or parts[0] in cameras


def _migration(entry: str) -> str:
    """The parameters equivalent to an old ``'NAME:TOPIC:TRANSPORT'`` string."""
    parts = [p.strip() for p in entry.split(':')]
    name = parts[0] or 'NAME'
    settings = []
    if len(parts) > 1 and parts[1]:
        topic = parts[1]
        transport = parts[2] if len(parts) > 2 and parts[2] else ''
        if topic.endswith('/compressed'):
            topic, transport = topic[:-len('/compressed')], 'compressed'
        settings.append(f'{name}.topic: {topic}')
        if transport:
            settings.append(f'{name}.transport: {transport}')
    return (f"{entry!r} is the retired 'NAME:TOPIC:TRANSPORT' form: list names "
            f'(cameras: [{name}])' + (f' and set {", ".join(settings)}' if settings else ''))


def check_camera_name(name: Any, where: str = 'cameras',
                      reserved: Collection[str] = ()) -> str:
    """Check one camera name.

    Raises:
        ConfigError: not a string, the retired ``'NAME:TOPIC'`` form, not a relative ROS
            name, or a name of a node parameter (``reserved``).
    """
    if not isinstance(name, str):
        raise ConfigError(f'parameter {where}: expected a camera name, got {name!r}')
    if ':' in name:
        raise ConfigError(f'parameter {where}: {_migration(name)}')
    if not _NAME_RE.match(name) or '__' in name:
        raise ConfigError(f'parameter {where}: camera name {name!r} is not a ROS name token '
                          '(letters, digits and _, not starting with a digit; it prefixes the '
                          'parameters NAME.topic ..., which -p cannot set for NAME with /)')
    if name in reserved:
        raise ConfigError(f'parameter {where}: camera name {name!r} is a node parameter; '
                          'choose another name')
    return name


def _check_topic(camera: str, topic: str) -> None:
    where = f'parameter {camera}.topic'
    if not _TOPIC_RE.match(topic) or '__' in topic:
        raise ConfigError(f'{where}: {topic!r} is not a valid ROS topic name')
    if topic.endswith('/compressed'):
        base = topic[:-len('/compressed')]
        raise ConfigError(f'{where}: {topic!r} is a transport topic: give the base topic '
                          f'({camera}.topic: {base}) and {camera}.transport: compressed, as '
                          'image_transport names it')


def _camera(name: str, values: Mapping[str, Any]) -> CameraSpec:
    checked = {}
    for spec in CAMERA_PARAMETERS:
        key = f'{name}.{spec.name}'
        checked[spec.name] = check_value(spec, values.get(key, spec.default_for(name)), key)
    checked['topic'] = checked['topic'].strip()
    _check_topic(name, checked['topic'])
    if INHERIT < checked['conf_threshold'] < 0:
        raise ConfigError(f'parameter {name}.conf_threshold: {checked["conf_threshold"]!r} '
                          "is neither in [0, 1] nor -1.0 (the node's conf_threshold)")
    return CameraSpec(name, **checked)


def parse_cameras(names: Iterable[str], values: Mapping[str, Any] | None = None,
                  prefix_camera_name: bool = True, param: str = 'cameras',
                  reserved: Collection[str] = ()) -> tuple[CameraSpec, ...]:
    """The cameras ``names`` with their ``NAME.<key>`` parameters from ``values`` (missing
    ones take the defaults derived from the name).

    Raises:
        ConfigError: naming the parameter (``cameras``, ``front.transport`` ...): not a list,
            empty, a bad name or value, duplicate names or input topics, or several cameras
            with ``prefix_camera_name`` false (their outputs would collide).
    """
    if isinstance(names, str):
        raise ConfigError(f'parameter {param}: expected a list of camera names, got the string '
                          f'{names!r} (write [{names}])')
    items = list(names)
    if not items:
        raise ConfigError(f'parameter {param}: at least one camera is required')
    for item in items:
        check_camera_name(item, param, reserved)
    dups = sorted({n for n in items if items.count(n) > 1})
    if dups:
        raise ConfigError(f'parameter {param}: duplicate camera name(s) {", ".join(dups)}')
    cameras = [_camera(name, values or {}) for name in items]
    seen: dict[str, str] = {}
    for camera in cameras:
        other = seen.setdefault(camera.input_topic, camera.name)
        if other != camera.name:
            raise ConfigError(f'parameter {camera.name}.topic: cameras {other} and '
                              f'{camera.name} both subscribe {camera.input_topic}')
    if not prefix_camera_name:
        if len(cameras) > 1:
            raise ConfigError('parameter prefix_camera_name: false needs exactly one camera '
                              f'({len(cameras)} in {param}), else outputs would collide')
        cameras = [replace(c, prefix='') for c in cameras]
    return tuple(cameras)


def resolve_topics(cameras: Iterable[CameraSpec], resolve: Callable[[str], str]
                   ) -> tuple[CameraSpec, ...]:
    """The cameras with :attr:`CameraSpec.resolved_topic` set by ``resolve`` (the node's
    expansion and remapping of the base topic, so a remap of ``front/image_raw`` carries over to
    ``.../compressed`` as image_transport resolves it).

    Raises:
        ConfigError: ``resolve`` failed (naming the camera's topic parameter).
    """
    out = []
    for camera in cameras:
        try:
            out.append(replace(camera, resolved_topic=resolve(camera.topic)))
        except Exception as exc:
            raise ConfigError(f'parameter {camera.name}.topic: cannot resolve '
                              f'{camera.topic!r}: {exc}') from None
    return tuple(out)
