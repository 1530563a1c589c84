"""Track ids for any ``vision_msgs/Detection2DArray`` stream, without rclpy: the
``tracker_node``'s behaviour (:class:`ArrayTracker`).

Reads each detection's box (``bbox.center.position`` of vision_msgs 4, or ``bbox.center.x/y``
of vision_msgs 3; ``size_x``, ``size_y``), its best hypothesis (``results[k].hypothesis``:
``class_id`` string, ``score``; vision_msgs 3's flat ``id``/``score`` too) and the array's
header stamp; writes the track id into ``Detection2D.id`` of the same message (a decimal
string unique per stream for the node's lifetime, ``''`` untracked) and returns it. Each input
topic is its own camera (its own tracker and ids). Class strings are mapped to integers in the
order first seen, so matching stays class-aware whatever the detector calls its classes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from darknet53_ros.io.messages import stamp_to_ns
from darknet53_ros.tracking.cameras import CameraTrackers
from darknet53_ros.tracking.tracker import TrackerConfig

__all__ = ['ArrayTracker', 'detection_arrays']


def _hypothesis(detection: Any) -> tuple[str, float]:
    """(class id string, score) of the best hypothesis; ('', 1.0) without results."""
    best: tuple[str, float] | None = None
    for result in getattr(detection, 'results', None) or []:
        hyp = getattr(result, 'hypothesis', result)  # vision_msgs 4 nests it
        cls = str(getattr(hyp, 'class_id', getattr(hyp, 'id', '')))
        score = float(getattr(hyp, 'score', 1.0))
        if best is None or score > best[1]:
            best = (cls, score)
    return best or ('', 1.0)


def detection_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(boxes [n, 4] x1 y1 x2 y2, scores [n], class strings)`` of a Detection2DArray."""
    boxes, scores, classes = [], [], []
    for detection in msg.detections:
        centre = detection.bbox.center
        position = getattr(centre, 'position', centre)
        cx, cy = float(position.x), float(position.y)
        w, h = float(detection.bbox.size_x), float(detection.bbox.size_y)
        cls, score = _hypothesis(detection)
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append(score)
        classes.append(cls)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), classes


class ArrayTracker:
    """Fills ``Detection2D.id`` of Detection2DArray messages, per stream (module docstring).

    Args:
        config: tracker thresholds.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.trackers = CameraTrackers(config)
        self._classes: dict[str, int] = {}
        self.messages = 0

    def _class_index(self, name: str) -> int:
        return self._classes.setdefault(name, len(self._classes))

    def process(self, stream: str, msg: Any, fallback_stamp_ns: int = 0) -> Any:
        """Set the ids of ``msg`` (in place) from the tracker of ``stream``; returns ``msg``.
        A zero header stamp is replaced by ``fallback_stamp_ns`` (the node's clock)."""
        boxes, scores, names = detection_arrays(msg)
        classes = np.asarray([self._class_index(n) for n in names], np.int64)
        stamp = stamp_to_ns(msg.header) or int(fallback_stamp_ns)
        ids = self.trackers.assign(stream, boxes, scores, classes, stamp)
        for detection, ident in zip(msg.detections, ids):
            detection.id = ident
        self.messages += 1
        return msg

    def reset(self) -> None:
        """Forget every stream's tracks; ids restart at 1."""
        self.trackers.reset()
