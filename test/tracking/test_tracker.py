"""The tracker: stable ids through gaps and dropped frames, time-based ageing, classes."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.tracking import CameraTrackers, Tracker, TrackerConfig
from darknet53_ros.tracking.kalman import BoxKalman


def _box(cx: float, cy: float = 100.0, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_kalman_follows_constant_velocity_in_time() -> None:
    kf = BoxKalman()
    mean, cov = kf.initiate(np.array([[100.0, 50.0, 20.0, 40.0]]))
    for k in range(1, 20):  # 60 px/s at 10 fps
        mean, cov = kf.predict(mean, cov, 0.1)
        mean, cov = kf.update(mean, cov, np.array([[100.0 + 6 * k, 50.0, 20.0, 40.0]]))
    assert mean[0, 4] == pytest.approx(60.0, rel=0.05)
    one, _ = kf.predict(mean, cov, 0.5)
    assert one[0, 0] == pytest.approx(mean[0, 0] + 0.5 * mean[0, 4])
    _, cov_long = kf.predict(mean, cov, 1.0)
    assert cov_long[0, 0, 0] > cov[0, 0, 0]


def test_one_object_one_id_across_100_frames_with_a_dropped_frame() -> None:
    tracker = Tracker()
    ids = []
    for k in range(100):
        if k == 50:
            continue  # dropped frame: the next stamp is 2/30 s later
        out = tracker.update([_box(50 + 3 * k)], [0.9], [3], k / 30)
        ids.append(int(out[0]))
    assert ids[0] == 1 and set(ids) == {1}


def test_ids_survive_a_short_occlusion_and_expire_after_max_lost_s() -> None:
    tracker = Tracker(TrackerConfig(max_lost_s=1.0))
    for k in range(10):
        assert tracker.update([_box(100 + 5 * k)], [0.9], [0], k * 0.1)[0] == 1
    # unseen for 0.5 s (behind an occluder), seen again where it would be
    assert tracker.update([_box(100 + 5 * 15)], [0.9], [0], 1.5)[0] == 1
    # unseen for 2 s: a new track (tentative for min_hits detections, then id 2)
    assert tracker.update([_box(100 + 5 * 35)], [0.9], [0], 3.5)[0] == 0
    assert tracker.update([_box(100 + 5 * 36)], [0.9], [0], 3.6)[0] == 2


def test_same_motion_at_other_frame_rates_gives_the_same_ids() -> None:
    """Ageing and motion are in seconds: 5, 10 and 30 fps of one scene agree."""
    def run(fps: float) -> list[int]:
        tracker = Tracker()
        seen = []
        for k in range(int(4 * fps)):
            t = k / fps
            boxes = [_box(50 + 40 * t), _box(300 - 40 * t, 110)]
            seen.append(tracker.update(boxes, [0.9, 0.8], [1, 1], t).tolist())
        return sorted({i for frame in seen for i in frame})
    assert run(5.0) == run(10.0) == run(30.0) == [1, 2]


def test_crossing_objects_of_different_classes_keep_their_ids() -> None:
    tracker = Tracker()
    first = None
    for k in range(60):
        t = k / 15
        boxes = [_box(60 + 50 * t), _box(260 - 50 * t, 105)]
        ids = tracker.update(boxes, [0.9, 0.9], [0, 3], t).tolist()
        first = first or ids
        assert ids == [1, 2]


def test_low_score_detections_continue_tracks_but_start_none() -> None:
    tracker = Tracker()
    tracker.update([_box(100)], [0.9], [0], 0.0)
    assert tracker.update([_box(102)], [0.15], [0], 0.1)[0] == 1  # second stage
    assert tracker.update([_box(400)], [0.15], [0], 0.2)[0] == 0  # too low to start


def test_class_aware_matching() -> None:
    tracker = Tracker()
    tracker.update([_box(100)], [0.9], [0], 0.0)
    assert tracker.update([_box(101)], [0.9], [2], 0.1)[0] != 1
    agnostic = Tracker(TrackerConfig(class_aware=False))
    agnostic.update([_box(100)], [0.9], [0], 0.0)
    assert agnostic.update([_box(101)], [0.9], [2], 0.1)[0] == 1


def test_time_going_backwards_clears_tracks_ids_continue() -> None:
    tracker = Tracker()
    tracker.update([_box(100)], [0.9], [0], 5.0)
    assert tracker.update([_box(100)], [0.9], [0], 1.0)[0] == 2  # first frame again: at once


def test_deterministic_and_shapes() -> None:
    rng = np.random.default_rng(3)
    frames = [(rng.uniform(0, 300, (8, 2)), rng.uniform(0.05, 1, 8), rng.integers(0, 3, 8))
              for _ in range(30)]

    def run() -> list[list[int]]:
        tracker = Tracker()
        out = []
        for k, (xy, s, c) in enumerate(frames):
            boxes = np.concatenate([xy, xy + 30], axis=1)
            out.append(tracker.update(boxes, s, c, k / 10).tolist())
        return out
    assert run() == run()
    tracker = Tracker()
    assert tracker.update(np.zeros((0, 4)), [], [], 0.0).shape == (0,)
    with pytest.raises(ValueError):
        tracker.update([_box(1)], [0.5, 0.6], [0], 0.1)
    nan = tracker.update([[np.nan, 0, 1, 1]], [0.9], [0], 0.2)
    assert nan.tolist() == [0]


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        TrackerConfig(high_score=1.5)
    with pytest.raises(ConfigError):
        TrackerConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ConfigError):
        TrackerConfig(min_hits=0)
    with pytest.raises(ConfigError, match='unknown'):
        TrackerConfig.from_dict({'track_buffer': 30})
    assert TrackerConfig.from_dict({'max_lost_s': 2.0}).max_lost_s == 2.0


def test_camera_trackers_give_string_ids_per_camera() -> None:
    cameras = CameraTrackers()
    assert cameras.assign('front', [_box(100)], [0.9], [0], 0) == ['1']
    assert cameras.assign('rear', [_box(100), _box(300)], [0.9, 0.9], [0, 0], 0) == ['1', '2']
    assert cameras.assign('front', [_box(103), _box(400)], [0.9, 0.9], [0, 0],
                          33_000_000) == ['1', '']
    assert cameras.counts() == {'front': 1, 'rear': 2}
    cameras.reset()
    assert cameras.assign('front', [_box(200)], [0.9], [0], 10**9) == ['1']
