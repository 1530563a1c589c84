"""Tracker options: weak tracks without ids, Kalman-filtered boxes."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.tools.track import FrameDetections, track_frames
from darknet53_ros.tracking import Tracker, TrackerConfig


def _box(cx: float, cy: float = 100.0, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_a_track_of_weak_detections_gets_no_id_until_its_mean_score_rises() -> None:
    config = TrackerConfig(high_score=0.2, low_score=0.1, new_score=0.4, min_hits=2,
                           min_track_score=0.3)
    tracker = Tracker(config)
    strong = _box(300)
    assert tracker.update([strong], [0.9], [0], 0.0).tolist() == [1]
    # a false positive: one detection over new_score, then weak ones continue it
    seen = [tracker.update([strong, _box(100)], [0.9, s], [0, 0], k / 10).tolist()
            for k, s in enumerate([0.45, 0.35] + [0.15] * 6, start=1)]
    # mean 0.45 (tentative), 0.4, 0.32, 0.275, ... 0.21
    assert [ids[1] for ids in seen] == [0, 2, 2] + [0] * 5
    assert all(ids[0] == 1 for ids in seen)  # the strong track continued all along
    assert len(tracker.tracks) == 2  # the weak track is kept: no new track per detection
    # strong again: the same id shows once the mean is back over 0.3
    again = [tracker.update([strong, _box(100)], [0.9, 0.9], [0, 0], k / 10)[1]
             for k in range(9, 12)]
    assert again == [0, 2, 2]  # mean 0.29, 0.35, 0.40


def test_a_strong_track_keeps_its_id_through_weak_detections() -> None:
    tracker = Tracker(TrackerConfig(min_track_score=0.3))
    for k in range(5):
        tracker.update([_box(100 + 2 * k)], [0.9], [0], k / 10)
    assert [int(tracker.update([_box(110 + 2 * k)], [0.15], [0], 0.5 + k / 10)[0])
            for k in range(5)] == [1] * 5


def test_min_track_score_off_gives_every_confirmed_track_an_id() -> None:
    tracker = Tracker(TrackerConfig(min_track_score=0.0, new_score=0.4))
    tracker.update([_box(300)], [0.9], [0], 0.0)
    ids = [tracker.update([_box(300), _box(100)], [0.9, s], [0, 0], k / 10)[1]
           for k, s in enumerate([0.45, 0.3, 0.15, 0.15], start=1)]
    assert ids == [0, 2, 2, 2]


def _noisy_frames(seed: int = 4) -> tuple[list[FrameDetections], np.ndarray]:
    rng = np.random.default_rng(seed)
    truth, frames = [], []
    for k in range(60):
        box = np.array(_box(50 + 3 * k))
        truth.append(box)
        noisy = box + rng.normal(0.0, 2.0, 4)
        frames.append(FrameDetections(k + 1, k / 30, noisy[None, :], np.array([0.9]),
                                      np.array([2])))
    return frames, np.array(truth)


def test_kalman_boxes_are_the_filtered_track_boxes_and_closer_to_the_truth() -> None:
    frames, truth = _noisy_frames()
    plain = track_frames(frames, TrackerConfig(kalman_boxes=False))
    smooth = track_frames(frames, TrackerConfig(kalman_boxes=True))
    assert [r[:2] for r in plain] == [r[:2] for r in smooth]  # same frames and ids
    detected = np.array([r[2:6] for r in plain])
    filtered = np.array([r[2:6] for r in smooth])
    assert np.allclose(detected, np.array([f.boxes[0] for f in frames]))
    assert not np.allclose(filtered[10:], detected[10:])
    error_detected = np.abs(detected[10:] - truth[10:]).mean()
    error_filtered = np.abs(filtered[10:] - truth[10:]).mean()
    assert error_filtered < 0.8 * error_detected


def test_filtered_boxes_keep_unmatched_detections_boxes() -> None:
    tracker = Tracker(TrackerConfig(kalman_boxes=True, new_score=0.4))
    tracker.update([_box(100)], [0.9], [0], 0.0)
    boxes = np.array([_box(103), _box(400), _box(200)])
    ids = tracker.update(boxes, [0.9, 0.9, 0.05], [0, 0, 0], 0.1)
    assert ids.tolist() == [1, 0, 0]
    assert tracker.filtered_boxes.shape == (3, 4)
    assert np.array_equal(tracker.filtered_boxes[1:], boxes[1:])
    assert not np.array_equal(tracker.filtered_boxes[0], boxes[0])
    off = Tracker(TrackerConfig(kalman_boxes=False))
    off.update(boxes, [0.9, 0.9, 0.9], [0, 0, 0], 0.0)
    assert np.array_equal(off.filtered_boxes, boxes)


def test_option_validation() -> None:
    with pytest.raises(ConfigError, match='min_track_score'):
        TrackerConfig(min_track_score=1.5)
