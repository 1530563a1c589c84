"""The detector as a ROS 2 managed (lifecycle) node: ``detector_node --lifecycle``.

rclpy glue only: each transition callback calls the matching method of
:class:`~darknet53_ros.ros.lifecycle.ManagedDetector` (tested without ROS) over the same
:class:`~darknet53_ros.ros.node.RosPorts` as the plain node, so topics, parameters and
diagnostics are identical. The node starts unconfigured; ``ros2 lifecycle set`` (or a
lifecycle manager, or the launch files' ``autostart:=true``) drives it:

- ``configure``: read and validate the parameters, load the model / TensorRT engine, create
  publishers;
- ``activate``: start the inference thread, subscribe to the cameras, form the bond to a
  lifecycle manager (:mod:`darknet53_ros.ros.bond`, where bondpy is installed);
- ``deactivate``: break the bond, unsubscribe, stop the inference thread (engine kept, GPU
  idle);
- ``cleanup``: release the engine (and its CUDA context), drop publishers;
- ``shutdown`` (from any state, also on SIGINT/SIGTERM): all of the above as needed.

Parameters applied at configure (``model``, ``cameras``, ``NAME.topic`` ...) are writable while
the node is unconfigured (validated when set) and refused while it is configured, so a lifecycle
manager's reset, ``ros2 param set`` and bring-up reload them.

A transition that fails on bad parameters or a bad model returns FAILURE with the reason
logged, leaving the node in its previous state; an unexpected error returns ERROR, and error
processing releases everything (back to unconfigured).
"""
from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

from darknet53_ros.errors import Darknet53Error
from darknet53_ros.ros.bond import ManagerBond
from darknet53_ros.ros.lifecycle import FINALIZED, ManagedDetector
from darknet53_ros.ros.node_core import NodeCore
from darknet53_ros.ros.params import NODE_NAME
from darknet53_ros.ros.ports import RosPorts, managed_detector

__all__ = ['LifecycleDetectorNode']


@functools.lru_cache(maxsize=None)
def _node_class() -> Any:
    """The rclpy lifecycle node class whose transitions call ``handlers[name]()`` (built on
    first use, so this module imports without ROS)."""
    from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

    class _Node(LifecycleNode):
        """An rclpy lifecycle node whose transitions call ``handlers[name]()``."""

        def __init__(self, node_name: str, handlers: dict[str, Callable[[], None]],
                     **kwargs: Any) -> None:
            self._handlers = handlers
            super().__init__(node_name, **kwargs)

        def _run(self, name: str) -> Any:
            try:
                self._handlers[name]()
            except Darknet53Error as exc:
                self.get_logger().error(f'{name} failed: {exc}')
                return TransitionCallbackReturn.FAILURE
            except Exception as exc:  # rclpy would swallow it silently
                self.get_logger().error(f'{name} failed: {type(exc).__name__}: {exc}')
                return TransitionCallbackReturn.ERROR
            return TransitionCallbackReturn.SUCCESS

        def on_configure(self, state: LifecycleState) -> Any:
            return self._run('configure')

        def on_activate(self, state: LifecycleState) -> Any:
            return self._run('activate')

        def on_deactivate(self, state: LifecycleState) -> Any:
            return self._run('deactivate')

        def on_cleanup(self, state: LifecycleState) -> Any:
            return self._run('cleanup')

        def on_shutdown(self, state: LifecycleState) -> Any:
            return self._run('shutdown')

        def on_error(self, state: LifecycleState) -> Any:
            return self._run('reset')

    return _Node


class LifecycleDetectorNode:
    """The managed detector node (:attr:`node`, an ``rclpy.lifecycle.LifecycleNode``).

    Args:
        node_name: ROS node name.
        share_dir: where relative model paths are looked up (as :class:`DetectorNode`).
        **node_kwargs: passed to the lifecycle node (``namespace``, ``context``,
            ``parameter_overrides`` ...).
    """

    def __init__(self, node_name: str = NODE_NAME, share_dir: Any = True,
                 **node_kwargs: Any) -> None:
        """Create the node, unconfigured (nothing loaded)."""
        self.managed: ManagedDetector | None = None
        handlers = {'configure': self._configure, 'activate': self._activate,
                    'deactivate': self._deactivate, 'cleanup': self._cleanup,
                    'shutdown': self._shutdown, 'reset': self._reset}
        self.node: Any = _node_class()(node_name, handlers, **node_kwargs)
        self.bond = ManagerBond(self.node)
        try:
            self.managed = managed_detector(RosPorts(self.node, managed=True), share_dir)
        except BaseException:
            self.node.destroy_node()
            raise

    def _get(self) -> ManagedDetector:
        if self.managed is None:
            raise Darknet53Error('the detector node is destroyed')
        return self.managed

    def _configure(self) -> None:
        self._get().configure()

    def _activate(self) -> None:
        managed = self._get()
        managed.activate()
        core = managed.core
        if core is not None:
            self.bond.form(core.params.bond_heartbeat_period)

    def _deactivate(self) -> None:
        self.bond.break_bond()
        self._get().deactivate()

    def _cleanup(self) -> None:
        self.bond.break_bond()
        self._get().cleanup()

    def _shutdown(self) -> None:
        self.bond.close()
        self._get().shutdown()

    def _reset(self) -> None:
        self.bond.break_bond()
        self._get().reset()

    @property
    def state(self) -> str:
        """The managed state: unconfigured, inactive, active or finalized."""
        return FINALIZED if self.managed is None else self.managed.state

    @property
    def core(self) -> NodeCore | None:
        """The node core while configured."""
        return None if self.managed is None else self.managed.core

    def destroy(self) -> None:
        """Run the shutdown transition (from any state), then destroy the node. Idempotent.

        The transition stops the inference thread and releases the engine while the context
        is still valid; should rcl refuse it, the same teardown runs directly.
        """
        managed, node = self.managed, self.node
        if node is None:
            return
        try:
            if managed is not None and managed.state != FINALIZED:
                try:
                    node.trigger_shutdown()
                except Exception as exc:
                    node.get_logger().warning(f'shutdown transition: {exc}')
                managed.shutdown()
        finally:
            self.managed = None
            self.node = None
            try:
                self.bond.close()
            finally:
                node.destroy_node()

    def destroy_node(self) -> None:
        """Alias of :meth:`destroy` (rclpy naming)."""
        self.destroy()
