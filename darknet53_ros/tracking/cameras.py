"""Track ids per camera, as ``Detection2D.id`` strings: :class:`CameraTrackers`.

One :class:`~darknet53_ros.tracking.tracker.Tracker` per camera (created on its first frame);
:meth:`CameraTrackers.assign` returns one id string per detection: the decimal track id
(``'1'``, ``'2'`` ...), unique per camera for the lifetime of the object (ids are never
reused, also after a track is lost), ``''`` for a detection without a confirmed track.
:meth:`CameraTrackers.reset` forgets every track and restarts ids (lifecycle cleanup). Tracks
age in the camera's own time (the header stamps), so a dropped frame or a bag played at another
rate does not break them; a stamp going backwards (a bag played again) clears that camera's
tracks, ids continue.
"""
from __future__ import annotations

import threading
from typing import Any

from darknet53_ros.tracking.tracker import Tracker, TrackerConfig

__all__ = ['CameraTrackers']


class CameraTrackers:
    """Per-camera trackers with string ids (see module docstring); thread-safe."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._trackers: dict[str, Tracker] = {}
        self._lock = threading.Lock()

    def tracker(self, camera: str) -> Tracker:
        """The camera's tracker (created on first use)."""
        with self._lock:
            found = self._trackers.get(camera)
            if found is None:
                found = self._trackers[camera] = Tracker(self.config)
            return found

    def assign(self, camera: str, boxes: Any, scores: Any, class_ids: Any,
               stamp_ns: int) -> list[str]:
        """Track one frame of ``camera``; returns an id string per detection ('' untracked)."""
        tracker = self.tracker(camera)
        with self._lock:
            ids = tracker.update(boxes, scores, class_ids, int(stamp_ns) * 1e-9)
        return [str(i) if i > 0 else '' for i in ids.tolist()]

    def reset(self) -> None:
        """Forget every camera's tracks and restart their ids at 1."""
        with self._lock:
            self._trackers.clear()

    def counts(self) -> dict[str, int]:
        """Confirmed tracks matched in each camera's last frame (for diagnostics)."""
        with self._lock:
            return {name: len(t.active_ids) for name, t in self._trackers.items()}
