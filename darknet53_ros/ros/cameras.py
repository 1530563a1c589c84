"""Cameras of the detector node: one ``'NAME[:TOPIC[:TRANSPORT]]'`` string each.

ROS parameters cannot be nested dicts, so the ``cameras`` parameter is a list of strings;
:func:`parse_cameras` turns it into :class:`CameraSpec` objects (input topic, transport and
output topics of each camera).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
import re

from darknet53_ros.errors import ConfigError

__all__ = ['TRANSPORTS', 'CameraSpec', 'parse_camera', 'parse_cameras']

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
