"""Tests for darknet53_ros.io.messages with every flavour of message classes (rclpy's where a
ROS 2 is sourced, rosbags' Humble and Jazzy typestores where rosbags is installed) and CDR
round trips through that flavour's serializer."""
import dataclasses

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.io.messages import (
    VISION_MSGS,
    MessageTypes,
    compressed_image_msg,
    detections_to_msg,
    diagnostic_array_msg,
    header_msg,
    image_msg,
    label_info_msg,
    stamp_to_ns,
    vision_msgs_definitions,
)

from ..conftest import cdr_round_trip, requires
from ..hypo import given, settings, st

STAMP = 1_700_000_123_456_789_012


@pytest.fixture(scope='module', params=['rclpy', 'humble', 'jazzy'])
def types(request):
    """rclpy's classes, or rosbags' typestore of a distro (skipped where unavailable)."""
    if request.param == 'rclpy':
        try:
            return MessageTypes.from_rclpy()
        except ConfigError as exc:
            pytest.skip(f'rclpy messages not importable: {exc}')
    pytest.importorskip('rosbags', reason='rosbags not installed')
    return MessageTypes.from_rosbags(request.param)


def test_all_classes_available(types):
    assert types.missing() == []
    for name in VISION_MSGS:
        cls = getattr(types, name)
        if types.flavor == 'rosbags':
            assert cls.__msgtype__ == f'vision_msgs/msg/{name}'
        else:
            assert types.flavor == 'rclpy' and cls.__module__.startswith('vision_msgs.msg')
            assert cls.__name__ == name


@requires('rosbags')
def test_definitions_match_vision_msgs_4_layout():
    defs = vision_msgs_definitions()
    assert set(defs) == {f'vision_msgs/msg/{n}' for n in VISION_MSGS}
    store = MessageTypes.from_rosbags().typestore
    fields = {name: [f.name for f in dataclasses.fields(store.types[name])
                     if not f.name.startswith('__')] for name in defs}  # 0.9: __msgtype__
    assert fields['vision_msgs/msg/Detection2D'] == ['header', 'results', 'bbox', 'id']
    assert fields['vision_msgs/msg/Detection2DArray'] == ['header', 'detections']
    assert fields['vision_msgs/msg/BoundingBox2D'] == ['center', 'size_x', 'size_y']
    assert fields['vision_msgs/msg/Pose2D'] == ['position', 'theta']
    assert fields['vision_msgs/msg/ObjectHypothesisWithPose'] == ['hypothesis', 'pose']
    assert fields['vision_msgs/msg/ObjectHypothesis'] == ['class_id', 'score']
    assert fields['vision_msgs/msg/LabelInfo'] == ['header', 'class_map', 'threshold']
    assert fields['vision_msgs/msg/VisionClass'] == ['class_id', 'class_name']


def test_header_and_stamp(types):
    header = header_msg(types, STAMP, 'cam0')
    assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_123, 456_789_012)
    assert stamp_to_ns(header) == STAMP and header.frame_id == 'cam0'


def test_detections_round_trip_through_cdr(types):
    header = header_msg(types, STAMP, 'front_camera')
    boxes = np.array([[10, 20, 50, 100], [0.5, 1.5, 2.5, 3.0]], np.float32)
    msg = detections_to_msg(types, header, boxes, [0.9, 0.25], [2, 7],
                            names=['person', 'bicycle', 'car'])
    back = cdr_round_trip(types, msg)
    assert back.header.frame_id == 'front_camera' and stamp_to_ns(back.header) == STAMP
    assert len(back.detections) == 2
    first, second = back.detections
    assert first.header.frame_id == 'front_camera' and first.id == ''
    assert first.bbox.center.position.x == 30.0 and first.bbox.center.position.y == 60.0
    assert first.bbox.center.theta == 0.0
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 80.0)
    assert len(first.results) == 1
    assert first.results[0].hypothesis.class_id == 'car'
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert first.results[0].pose.pose.orientation.w == 1.0
    assert second.results[0].hypothesis.class_id == '7'  # beyond the names list
    assert second.bbox.size_x == pytest.approx(2.0)


def test_index_class_ids_and_non_finite_rows(types):
    header = header_msg(types, 0)
    boxes = [[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, 2, 2]]
    msg = detections_to_msg(types, header, boxes, [0.5, 0.5, np.inf], [0, 1, 2],
                            names=['a', 'b', 'c'], class_id_format='index')
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ['0']
    with pytest.raises(ConfigError, match='class_id_format'):
        detections_to_msg(types, header, [], [], [], class_id_format='label')
    with pytest.raises(ValueError, match='scores'):
        detections_to_msg(types, header, [[0, 0, 1, 1]], [0.1, 0.2], [0])


