"""Launch actions of one detector node, plain or managed: used by the package's launch files.

:func:`detector_actions` returns a ``launch_ros`` ``Node`` (``lifecycle=False``) or a
``LifecycleNode`` running ``detector_node --lifecycle``; with ``autostart`` the launch itself
drives the managed node to active (``configure`` at once, ``activate`` the first time it
reaches inactive), otherwise a lifecycle manager (Nav2's ``lifecycle_manager``, ``ros2 lifecycle
set``) does. ``launch``/``launch_ros`` are imported where used, so this module imports
without ROS (the launch-file tests read it).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from darknet53_ros.ros.params import PACKAGE

__all__ = ['EXECUTABLE', 'TRUE', 'detector_actions', 'is_true', 'node_arguments',
           'node_launch_arguments']

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
