"""The ROS 2 detector node (``ros2 run darknet53_ros detector_node``): rclpy glue only.

All behaviour lives in :mod:`darknet53_ros.ros.node_core` (tested without ROS); this module
declares the parameters of :data:`~darknet53_ros.ros.params.PARAMETERS`, wires subscriptions,
publishers and timers to a :class:`~darknet53_ros.ros.node_core.NodeCore`, and shuts down cleanly.

Topics (relative names, so ``__ns:=`` / launch namespaces apply), per camera ``NAME`` of the
``cameras`` parameter:

- subscribes ``NAME.topic`` (``sensor_msgs/Image``), or with ``NAME.transport: compressed``
  ``<NAME.topic resolved>/compressed`` (``CompressedImage``), keep last 1,
  ``NAME.reliability`` (best effort by default: matches reliable and best-effort publishers);
- publishes ``NAME/detections`` (``vision_msgs/Detection2DArray``, one per processed image,
  also when empty), ``NAME/detections/image`` (annotated ``sensor_msgs/Image``, drawn only
  while it has subscribers and ``publish_annotated`` is true) and ``NAME/label_info``
  (``vision_msgs/LabelInfo``, transient local; when vision_msgs has it);
- ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, every ``diagnostics_period``).

Every publisher and subscription takes ``qos_overrides.<topic>.<entity>.<policy>`` parameters
(:mod:`darknet53_ros.ros.qos`).

Image callbacks only hand the message to the scheduler; the inference thread decodes (with the
package's own decoder, :func:`darknet53_ros.io.encodings.msg_to_bgr`), runs the shared engine on
a batch of cameras and publishes.

The transitions (configure, activate, deactivate, cleanup, shutdown) are
:class:`~darknet53_ros.ros.lifecycle.ManagedDetector`'s, over :class:`RosPorts`; this plain node
runs configure + activate at construction, ``detector_node --lifecycle`` exposes them as a
managed node (:mod:`darknet53_ros.ros.lifecycle_node`). :func:`main` shuts down cleanly on
SIGINT/SIGTERM (:mod:`darknet53_ros.ros.signals`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import sys
from typing import Any

from darknet53_ros.errors import Darknet53Error
from darknet53_ros.ros.lifecycle import ManagedDetector
from darknet53_ros.ros.lifecycle_node import LifecycleDetectorNode
from darknet53_ros.ros.node_core import NodeCore
from darknet53_ros.ros.params import NODE_NAME
from darknet53_ros.ros.ports import RosPorts, managed_detector, parameter_descriptor
from darknet53_ros.ros.signals import ShutdownSignals

__all__ = ['LIFECYCLE_FLAG', 'DetectorNode', 'main', 'parameter_descriptor',
           'spin_until_shutdown']

LIFECYCLE_FLAG = '--lifecycle'
"""``detector_node --lifecycle``: run the managed (lifecycle) node."""


class DetectorNode:
    """The detector as a plain rclpy node (:attr:`node`): configured and active at once.

    Args:
        node_name: ROS node name.
        share_dir: where relative model paths are looked up (default: the package share dir
            from ament, then the Python package).
        **node_kwargs: passed to ``rclpy.create_node`` (``namespace``, ``context``,
            ``parameter_overrides``, ``cli_args`` ...).

    Raises:
        ConfigError, ModelError, BackendError: bad parameters or model (the node is destroyed).
    """

    def __init__(self, node_name: str = NODE_NAME, share_dir: Any = True,
                 **node_kwargs: Any) -> None:
        """Create the node, load the model and start the inference thread."""
        import rclpy

        self.node: Any = rclpy.create_node(node_name, **node_kwargs)
        self.managed: ManagedDetector | None = None
        try:
            self.managed = managed_detector(RosPorts(self.node), share_dir)
            self.managed.configure()
            self.managed.activate()
        except BaseException:
            self.destroy()
            raise

    @property
    def core(self) -> NodeCore | None:
        """The node core (None once shut down)."""
        return None if self.managed is None else self.managed.core

    def destroy(self) -> None:
        """Stop the inference thread, close the backend, then destroy the rclpy node.

        The worker is joined before the backend is closed (no CUDA context released under a
        running inference) and before the publishers and the context go away. Idempotent.
        """
        managed, self.managed = self.managed, None
        try:
            if managed is not None:
                managed.shutdown()
        finally:
            node, self.node = self.node, None
            if node is not None:
                node.destroy_node()

    def destroy_node(self) -> None:
        """Alias of :meth:`destroy` (rclpy naming)."""
        self.destroy()


def spin_until_shutdown(node: Any, signals: ShutdownSignals, context: Any = None,
                        poll_s: float = 0.1) -> None:
    """Spin ``node`` until a shutdown signal (or the context shuts down).

    Polls with ``spin_once(poll_s)`` so the Python signal handler runs promptly.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        while not signals.requested and rclpy.ok(context=context):
            executor.spin_once(timeout_sec=poll_s)
    except ExternalShutdownException:
        pass
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def run_node(make: Callable[[], Any], name: str, argv: Sequence[str]) -> int:
    """Run the node ``make()`` builds (an object with ``.node`` and ``destroy()``) until
    SIGINT/SIGTERM or an external shutdown; returns the exit code: 0, or 1 after a
    configuration error (logged as FATAL under ``name``). Shared by every node executable."""
    import rclpy
    from rclpy.logging import get_logger
    from rclpy.signals import SignalHandlerOptions

    signals = ShutdownSignals().install()
    rclpy.init(args=list(argv), signal_handler_options=SignalHandlerOptions.NO)
    node: Any = None
    code = 0
    try:
        node = make()
        spin_until_shutdown(node.node, signals)
    except Darknet53Error as exc:
        get_logger(name).fatal(str(exc))
        code = 1
    finally:
        signals.ignore()  # from here to the exit, a late (forwarded) SIGINT changes nothing
        if node is not None:
            node.destroy()
        rclpy.try_shutdown()
    return code


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``detector_node`` (``--lifecycle``: the managed node); returns the exit
    code: 0 after SIGINT/SIGTERM or an external shutdown, 1 on a configuration error."""
    argv = list(sys.argv if args is None else args)
    make = LifecycleDetectorNode if LIFECYCLE_FLAG in argv else DetectorNode
    return run_node(make, NODE_NAME, [a for a in argv if a != LIFECYCLE_FLAG])


if __name__ == '__main__':
    sys.exit(main())
