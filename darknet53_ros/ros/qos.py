"""QoS of the detector node's publishers and subscriptions, overridable the rclpy way.

Every publisher and subscription is created with
``QoSOverridingOptions.with_default_policies()``, so ``qos_overrides.<topic>.<publisher|
subscription>.<history|depth|reliability>`` parameters (a params file or ``-p`` at start-up;
the topic is the fully qualified, remapped name) take effect, as for rclcpp nodes. rclpy only
declares those parameters when the entity is created and ignores every other override
silently, so :func:`unmatched_qos_overrides` finds the ``qos_overrides.*`` overrides that
match nothing the node created (a misspelt topic, an unsupported policy) and
:func:`qos_override_warning` says so in one line. rclpy is imported where used.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ['OVERRIDABLE_POLICIES', 'QOS_OVERRIDES', 'overriding_options', 'qos_override_warning',
           'qos_profile', 'unmatched_qos_overrides']

QOS_OVERRIDES = 'qos_overrides.'
"""Prefix of rclpy's QoS override parameters."""

OVERRIDABLE_POLICIES = ('history', 'depth', 'reliability')
"""The policies of ``QoSOverridingOptions.with_default_policies()``."""


def qos_profile(depth: int, reliable: bool = True, transient_local: bool = False) -> Any:
    """A keep-last ``rclpy.qos.QoSProfile``."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if transient_local
                    else DurabilityPolicy.VOLATILE))


def overriding_options() -> Any:
    """``QoSOverridingOptions.with_default_policies()`` (history, depth, reliability)."""
    from rclpy.qos_overriding_options import QoSOverridingOptions

    return QoSOverridingOptions.with_default_policies()


def unmatched_qos_overrides(overrides: Iterable[str], declared: Iterable[str]) -> list[str]:
    """The ``qos_overrides.*`` names among ``overrides`` (the node's parameter overrides) that
    are not among ``declared`` (the parameters rclpy declared for the node's publishers and
    subscriptions), sorted."""
    known = set(declared)
    return sorted(n for n in overrides if n.startswith(QOS_OVERRIDES) and n not in known)


def qos_override_warning(unmatched: Iterable[str], declared: Iterable[str]) -> str:
    """One line naming ``unmatched`` overrides and the QoS parameters that exist; ``''`` when
    there are none."""
    unmatched = sorted(unmatched)
    if not unmatched:
        return ''
    topics = sorted({n[len(QOS_OVERRIDES):].rsplit('.', 1)[0] for n in declared
                     if n.startswith(QOS_OVERRIDES)})
    return (f'ignored QoS override(s) matching no publisher or subscription of this node: '
            f'{", ".join(unmatched)}; overridable: qos_overrides.<TOPIC>.<ENTITY>.'
            f'{{{",".join(OVERRIDABLE_POLICIES)}}} for ' + (', '.join(topics) or 'none yet'))
