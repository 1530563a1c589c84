"""The bond of the lifecycle node to a lifecycle manager (Nav2's ``lifecycle_manager``).

Nav2's lifecycle manager, after activating a node, forms a bond with it (``bond`` topic,
id = the node's name) and waits ``bond_timeout / 2`` for it (``bond_timeout`` 4 s by default);
without one, bring-up fails. :class:`ManagerBond` forms that bond with ``bondpy`` (ros/bond_core)
at ``activate`` and breaks it at ``deactivate``, as nav2_util's ``LifecycleNode`` does
(heartbeat every ``bond_heartbeat_period``, 0.1 s by default; heartbeat timeout 4 s). Where
``bondpy`` is not installed it says once how to configure the manager instead
(:data:`NO_BONDPY`). ``bondpy`` is imported where used, so this module imports without ROS.
"""
from __future__ import annotations

from collections.abc import Callable
import inspect
from typing import Any

__all__ = ['BOND_TOPIC', 'BREAK_GRACE', 'HEARTBEAT_TIMEOUT', 'NO_BONDPY', 'ManagerBond',
           'bond_class', 'make_bond']

BOND_TOPIC = 'bond'
"""The bond topic (relative: the node's namespace, as Nav2's)."""

HEARTBEAT_TIMEOUT = 4.0
"""Seconds without the manager's heartbeat before the bond breaks (nav2_util's value)."""

BREAK_GRACE = 1.0
"""Seconds a broken bond keeps publishing "dead" for the manager before it is released."""

NO_BONDPY = ('bondpy is not installed: no bond to a lifecycle manager; install bondpy '
             '(ros-$ROS_DISTRO-bondpy) or give the lifecycle manager bond_timeout: 0.0')
"""Logged once when the bond cannot be formed for want of bondpy."""


def bond_class() -> Any:
    """``bondpy.bondpy.Bond``, or None when bondpy (or its messages) is not installed."""
    try:
        from bondpy.bondpy import Bond
    except ImportError:
        return None
    return Bond


def make_bond(cls: Any, node: Any, topic: str, bond_id: str) -> Any:
    """A ``bondpy`` bond, whichever constructor this bondpy has: ``Bond(node, topic, bond_id)``
    (the humble branch) or ``Bond(topic, id, node)`` (later branches)."""
    try:
        names = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        names = []
    if 'bond_id' in names:
        return cls(node=node, topic=topic, bond_id=bond_id)
    if 'id' in names:
        return cls(topic=topic, id=bond_id, node=node)
    return cls(topic, bond_id, node)


class ManagerBond:
    """Forms and breaks the bond of ``node`` to its lifecycle manager.

    Args:
        node: the rclpy (lifecycle) node.
        factory: returns the bond class (default :func:`bond_class`; tests pass a fake).
    """

    def __init__(self, node: Any, factory: Callable[[], Any] = bond_class) -> None:
        """Nothing is formed yet."""
        self.node = node
        self.factory = factory
        self.bond: Any = None
        self._dying: list[tuple[Any, list[Any]]] = []
        self._told = False

    @property
    def formed(self) -> bool:
        """True while a bond exists (between :meth:`form` and :meth:`break_bond`)."""
        return self.bond is not None

    def form(self, heartbeat_period: float) -> bool:
        """Start the bond (heartbeat every ``heartbeat_period`` s; ``<= 0``: no bond).
        Returns True when a bond was started."""
        if heartbeat_period <= 0 or self.bond is not None:
            return False
        cls = self.factory()
        if cls is None:
            if not self._told:
                self._told = True
                self.node.get_logger().info(NO_BONDPY)
            return False
        name = self.node.get_name()
        bond = make_bond(cls, self.node, BOND_TOPIC, name)
        bond.heartbeat_period = float(heartbeat_period)
        bond.heartbeat_timeout = HEARTBEAT_TIMEOUT
        bond.start()
        self.bond = bond
        self.node.get_logger().info(f'bond ({name}) to the lifecycle manager formed')
        return True

    def break_bond(self, grace: float = BREAK_GRACE) -> None:
        """Break the bond: the manager is told at once (bondpy publishes "dead" until the
        manager acknowledges, as bondcpp's destructor waits for it); the bond's publisher,
        subscription and timers go ``grace`` seconds later (0: now). Idempotent."""
        bond, self.bond = self.bond, None
        if bond is None:
            return
        try:
            bond.break_bond()
        except Exception as exc:
            self.node.get_logger().warning(f'breaking the bond: {type(exc).__name__}: {exc}')
        if grace <= 0:
            self._dispose(bond)
            return
        timers: list[Any] = []

        def dispose() -> None:
            for timer in timers:
                self.node.destroy_timer(timer)
            self._dispose(bond)

        timers.append(self.node.create_timer(grace, dispose))
        self._dying.append((bond, timers))

    def close(self) -> None:
        """Break the bond and release every bond at once (before the node is destroyed)."""
        self.break_bond(grace=0.0)
        dying, self._dying = self._dying, []
        for bond, timers in dying:
            for timer in timers:
                self.node.destroy_timer(timer)
            self._dispose(bond)

    def _dispose(self, bond: Any) -> None:
        """Shut ``bond`` down: its thread, timers, publisher and subscription."""
        self._dying = [item for item in self._dying if item[0] is not bond]
        try:
            bond.shutdown()
        except Exception as exc:
            self.node.get_logger().warning(f'closing the bond: {type(exc).__name__}: {exc}')
        for name in ('heartbeat_timer', 'disconnect_timer', 'connect_timer'):
            timer = getattr(bond, name, None)  # bondpy's shutdown leaves some running
            if timer is not None:
                timer.cancel()
        for kind, entity in (('subscription', getattr(bond, 'sub', None)),
                             ('publisher', getattr(bond, 'pub', None))):
            if entity is not None:
                try:
                    getattr(self.node, f'destroy_{kind}')(entity)
                except Exception:  # already destroyed by bondpy
                    pass
