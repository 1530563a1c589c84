"""tracker_node's behaviour without ROS: ids into any Detection2DArray stream."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from darknet53_ros.ros.detection_tracks import ArrayTracker, detection_arrays


def _array(types: Any, k: int, stamp_ns: int) -> Any:
    from darknet53_ros.io.messages import detections_to_msg, header_msg

    x = 20.0 + 3 * k
    return detections_to_msg(types, header_msg(types, stamp_ns, 'cam'),
                             [[x, 40.0, x + 30, 100.0], [300 - x, 50.0, 330 - x, 90.0]],
                             [0.9, 0.8], [0, 1], ['person', 'ball'])


def test_foreign_stream_keeps_ids_through_a_dropped_message(message_types: Any) -> None:
    types = message_types
    tracker = ArrayTracker()
    seen = {'a': [], 'b': []}  # type: dict[str, list[list[str]]]
    for k in range(100):
        if k == 50:
            continue
        for stream in seen:
            msg = tracker.process(stream, _array(types, k, 10**12 + k * 33_333_333))
            seen[stream].append([d.id for d in msg.detections])
    for stream in seen:
        assert {tuple(ids) for ids in seen[stream]} == {('1', '2')}
    boxes, scores, classes = detection_arrays(_array(types, 0, 1))
    assert boxes.tolist()[0] == [20.0, 40.0, 50.0, 100.0]
    assert scores.tolist() == [0.9, 0.8] and classes == ['person', 'ball']


def test_vision_msgs_3_layout_and_zero_stamps() -> None:
    """vision_msgs 3 (Foxy/Galactic): centre x/y, flat hypothesis id/score; a zero stamp
    takes the fallback clock."""
    def msg(x: float) -> Any:
        det = SimpleNamespace(
            bbox=SimpleNamespace(center=SimpleNamespace(x=x, y=50.0, theta=0.0),
                                 size_x=20.0, size_y=40.0),
            results=[SimpleNamespace(id='7', score=0.95)], id='')
        return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0)),
                               detections=[det])
    tracker = ArrayTracker()
    ids = [tracker.process('old', msg(100 + 2 * k), fallback_stamp_ns=k * 10**8)
           .detections[0].id for k in range(5)]
    assert ids == ['1'] * 5
    tracker.reset()
    assert tracker.process('old', msg(10), 0).detections[0].id == '1'
