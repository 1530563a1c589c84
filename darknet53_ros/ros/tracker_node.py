"""``ros2 run darknet53_ros tracker_node``: track ids for any ``vision_msgs/Detection2DArray``.

For stacks that already have a detector (Isaac ROS, yolo_ros, this package's node without
``tracking``): subscribes each topic of ``topics`` and republishes every message on
``<topic>/<output_suffix>`` with ``Detection2D.id`` set to a track id (decimal string,
unique per topic for the node's lifetime; ``''`` for detections without a confirmed track),
everything else unchanged. Each topic is one camera with its own tracker; tracks age in the
messages' header-stamp time. rclpy glue only: the behaviour is
:class:`~darknet53_ros.ros.detection_tracks.ArrayTracker` (tested without ROS).

Parameters: ``topics`` (string array, default ``['detections']``), ``output_suffix``
(``tracked``), and the tracker settings ``high_score``, ``low_score``, ``new_score``,
``min_track_score``, ``max_lost_s``, ``class_aware``
(:class:`~darknet53_ros.tracking.tracker.TrackerConfig`).
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.detection_tracks import ArrayTracker
from darknet53_ros.ros.node import run_node
from darknet53_ros.tracking.tracker import TrackerConfig

__all__ = ['TRACKER_NODE_NAME', 'TrackerNode', 'main']

TRACKER_NODE_NAME = 'darknet53_tracker'
_DEFAULTS = TrackerConfig()
TRACKER_PARAMETERS: dict[str, Any] = {
    'high_score': _DEFAULTS.high_score, 'low_score': _DEFAULTS.low_score,
    'new_score': _DEFAULTS.new_score, 'min_track_score': _DEFAULTS.min_track_score,
    'max_lost_s': _DEFAULTS.max_lost_s, 'class_aware': _DEFAULTS.class_aware,
}
"""Tracker settings the node declares as parameters (defaults: :class:`TrackerConfig`'s)."""


class TrackerNode:
    """The rclpy node (:attr:`node`); see module docstring.

    Raises:
        ConfigError: bad parameters (the node is destroyed).
    """

    def __init__(self, node_name: str = TRACKER_NODE_NAME, **node_kwargs: Any) -> None:
        import rclpy
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection2DArray

        self.node: Any = rclpy.create_node(node_name, **node_kwargs)
        try:
            topics = list(self.node.declare_parameter('topics', ['detections']).value)
            suffix = str(self.node.declare_parameter('output_suffix', 'tracked').value)
            values = {name: self.node.declare_parameter(name, default).value
                      for name, default in TRACKER_PARAMETERS.items()}
            if not topics or not all(isinstance(t, str) and t for t in topics):
                raise ConfigError(f'parameter topics: expected topic names, got {topics!r}')
            if not suffix.strip('/'):
                raise ConfigError('parameter output_suffix: must not be empty')
            self.core = ArrayTracker(TrackerConfig.from_dict(values))
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE)
            self.publishers: dict[str, Any] = {}
            self.subscriptions: list[Any] = []
            for topic in topics:
                out = f'{topic.rstrip("/")}/{suffix.strip("/")}'
                self.publishers[topic] = self.node.create_publisher(Detection2DArray, out, qos)
                self.subscriptions.append(self.node.create_subscription(
                    Detection2DArray, topic, self._callback(topic), qos))
        except BaseException:
            self.destroy()
            raise

    def _callback(self, topic: str) -> Any:
        def receive(msg: Any) -> None:
            now = self.node.get_clock().now().nanoseconds
            try:
                self.core.process(topic, msg, now)
            except (ValueError, AttributeError, TypeError) as exc:
                self.node.get_logger().warning(f'{topic}: message skipped: {exc}',
                                               throttle_duration_sec=10.0)
                return
            self.publishers[topic].publish(msg)
        return receive

    def destroy(self) -> None:
        """Destroy the rclpy node (idempotent)."""
        node, self.node = self.node, None
        if node is not None:
            node.destroy_node()


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``tracker_node``; 0 after SIGINT/SIGTERM, 1 on a configuration error."""
    return run_node(TrackerNode, TRACKER_NODE_NAME, sys.argv if args is None else args)


if __name__ == '__main__':
    sys.exit(main())
