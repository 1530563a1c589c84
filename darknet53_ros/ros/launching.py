"""Launch actions of one detector node, plain or managed: used by the package's launch files.

:func:`detector_actions` returns a ``launch_ros`` ``Node`` (``lifecycle=False``) or a
``LifecycleNode`` running ``detector_node --lifecycle``; with ``autostart`` the launch itself
drives the managed node to active (``configure`` at once, ``activate`` the first time it
reaches inactive), otherwise a lifecycle manager (Nav2's ``lifecycle_manager``, ``ros2 lifecycle
set``) does. :func:`launch_cameras` and :func:`camera_node_parameters` turn the launch
arguments and params files into each node's parameters, :func:`rviz_actions` starts RViz2 on a
configuration generated for the launched cameras. ``launch``/``launch_ros`` are imported where
used, so this module imports without ROS (the launch-file tests read it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.cameras import CAMERA_PARAMETERS, applies_to, camera_key
from darknet53_ros.ros.params import PACKAGE, NodeParams
from darknet53_ros.ros.qos import QOS_OVERRIDES
from darknet53_ros.ros.rviz_config import write_rviz_config

__all__ = ['EXECUTABLE', 'TRUE', 'camera_node_parameters', 'detector_actions', 'is_true',
           'join_names', 'launch_cameras', 'node_arguments', 'node_launch_arguments',
           'node_parameters', 'rviz_actions']

EXECUTABLE = 'detector_node'
"""The node's executable (``--lifecycle`` selects the managed node)."""

TRUE = ('true', '1', 'yes', 'on')
"""Launch-argument spellings of true."""


def is_true(value: str) -> bool:
    """A launch argument's boolean value."""
    return value.strip().lower() in TRUE


#: Launch arguments every launch file of the package declares: ``(name, default, description)``.
NODE_LAUNCH_ARGUMENTS = (
    ('log_level', 'info', 'Node log level: debug, info, warn, error or fatal.'),
    ('lifecycle', 'false', 'true: run the managed (lifecycle) node: it starts unconfigured and '
     'loads the model on configure (see autostart); false: a plain node, active at once.'),
    ('autostart', 'true', 'With lifecycle:=true: true: the launch configures and activates the '
     'node; false: leave the transitions to a lifecycle manager.'),
    ('use_sim_time', 'false', 'true: use the /clock topic (simulation, ros2 bag play --clock) '
     'for latency, frame age and rates.'),
)


def node_launch_arguments() -> list[Any]:
    """``DeclareLaunchArgument`` actions of :data:`NODE_LAUNCH_ARGUMENTS`."""
    from launch.actions import DeclareLaunchArgument

    return [DeclareLaunchArgument(name, default_value=default, description=description)
            for name, default, description in NODE_LAUNCH_ARGUMENTS]


def node_arguments(lifecycle: bool, log_level: str) -> list[str]:
    """The executable's command-line arguments."""
    return (['--lifecycle'] if lifecycle else []) + ['--ros-args', '--log-level', log_level]


def detector_actions(name: str, namespace: str, parameters: Sequence[Any],
                     lifecycle: bool = False, autostart: bool = True,
                     log_level: str = 'info',
                     node_options: Mapping[str, Any] | None = None) -> list[Any]:
    """The launch actions of one detector node.

    Args:
        name: node name.
        namespace: node namespace ('' for the root).
        parameters: params files and override dicts, in order.
        lifecycle: start the managed node.
        autostart: with ``lifecycle``, configure and activate it from the launch.
        log_level: the node's log level.
        node_options: more keyword arguments of the ``Node`` action.

    Returns:
        The actions: the node, and with ``lifecycle`` and ``autostart`` the transition
        handler and the configure event.
    """
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    common = dict(package=PACKAGE, executable=EXECUTABLE, name=name, output='screen',
                  parameters=list(parameters), arguments=node_arguments(lifecycle, log_level),
                  **dict(node_options or {}))
    if not lifecycle:
        return [Node(namespace=namespace, **common)]
    node = LifecycleNode(namespace=namespace, **common)
    if not autostart:
        return [node]

    def change(transition: int) -> Any:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))

    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
        entities=[change(Transition.TRANSITION_ACTIVATE)], handle_once=True))
    return [node, activate, change(Transition.TRANSITION_CONFIGURE)]