def test_empty_detections_still_an_array(types):
    header = header_msg(types, STAMP, 'cam')
    for boxes in ([], np.zeros((0, 4), np.float32)):
        msg = detections_to_msg(types, header, boxes, np.zeros(0), np.zeros(0, np.int64))
        back = cdr_round_trip(types, msg)
        assert isinstance(back, types.Detection2DArray)
        assert back.detections == [] and back.header.frame_id == 'cam'


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4),
                          st.floats(0, 1e4), st.floats(0, 1e4), st.floats(0, 1)),
                min_size=0, max_size=8))
def test_center_and_size_math(message_types, rows):
    types = message_types
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in rows], np.float64).reshape(-1, 4)
    scores = np.array([s for *_, s in rows], np.float64)
    msg = detections_to_msg(types, header_msg(types, 1), boxes, scores, np.zeros(len(rows)))
    back = cdr_round_trip(types, msg)
    for det, (x1, y1, x2, y2), score in zip(back.detections, boxes, scores):
        c = det.bbox.center.position
        assert c.x - det.bbox.size_x / 2 == pytest.approx(x1, abs=1e-6)
        assert c.x + det.bbox.size_x / 2 == pytest.approx(x2, abs=1e-6)
        assert c.y - det.bbox.size_y / 2 == pytest.approx(y1, abs=1e-6)
        assert c.y + det.bbox.size_y / 2 == pytest.approx(y2, abs=1e-6)
        assert det.results[0].hypothesis.score == score


def test_label_info(types):
    msg = label_info_msg(types, header_msg(types, STAMP, 'cam'), ['person', 'car'], 0.25)
    back = cdr_round_trip(types, msg)
    assert [(c.class_id, c.class_name) for c in back.class_map] == [(0, 'person'), (1, 'car')]
    assert back.threshold == pytest.approx(0.25)
    no_label_info = MessageTypes(**{**types.__dict__, 'LabelInfo': None})
    with pytest.raises(ConfigError, match='LabelInfo'):
        label_info_msg(no_label_info, None, ['a'], 0.5)


def test_diagnostic_array(types):
    stats = {
        'darknet53: /cam0': {'level': 'WARN', 'message': 'dropping frames', 'received': 10,
                             'processed_hz': 14.98765432, 'healthy': False,
                             'dropped': {'stale': 2, 'superseded': 1}},
        'darknet53: /cam1': {'received': 3, 'level': 2},
        'darknet53: backend': {},
    }
    msg = diagnostic_array_msg(types, header_msg(types, STAMP), stats, hardware_id='gpu0')
    back = cdr_round_trip(types, msg)
    first, second, third = back.status
    assert first.level == types.DiagnosticStatus.WARN and first.message == 'dropping frames'
    assert first.name == 'darknet53: /cam0' and first.hardware_id == 'gpu0'
    assert {kv.key: kv.value for kv in first.values} == {
        'received': '10', 'processed_hz': '14.9877', 'healthy': 'false',
        'dropped': 'stale=2, superseded=1'}
    assert second.level == types.DiagnosticStatus.ERROR
    assert third.level == types.DiagnosticStatus.OK and third.values == []
    with pytest.raises(ConfigError, match='level'):
        diagnostic_array_msg(types, header_msg(types, 0), {'x': {'level': 7}})


def test_image_messages(types):
    from darknet53_ros.io.encodings import compressed_msg_to_bgr, image_msg_to_bgr

    bgr = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    header = header_msg(types, STAMP, 'cam')
    back = cdr_round_trip(types, image_msg(types, header, bgr, 'rgb8'))
    assert back.encoding == 'rgb8' and back.step == 30
    np.testing.assert_array_equal(image_msg_to_bgr(back), bgr)
    back = cdr_round_trip(types, compressed_image_msg(types, header, bgr, 'png'))
    np.testing.assert_array_equal(compressed_msg_to_bgr(back), bgr)


@requires('rosbags')
def test_unknown_distro():
    with pytest.raises(ConfigError, match='distro'):
        MessageTypes.from_rosbags('nonexistent')


def test_from_rclpy_without_ros_raises_config_error():
    try:
        import rclpy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match='ROS 2'):
            MessageTypes.from_rclpy()
    else:
        types = MessageTypes.from_rclpy()
        assert types.flavor == 'rclpy'
        msg = detections_to_msg(types, header_msg(types, STAMP, 'cam'), [[0, 0, 2, 4]], [0.5],
                                [0])
        assert msg.detections[0].bbox.size_y == 4.0
