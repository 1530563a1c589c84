"""Health reporting of the detector node: drop accounting, diagnostic statuses, throttled logs.

:class:`~darknet53_ros.ros.node_core.NodeCore` counts per camera (:class:`CameraStats`) and
builds its ``diagnostic_msgs`` statuses with :func:`camera_status` and :func:`detector_level`;
repeated warnings go through :class:`ThrottledLog`. Statuses are named and identified as
diagnostic_updater does: ``<node name>: <task>`` (the node's name, not its namespace) and a
device id as ``hardware_id`` (:func:`hardware_id`), or ``none``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
import threading
import time
from typing import Any

import numpy as np

from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.rate_health import DEFAULT_WARN_FRACTION, RECEIVE_HINT, rate_warning
from darknet53_ros.ros.scheduler import DROP_REASONS, RateMeter

__all__ = [
    'ALL_DROP_REASONS',
    'CORE_DROP_REASONS',
    'LOW_RECEIVE_FRACTION',
    'NO_HARDWARE_ID',
    'RECEIVE_HINT',
    'CameraStats',
    'ThrottledLog',
    'camera_status',
    'detector_level',
    'hardware_id',
    'keep_above',
]

CORE_DROP_REASONS = ('bad_image', 'inference_error', 'publish_error')
"""Drops decided by the core: undecodable frame, failed inference batch, failed publish."""
ALL_DROP_REASONS = tuple(DROP_REASONS) + CORE_DROP_REASONS
"""Every drop reason reported in diagnostics (the scheduler's ``superseded``, ``stale``,
``closed`` first)."""

# Level values of diagnostic_msgs/DiagnosticStatus.
OK, WARN, ERROR = 0, 1, 2

LOW_RECEIVE_FRACTION = DEFAULT_WARN_FRACTION
"""Default threshold of :func:`~darknet53_ros.ros.rate_health.rate_warning` (issue 21)."""

NO_HARDWARE_ID = 'none'
"""diagnostic_updater's ``hardware_id`` for statuses without a device."""