def join_names(*parts: str) -> str:
    """``('robot', 'front')`` -> ``'/robot/front'`` (empty parts skipped; ``''`` for none)."""
    inner = '/'.join(p.strip('/') for p in parts if p and p.strip('/'))
    return f'/{inner}' if inner else ''


def launch_cameras(values: Mapping[str, Any], cameras_arg: str = '', source: str = 'launch'
                   ) -> list[str]:
    """The camera names of a launch: the ``cameras`` launch argument (``"[front, left]"`` or
    ``front``), else the ``cameras`` of the params files (``values``); validated with the
    files' ``NAME.<key>`` values.

    Raises:
        ConfigError: no cameras, or a bad name or camera parameter (one line naming it).
    """
    if cameras_arg.strip():
        try:
            names = yaml.safe_load(cameras_arg)
        except yaml.YAMLError as exc:
            raise ConfigError(f'launch argument cameras: {cameras_arg!r} is not a list '
                              f'({exc})') from None
        names = [names] if isinstance(names, str) else names
    elif 'cameras' in values:
        names = values['cameras']
    else:
        raise ConfigError(f'{source}: no cameras: give cameras:="[front, left]" or a cameras '
                          'list in the params files')
    if not isinstance(names, list):
        raise ConfigError(f'launch argument cameras: expected a list of names, got {names!r}')
    NodeParams.from_dict({**values, 'cameras': names}, source, ignore_unknown=True)
    return [str(n) for n in names]


def node_parameters(values: Mapping[str, Any], cameras: Sequence[str]) -> dict[str, Any]:
    """The parameters of one node serving ``cameras``: ``values`` (merged params files and
    launch overrides) without other cameras' ``NAME.<key>``, and ``cameras``."""
    out = {k: v for k, v in values.items() if applies_to(k, cameras)}
    out['cameras'] = list(cameras)
    return out


def camera_node_parameters(values: Mapping[str, Any], camera: str, namespace: str
                           ) -> dict[str, Any]:
    """The parameters of ``camera``'s own node (one node per camera, in the namespace
    ``<namespace>/<camera>``): the node parameters of ``values``, this camera's ``NAME.<key>``
    (a relative ``NAME.topic`` made absolute in ``namespace``, where it resolves for a node
    serving every camera), ``cameras: [camera]`` and ``prefix_camera_name: false``."""
    topic_key = f'{camera}.topic'
    out = {k: v for k, v in values.items() if camera_key(k) is None}
    for spec in CAMERA_PARAMETERS:
        key = f'{camera}.{spec.name}'
        out[key] = values.get(key, spec.default_for(camera))
    topic = str(out[topic_key])
    if not topic.startswith(('/', '~')):
        out[topic_key] = topic = join_names(namespace, topic)
    # QoS overrides of other cameras' topics would match nothing here (and be warned about).
    own = (topic, join_names(namespace, camera) + '/', '/diagnostics')
    out = {k: v for k, v in out.items() if not k.startswith(QOS_OVERRIDES)
           or k[len(QOS_OVERRIDES):].startswith(own)}
    out.update(cameras=[camera], prefix_camera_name=False)
    return out


def rviz_actions(cameras: Sequence[str], namespace: str, config: str = '') -> list[Any]:
    """RViz2 on ``config`` (default: a configuration generated for ``cameras`` in
    ``namespace``, written to a temporary file)."""
    from launch.actions import LogInfo
    from launch_ros.actions import Node

    path = config or str(write_rviz_config(cameras, namespace))
    return [LogInfo(msg=f'RViz2 configuration: {path}'),
            Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 arguments=['-d', path])]
