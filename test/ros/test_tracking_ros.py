"""Track ids on a real ROS 2 (skipped without a sourced Humble/Jazzy with vision_msgs): the
detector node with ``tracking: true`` and ``tracker_node`` on a foreign Detection2DArray
stream, each following one object across 100 frames with a dropped frame in the middle."""
import time

import numpy as np
import pytest

from ..conftest import missing_modules, optional_module

rclpy = optional_module('rclpy')
_MISSING = missing_modules('rclpy', 'vision_msgs.msg', 'onnxruntime', 'cv2')
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f'{", ".join(_MISSING)} not installed: these tests need a sourced '
    'ROS 2 (Humble or Jazzy) with vision_msgs')

PERIOD_NS = 33_333_333
START_NS = 1_700_000_000_000_000_000


def _send_and_wait(executor, publish, received, frames=100, dropped=50, timeout=10.0):
    """Publish frame k, wait for its answer, then the next (frame ``dropped`` is skipped)."""
    for k in range(frames):
        if k == dropped:
            continue
        want = len(received) + 1
        publish(k)
        deadline = time.monotonic() + timeout
        while len(received) < want and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(received) == want, f'no answer to frame {k}'


def test_tracker_node_republishes_a_foreign_stream_with_ids(context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    import vision_msgs.msg as vision

    from darknet53_ros.io.messages import MessageTypes, detections_to_msg, header_msg
    from darknet53_ros.ros.tracker_node import TrackerNode

    node = TrackerNode(context=context, parameter_overrides=[
        Parameter('topics', value=['/foreign/detections'])])
    helper = rclpy.create_node('foreign_detector', context=context)
    types = MessageTypes.from_rclpy()
    received = []
    helper.create_subscription(vision.Detection2DArray, '/foreign/detections/tracked',
                               received.append, 10)
    pub = helper.create_publisher(vision.Detection2DArray, '/foreign/detections', 10)

    def publish(k):
        x = 20.0 + 3 * k
        pub.publish(detections_to_msg(types, header_msg(types, START_NS + k * PERIOD_NS, 'cam'),
                                      [[x, 40.0, x + 30, 100.0]], [0.9], [3]))

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node.node)
    executor.add_node(helper)
    try:
        time.sleep(0.5)  # discovery
        _send_and_wait(executor, publish, received)
    finally:
        executor.shutdown()
        helper.destroy_node()
        node.destroy()
    assert len(received) == 99
    assert {m.detections[0].id for m in received} == {'1'}
    assert received[0].detections[0].results[0].hypothesis.score == pytest.approx(0.9)


def _cone_frames():
    """A traffic cone (the demo model finds them best) crossing a plain floor."""
    from darknet53_ros.training.synthetic.objects import render_object

    patch, mask = render_object(1, 40, 64, np.random.default_rng(0))
    background = np.full((256, 320, 3), 110, np.uint8)

    def frame(k):
        image = background.copy()
        x = 20 + 2 * k
        region = image[150:214, x:x + 40]
        region[mask > 0] = patch[mask > 0]
        return image
    return frame


def test_detector_node_with_tracking_keeps_one_id(context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    import vision_msgs.msg as vision

    from darknet53_ros.io.messages import MessageTypes, header_msg, image_msg
    from darknet53_ros.ros.node import DetectorNode

    detector = DetectorNode(context=context, share_dir=False, parameter_overrides=[
        Parameter('cameras', value=['front']),
        Parameter('front.topic', value='/trk_cams/front/image_raw'),
        Parameter('front.tracking', value=True), Parameter('conf_threshold', value=0.1),
        Parameter('max_frame_age', value=0.0), Parameter('front.reliability', value='reliable')])
    helper = rclpy.create_node('moving_cone', context=context)
    types = MessageTypes.from_rclpy()
    received = []
    helper.create_subscription(vision.Detection2DArray, 'front/detections', received.append, 10)
    pub = helper.create_publisher(Image, '/trk_cams/front/image_raw', 10)
    frame = _cone_frames()

    def publish(k):
        pub.publish(image_msg(types, header_msg(types, START_NS + k * PERIOD_NS, 'front'),
                              frame(k)))

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(detector.node)
    executor.add_node(helper)
    try:
        time.sleep(0.5)
        _send_and_wait(executor, publish, received, timeout=30.0)
    finally:
        executor.shutdown()
        helper.destroy_node()
        detector.destroy()
    best = [max(m.detections, key=lambda d: d.results[0].hypothesis.score).id
            for m in received if m.detections]
    tracked = [i for i in best if i]
    assert len(tracked) >= 90, best
    assert len(set(tracked)) == 1, best