class ThrottledLog:
    """Log a message for a key at once, then at most once per ``period_s`` for that key.

    Suppressed repeats are counted and reported with the next message of the key.
    ``logger`` needs ``warning``/``error``/``info`` methods taking one string (a
    ``logging.Logger`` or an rclpy logger).
    """

    def __init__(self, logger: Any, period_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create the throttle; nothing is logged yet."""
        self.logger = logger
        self.period_s = float(period_s)
        self.clock = clock
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any, message: str, level: str = 'warning') -> bool:
        """Log ``message`` unless ``key`` logged within the period; True when logged."""
        with self._lock:
            now = self.clock()
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message = f'{message} ({suppressed} more since the last report)'
        getattr(self.logger, level)(message)
        return True


@dataclass
class CameraStats:
    """What the core counts per camera (the scheduler counts arrivals and its own drops).

    Attributes:
        published: Detection2DArray messages published.
        dropped: drops by :data:`CORE_DROP_REASONS`.
        output_rate: publish rate.
        latencies: recent stamp-to-publish latencies in seconds.
        last_error: ``'Type: message'`` of the last drop.
        reported: drop counts and ``received`` at the last diagnostics report.
    """

    published: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CORE_DROP_REASONS, 0))
    output_rate: RateMeter = field(default_factory=RateMeter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    last_error: str = ''
    reported: dict[str, int] = field(default_factory=dict)


def _ms(seconds: float | None) -> float | str:
    return 'n/a' if seconds is None else 1e3 * seconds


def camera_status(camera: CameraSpec, entry: Mapping[str, Any], previous: Mapping[str, int],
                  period_s: float, warn_fraction: float = LOW_RECEIVE_FRACTION
                  ) -> tuple[dict[str, Any], dict[str, int]]:
    """The diagnostic status of one camera and its drops since the previous report.

    Args:
        camera: the camera.
        entry: its :meth:`~darknet53_ros.ros.node_core.NodeCore.stats` entry.
        previous: :attr:`CameraStats.reported` of the previous report.
        period_s: seconds since the previous report.

    Returns:
        ``(status, delta)``: the status dict (``level``, ``message`` and values) and the new
        drops by every reason of :data:`ALL_DROP_REASONS`. WARN when nothing was received
        (ever or since then), when the camera receives or detects less than
        ``warn_fraction`` of the frames its stamps say were published (with the reason:
        :func:`~darknet53_ros.ros.rate_health.rate_warning`) or frames could not be decoded,
        ERROR when inference or publishing failed since then.
    """
    delta = {k: entry['dropped'][k] - previous.get(k, 0) for k in ALL_DROP_REASONS}
    received_delta = entry['received'] - previous.get('received', 0)
    level, message = OK, 'ok'
    if entry['received'] == 0:
        level, message = WARN, f'no images received on {camera.input_topic}'
    elif received_delta == 0:
        level, message = WARN, f'no images in the last {period_s:.1f} s'
    publisher_hz, fraction = entry.get('publisher_hz'), entry.get('received_fraction')
    slow = rate_warning(entry, delta, warn_fraction) if received_delta else None
    if slow:
        level, message = WARN, slow
    if delta['bad_image']:
        level, message = WARN, f'{delta["bad_image"]} undecodable frame(s) dropped'
    if delta['inference_error'] or delta['publish_error']:
        level, message = ERROR, f'{delta["inference_error"] + delta["publish_error"]} ' \
                                'frame(s) lost to inference/publish errors'
    status: dict[str, Any] = {
        'level': level, 'message': message, 'topic': camera.input_topic,
        'detections_topic': camera.detections_topic,
        'input_hz': entry['received_hz'], 'output_hz': entry['output_hz'],
        'publisher_hz': 'n/a' if publisher_hz is None else publisher_hz,
        'received_fraction': 'n/a' if fraction is None else fraction,
        'received': entry['received'], 'published': entry['published'],
        'latency_ms': _ms(entry['latency_s']),
        'latency_ms_mean': _ms(entry['latency_mean_s']),
        'latency_ms_max': _ms(entry['latency_max_s']),
        'queue_wait_ms_max': 1e3 * entry['max_wait_s'],
        'dropped': entry['dropped_total'],
    }
    status.update({f'dropped_{k}': v for k, v in entry['dropped'].items()})
    if entry['last_error']:
        status['last_error'] = entry['last_error']
    return status, delta


def detector_level(new_failures: int, started: bool, running: bool, closed: bool,
                   summary: str) -> tuple[int, str]:
    """``(level, message)`` of the detector status.

    Args:
        new_failures: frames that failed inference since the previous report (ERROR).
        started: the inference thread was started.
        running: it still runs (ERROR when started but stopped).
        closed: the core is shut down (OK, ``shut down``).
        summary: the message when all is well (backend, precision, cameras).
    """
    level = ERROR if new_failures else OK if running or not started else ERROR
    message = f'{new_failures} frame(s) failed inference' if new_failures else summary
    if closed:
        level, message = OK, 'shut down'
    elif started and not running:
        message = 'inference thread stopped'
    return level, message


def hardware_id(info: Mapping[str, Any]) -> str:
    """The ``hardware_id`` of the detector status from its backend description: the device
    (``cuda:0``; a TensorRT engine on a DLA core ``cuda:0/dla1``) or ``none`` (CPU)."""
    device = str(info.get('device', '') or '')
    if not device:
        if info.get('backend') == 'tensorrt':
            device = 'cuda:0'
        elif 'CUDAExecutionProvider' in str(info.get('providers', '')):
            device = 'cuda:0'
    if not device or device == 'cpu':
        return NO_HARDWARE_ID
    dla = info.get('dla_core')
    if dla not in (None, '', 'None', '-1'):
        device = f'{device}/dla{dla}'
    return device


def keep_above(det: Detections, threshold: float) -> Detections:
    """``det`` without the detections scoring below ``threshold`` (a camera threshold above the
    detector's; the same float32 comparison as the candidate selection, so the result equals
    detecting at ``threshold``: NMS only lets higher-scoring boxes suppress lower ones)."""
    keep = det.scores >= np.float32(threshold)
    if bool(keep.all()):
        return det
    return Detections(det.boxes[keep], det.scores[keep], det.class_ids[keep], det.names)
