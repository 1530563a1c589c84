"""Whether a camera is served at the rate its publisher sends: :func:`rate_warning`.

The publisher's rate comes from the header stamps the node receives
(:class:`~darknet53_ros.ros.scheduler.PublisherRate`: robust to lost frames). A camera gets a
WARN, with the reason, when

- it **receives** less than ``rate_warn_fraction`` (default :data:`DEFAULT_WARN_FRACTION`) of
  the frames published: **DDS loss** (socket receive buffer, Wi-Fi, QoS depth), before the node
  sees them; or
- it **detects** on less than that fraction: the frames arrived but were dropped inside the
  node, by the reasons counted since the previous report: ``superseded`` (a newer frame
  replaced a waiting one: inference is the bottleneck), ``decode_superseded`` (replaced before
  a decode thread was free: decoding is the bottleneck), ``bad_image`` (undecodable) or
  ``stale`` (waited longer than ``max_frame_age``).

80 % is where users notice: a tracker fed 24 of 30 Hz sees gaps of two frame periods every
few frames, and a camera that loses a fifth of its frames to the receive buffer is
misconfigured. Setups that knowingly run more camera frames than the engine can detect set
the parameter lower, or 0 to turn the check off.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ['DEFAULT_WARN_FRACTION', 'DROP_EXPLANATIONS', 'RECEIVE_HINT', 'rate_warning']

DEFAULT_WARN_FRACTION = 0.8
"""Default ``rate_warn_fraction``."""

RECEIVE_HINT = ('frames are lost before the node: raise the DDS socket receive buffer '
                '(config/cyclonedds.xml via CYCLONEDDS_URI, and net.core.rmem_max), or use '
                'fewer/smaller image streams per host')
"""The hint given with a low received fraction (DDS loss)."""

DROP_EXPLANATIONS = {
    'superseded': 'superseded (inference busy: a newer frame replaced a waiting one)',
    'decode_superseded': 'decode (decode threads busy: replaced before decoding)',
    'bad_image': 'decode (undecodable frames)',
    'stale': 'stale (waited longer than max_frame_age)',
}
"""Drop reasons inside the node that lower the detected rate, as diagnostics name them."""


def rate_warning(entry: Mapping[str, Any], delta: Mapping[str, int],
                 warn_fraction: float = DEFAULT_WARN_FRACTION) -> str | None:
    """The WARN message of a camera served below ``warn_fraction`` of its publisher's rate,
    or None (rate fine, unknown yet, or the check is off).

    Args:
        entry: the camera's :meth:`~darknet53_ros.ros.node_core.NodeCore.stats` entry
            (``publisher_hz``, ``received_fraction``, ``output_hz``).
        delta: drops by reason since the previous report.
        warn_fraction: the threshold (0: no check).
    """
    publisher_hz, fraction = entry.get('publisher_hz'), entry.get('received_fraction')
    if warn_fraction <= 0 or not publisher_hz or fraction is None:
        return None
    if fraction < warn_fraction:
        return (f'DDS loss: receiving {fraction * publisher_hz:.1f} Hz of ~{publisher_hz:.1f} '
                f'Hz published ({fraction:.0%}, from header stamps): {RECEIVE_HINT}')
    detected_hz = float(entry.get('output_hz') or 0.0)
    if detected_hz >= warn_fraction * publisher_hz:
        return None
    causes = sorted(((n, r) for r, n in delta.items() if r in DROP_EXPLANATIONS and n > 0),
                    reverse=True)
    reasons = ', '.join(f'{DROP_EXPLANATIONS[r]}: {n}' for n, r in causes) \
        or 'no drops counted since the last report'
    return (f'detecting {detected_hz:.1f} Hz of ~{publisher_hz:.1f} Hz published '
            f'({detected_hz / publisher_hz:.0%}); frames dropped in the node by {reasons}')
