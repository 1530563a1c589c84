"""A ByteTrack-class multi-object tracker for one camera: :class:`Tracker`.

Per frame (:meth:`Tracker.update`, with the frame's time stamp):

1. every track is predicted to the frame's time by a constant-velocity Kalman filter
   (:class:`~darknet53_ros.tracking.kalman.BoxKalman`; the step is the elapsed time, so
   dropped frames and other playback rates change the step, not the model); tracks lost for
   longer than ``max_lost_s`` are removed;
2. **high-score detections** (``score >= high_score``) are matched to the confirmed tracks
   (tracked and lost) by IoU with the predicted boxes (lost tracks' boxes grown by
   ``lost_growth`` per second lost, up to ``max_growth``) and optimal assignment;
3. **low-score detections** (``low_score <= score < high_score``) are matched to the tracked
   tracks that are still unmatched (ByteTrack's second stage: occluded or blurred objects);
4. tentative tracks (one detection so far) are matched to the remaining high-score
   detections; a tentative track confirmed ``min_hits`` times gets its id, one left unmatched
   is dropped;
5. **observation-centric recovery** (OC-SORT): confirmed tracks still unmatched are matched to
   the remaining high-score detections by their last observed box instead of the prediction;
6. a track matched after a gap is re-updated through the gap along the straight line between
   its last observation and the new one (OC-SORT's observation-centric re-update), so the
   velocity it drifted to while unseen is corrected;
7. high-score detections left over with ``score >= new_score`` start tentative tracks (on the
   first frame they are confirmed at once).

A confirmed track whose mean detection score is below ``min_track_score`` (a false positive
kept alive by weak detections) gives its detections no id while it stays that weak.

Matching is class-aware (a detection matches only tracks of its class) unless
``class_aware`` is off. Ids are integers from 1, given when a track is confirmed and never
reused by this tracker (:meth:`reset` clears the tracks and, with ``ids=True``, the counter).
Everything is NumPy arrays over tracks; the assignment solver is
:mod:`~darknet53_ros.tracking.assignment`'s. Deterministic: the same input gives the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
import math
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.tracking.assignment import SOLVERS, match, solver
from darknet53_ros.tracking.geometry import iou_matrix, scale_boxes, xywh_to_xyxy, xyxy_to_xywh
from darknet53_ros.tracking.kalman import BoxKalman

__all__ = ['TENTATIVE', 'TRACKED', 'LOST', 'Tracker', 'TrackerConfig']

TENTATIVE, TRACKED, LOST = 0, 1, 2


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds (defaults tuned on training sequences; see doc/tracking.md).

    Attributes:
        high_score: detections at or above this take part in the first association.
        low_score: detections below this are ignored; between the two: second association.
        new_score: a high-score detection left unmatched starts a track at or above this.
        match_iou: least IoU of a first-stage (high-score) pair.
        low_match_iou: least IoU of a second-stage (low-score) pair.
        tentative_iou: least IoU of a tentative track and a detection.
        recovery_iou: least IoU of a lost track's last observed box and a detection
            (observation-centric recovery; 1 disables it).
        max_lost_s: seconds a track is kept without a detection.
        min_hits: detections that confirm a track (1: at once).
        lost_growth: a lost track's box grows by this fraction per second lost (matching only).
        max_growth: ... up to this fraction.
        score_fusion: first-stage cost is ``1 - IoU * score`` instead of ``1 - IoU``.
        class_aware: match only detections and tracks of the same class.
        re_update: re-update a track through a gap (observation-centric re-update).
        camera_motion: estimate the camera's motion from the first-stage matches and move
            the unmatched tracks with it.
        min_track_score: a track whose mean detection score is below this gives its
            detections no id (it is still tracked: its detections start no other track, and
            it shows again once its mean rises); 0: off.
        kalman_boxes: :attr:`Tracker.filtered_boxes` (and ``darknet53 track``'s result
            files) give a tracked detection the track's Kalman-filtered box instead of the
            detection's own; the nodes always publish the detection's box.
        max_dt_s: a jump in time larger than this (or backwards) clears the tracks.
        solver: assignment solver (:data:`~darknet53_ros.tracking.assignment.SOLVERS`).
    """

    high_score: float = 0.2
    low_score: float = 0.1
    new_score: float = 0.4
    match_iou: float = 0.1
    low_match_iou: float = 0.3
    tentative_iou: float = 0.3
    recovery_iou: float = 0.4
    max_lost_s: float = 4.0
    min_hits: int = 2
    lost_growth: float = 1.0
    max_growth: float = 0.6
    score_fusion: bool = False
    class_aware: bool = True
    re_update: bool = True
    camera_motion: bool = False
    min_track_score: float = 0.3
    kalman_boxes: bool = True
    max_dt_s: float = 10.0
    solver: str = 'auto'

    def __post_init__(self) -> None:
        for name in ('high_score', 'low_score', 'new_score', 'match_iou', 'low_match_iou',
                     'tentative_iou', 'recovery_iou', 'min_track_score'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f'tracker {name}: {value!r} is outside [0, 1]')
        if self.low_score > self.high_score:
            raise ConfigError(f'tracker low_score {self.low_score} exceeds high_score '
                              f'{self.high_score}')
        for name in ('max_lost_s', 'lost_growth', 'max_growth', 'max_dt_s'):
            if not getattr(self, name) >= 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f'tracker {name}: {getattr(self, name)!r} must be >= 0')
        if self.min_hits < 1:
            raise ConfigError(f'tracker min_hits: {self.min_hits} must be >= 1')
        if self.solver not in SOLVERS:
            raise ConfigError(f'tracker solver {self.solver!r}: one of {", ".join(SOLVERS)}')

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrackerConfig:
        """A config from ``{field: value}`` (unknown names are a ConfigError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'tracker: unknown setting(s) {", ".join(unknown)} (known: '
                              f'{", ".join(sorted(known))})')
        return cls(**values)


class _Tracks:
    """Struct of arrays over tracks."""

    def __init__(self) -> None:
        self.mean = np.zeros((0, 8))
        self.cov = np.zeros((0, 8, 8))
        self.ident = np.zeros(0, np.int64)       # 0 while tentative
        self.cls = np.zeros(0, np.int64)
        self.state = np.zeros(0, np.int8)
        self.hits = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0)             # stamp of the last detection (s)
        self.last_box = np.zeros((0, 4))         # last detection, xyxy
        self.score_sum = np.zeros(0)             # sum of the matched detections' scores

    def __len__(self) -> int:
        return len(self.state)

    def keep(self, mask: np.ndarray) -> None:
        if mask.all():
            return
        for name in vars(self):
            setattr(self, name, getattr(self, name)[mask])

    def append(self, other: _Tracks) -> None:
        for name in vars(self):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))


class Tracker:
    """Multi-object tracker of one camera (see module docstring).

    Args:
        config: thresholds (:class:`TrackerConfig`).
        kalman: the motion model (default :class:`~darknet53_ros.tracking.kalman.BoxKalman`).
    """

    def __init__(self, config: TrackerConfig | None = None,
                 kalman: BoxKalman | None = None) -> None:
        self.config = config or TrackerConfig()
        self.kalman = kalman or BoxKalman()
        self._solve = solver(self.config.solver)
        self._next_id = 1
        self.tracks = _Tracks()
        self.stamp: float | None = None
        self.frames = 0
        self.filtered_boxes = np.zeros((0, 4))

    def reset(self, ids: bool = False) -> None:
        """Forget every track (and restart ids from 1 when ``ids``)."""
        self.tracks = _Tracks()
        self.stamp = None
        self.frames = 0
        if ids:
            self._next_id = 1

    filtered_boxes: np.ndarray
    """After :meth:`update`: one ``x1, y1, x2, y2`` box per detection of that frame, the track's
    Kalman-filtered box for a detection matched to a track when ``kalman_boxes`` is on, else
    the detection's own box."""

    @property
    def active_ids(self) -> np.ndarray:
        """Ids of the confirmed tracks matched in the last update."""
        t = self.tracks
        return t.ident[(t.state == TRACKED) & (t.last_seen == self.stamp)]

    def update(self, boxes: Any, scores: Any, class_ids: Any, stamp: float) -> np.ndarray:
        """Track one frame's detections; returns the track id of each detection (0: none).

        Args:
            boxes: [n, 4] ``x1, y1, x2, y2``.
            scores: [n] confidences.
            class_ids: [n] integer classes.
            stamp: the frame's time in seconds (header stamp, frame index / frame rate).

        Raises:
            ValueError: array shapes disagree.
        """
        cfg = self.config
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.asarray(class_ids).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f'tracker: {len(boxes)} boxes, {len(scores)} scores, '
                             f'{len(classes)} classes')
        ok = np.isfinite(boxes).all(1) & np.isfinite(scores) & (scores >= cfg.low_score)
        stamp = float(stamp)
        dt = 0.0 if self.stamp is None else stamp - self.stamp
        if dt < 0 or dt > cfg.max_dt_s:
            self.reset()
            dt = 0.0
        first = self.stamp is None
        self.stamp = stamp
        self.frames += 1
        t = self.tracks
        t.mean, t.cov = self.kalman.predict(t.mean, t.cov, dt)
        t.keep(stamp - t.last_seen <= cfg.max_lost_s)  # in time: also after a gap in frames
        out = np.zeros(len(boxes), np.int64)
        det_track = np.full(len(boxes), -1, np.int64)
        free_det = ok.copy()
        free_track = np.ones(len(t), bool)

        predicted = xywh_to_xyxy(t.mean[:, :4])
        lost = np.flatnonzero(t.state == LOST) if cfg.lost_growth > 0 else ()
        if len(lost):
            growth = np.minimum(cfg.lost_growth * (stamp - t.last_seen[lost]), cfg.max_growth)
            predicted[lost] = scale_boxes(predicted[lost], 1.0 + growth)
        similarity = iou_matrix(predicted, boxes)
        if cfg.class_aware:
            similarity *= t.cls[:, None] == classes[None, :]
        high = free_det & (scores >= cfg.high_score)
        confirmed = t.state != TENTATIVE
        self._associate(similarity, scores, confirmed, high, free_track, free_det, det_track,
                        cfg.match_iou, cfg.score_fusion)
        if cfg.camera_motion and free_track.any():
            similarity = self._compensate(boxes, classes, det_track, free_track, similarity)
        low = free_det & (scores < cfg.high_score)
        self._associate(similarity, scores, t.state == TRACKED, low, free_track, free_det,
                        det_track, cfg.low_match_iou)
        high = free_det & (scores >= cfg.high_score)
        self._associate(similarity, scores, t.state == TENTATIVE, high, free_track, free_det,
                        det_track, cfg.tentative_iou)
        high = free_det & (scores >= cfg.high_score)
        if cfg.recovery_iou < 1.0 and high.any() and (confirmed & free_track).any():
            observed = iou_matrix(t.last_box, boxes)
            if cfg.class_aware:
                observed *= t.cls[:, None] == classes[None, :]
            self._associate(observed, scores, confirmed, high, free_track, free_det,
                            det_track, cfg.recovery_iou)

        self._apply(boxes, scores, det_track, stamp)
        t = self.tracks
        matched = det_track >= 0
        out[matched] = t.ident[det_track[matched]]  # 0 while a track is tentative
        self.filtered_boxes = boxes
        if cfg.kalman_boxes and matched.any():
            self.filtered_boxes = boxes.copy()
            self.filtered_boxes[matched] = xywh_to_xyxy(t.mean[det_track[matched], :4])
        if cfg.min_track_score > 0:
            ti = det_track[matched]
            weak = t.score_sum[ti] < cfg.min_track_score * t.hits[ti]
            out[np.flatnonzero(matched)[weak]] = 0
        unmatched = np.ones(len(t), bool)
        unmatched[det_track[matched]] = False
        t.state[unmatched & (t.state == TRACKED)] = LOST
        t.keep(~(unmatched & (t.state == TENTATIVE)))
        new = free_det & (scores >= cfg.new_score)
        out[new] = self._start(boxes[new], scores[new], classes[new], stamp,
                               confirm=first or cfg.min_hits <= 1)
        if cfg.min_track_score > 0:
            out[new & (scores < cfg.min_track_score)] = 0
        return out

    # -- steps ---------------------------------------------------------------------------------
    def _compensate(self, boxes: np.ndarray, classes: np.ndarray, det_track: np.ndarray,
                    free_track: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """Camera motion from the detections alone: the median offset of the first-stage
        matches from their predictions (what the tracks' own velocities do not explain: a pan
        starting or stopping) moves the unmatched tracks too; their IoUs are recomputed."""
        t, cfg = self.tracks, self.config
        dets = np.flatnonzero(det_track >= 0)
        if len(dets) < 3:
            return similarity
        ti = det_track[dets]
        centres = (boxes[dets, :2] + boxes[dets, 2:]) / 2
        offsets = centres - t.mean[ti, :2]
        shift = np.median(offsets, axis=0)
        spread = np.median(np.abs(offsets - shift), axis=0)
        size = np.median(t.mean[ti, 2:4], axis=0)
        if (np.abs(shift) <= 0.05 * size).all() or (spread > np.abs(shift)).any():
            return similarity  # no common motion worth the name
        moved = np.flatnonzero(free_track)
        t.mean[moved, :2] += shift
        predicted = xywh_to_xyxy(t.mean[moved, :4])
        rows = iou_matrix(predicted, boxes)
        if cfg.class_aware:
            rows *= t.cls[moved, None] == classes[None, :]
        similarity = similarity.copy()
        similarity[moved] = rows
        return similarity

    def _associate(self, similarity: np.ndarray, scores: np.ndarray, track_mask: np.ndarray,
                   det_mask: np.ndarray, free_track: np.ndarray, free_det: np.ndarray,
                   det_track: np.ndarray, min_iou: float, fuse: bool = False) -> None:
        """Optimal pairs of the free tracks and detections selected, IoU >= ``min_iou``
        (``similarity``: IoU of every track with every detection, 0 across classes)."""
        ti = np.flatnonzero(track_mask & free_track)
        if not len(ti):
            return
        di = np.flatnonzero(det_mask & free_det)
        if not len(di):
            return
        sim = similarity[ti][:, di]
        gate = sim >= max(min_iou, 1e-9)
        if not gate.any():
            return
        cost = 1.0 - (sim * scores[di][None, :] if fuse else sim)
        cost[~gate] = np.inf
        rows, cols = match(cost, 1.0 + 1e-9 if fuse else 1.0 - min_iou + 1e-9, self._solve)
        det_track[di[cols]] = ti[rows]
        free_track[ti[rows]] = False
        free_det[di[cols]] = False

    def _apply(self, boxes: np.ndarray, scores: np.ndarray, det_track: np.ndarray,
               stamp: float) -> None:
        """Kalman update of every matched track; re-update through gaps."""
        t, cfg = self.tracks, self.config
        dets = np.flatnonzero(det_track >= 0)
        if not len(dets):
            return
        ti = det_track[dets]
        z = xyxy_to_xywh(boxes[dets])
        mean, cov = t.mean[ti], t.cov[ti]
        if cfg.re_update:
            gap = stamp - t.last_seen[ti]
            regained = (t.state[ti] == LOST) & (gap > 0)
            if regained.any():
                mean, cov = self._re_update(mean, cov, regained, t.last_box[ti], z, gap)
        mean, cov = self.kalman.update(mean, cov, z)
        t.mean[ti], t.cov[ti] = mean, cov
        t.last_seen[ti] = stamp
        t.last_box[ti] = boxes[dets]
        t.hits[ti] += 1
        t.score_sum[ti] += scores[dets]
        confirm = (t.state[ti] == TENTATIVE) & (t.hits[ti] >= cfg.min_hits)
        was_lost = t.state[ti] == LOST
        t.state[ti[was_lost]] = TRACKED
        for index in ti[confirm]:
            t.ident[index] = self._next_id
            self._next_id += 1
        t.state[ti[confirm]] = TRACKED

    def _re_update(self, mean: np.ndarray, cov: np.ndarray, regained: np.ndarray,
                   last_box: np.ndarray, z: np.ndarray, gap: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray]:
        """OC-SORT's re-update: restart the regained tracks at their last observation with
        the velocity of the straight line to the new one (the filter then corrects at z)."""
        idx = np.flatnonzero(regained)
        start = xyxy_to_xywh(last_box[idx])
        velocity = (z[idx] - start) / gap[idx, None]
        new_mean, new_cov = self.kalman.initiate(start)
        new_mean[:, 4:] = velocity
        new_mean, new_cov = self.kalman.predict(new_mean, new_cov, 0.0)
        # predict each regained track over its own gap
        for k, i in enumerate(idx):
            m, c = self.kalman.predict(new_mean[k:k + 1], new_cov[k:k + 1], float(gap[i]))
            mean[i], cov[i] = m[0], c[0]
        return mean, cov

    def _start(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, stamp: float,
               confirm: bool) -> np.ndarray:
        """Start tracks at ``boxes``; returns their ids (0 for tentative ones)."""
        if not len(boxes):
            return np.zeros(0, np.int64)
        new = _Tracks()
        new.mean, new.cov = self.kalman.initiate(xyxy_to_xywh(boxes))
        n = len(boxes)
        new.cls = classes.copy()
        new.hits = np.ones(n, np.int64)
        new.score_sum = scores.astype(np.float64)
        new.last_seen = np.full(n, stamp)
        new.last_box = boxes.copy()
        if confirm:
            new.ident = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            self._next_id += n
            new.state = np.full(n, TRACKED, np.int8)
        else:
            new.ident = np.zeros(n, np.int64)
            new.state = np.full(n, TENTATIVE, np.int8)
        self.tracks.append(new)
        return new.ident
