"""The rclpy detector node end to end (needs ROS 2 Humble/Jazzy sourced, skipped elsewhere).

A synthetic camera node publishes raw and compressed images; the detector node (one engine,
two cameras, in a namespace) must publish Detection2DArray on each camera's topic with the
source headers, LabelInfo (transient local) and diagnostics, validate runtime parameters, and
shut down without leaving threads behind.
"""
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from ..conftest import export_tiny_model, missing_modules, optional_module, spin_until

rclpy = optional_module('rclpy')
pytestmark = pytest.mark.skipif(
    bool(missing_modules('rclpy', 'vision_msgs.msg', 'onnxruntime')),
    reason=f'{", ".join(missing_modules("rclpy", "vision_msgs.msg", "onnxruntime"))} not '
           'installed: these tests need a sourced ROS 2 (Humble or Jazzy) with vision_msgs')

NAMES = ['box', 'cone', 'ball']
NAMESPACE = '/rostest'
CAMERAS = {'cameras': ['front', 'left'], 'front.topic': '/rostest_cams/front/image_raw',
           'left.topic': '/rostest_cams/left/image_raw', 'left.transport': 'compressed'}


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES)


def _overrides(model_path, **extra):
    from rclpy.parameter import Parameter

    values = {'model': str(model_path), **CAMERAS, 'conf_threshold': 0.3,
              'diagnostics_period': 0.2, **extra}
    return [Parameter(name, value=value) for name, value in values.items()]


def _detector(context, model_path, **extra):
    from darknet53_ros.ros.node import DetectorNode

    return DetectorNode(context=context, namespace=NAMESPACE, share_dir=False,
                        parameter_overrides=_overrides(model_path, **extra))


def test_detections_on_each_camera_topic(context, model_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    import vision_msgs.msg as vision

    from darknet53_ros.io.messages import (
        MessageTypes,
        compressed_image_msg,
        header_msg,
        image_msg,
    )

    detector = _detector(context, model_path)
    helper = rclpy.create_node('synthetic_cameras', context=context)
    types = MessageTypes.from_rclpy()
    received = {'front': [], 'left': [], 'label_info': [], 'left_label_info': [],
                'diagnostics': [], 'image': [], 'jpeg': []}
    helper.create_subscription(vision.Detection2DArray, f'{NAMESPACE}/front/detections',
                               received['front'].append, 10)
    helper.create_subscription(vision.Detection2DArray, f'{NAMESPACE}/left/detections',
                               received['left'].append, 10)
    viewer = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # as published
    helper.create_subscription(Image, f'{NAMESPACE}/front/detections/image',
                               received['image'].append, viewer)
    helper.create_subscription(CompressedImage, f'{NAMESPACE}/left/detections/image/compressed',
                               received['jpeg'].append, viewer)
    helper.create_subscription(DiagnosticArray, '/diagnostics', received['diagnostics'].append,
                               10)
    if hasattr(vision, 'LabelInfo'):  # NAME/label_info beside NAME/detections
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        helper.create_subscription(vision.LabelInfo, f'{NAMESPACE}/front/label_info',
                                   received['label_info'].append, latched)
        helper.create_subscription(vision.LabelInfo, f'{NAMESPACE}/left/label_info',
                                   received['left_label_info'].append, latched)
    raw_pub = helper.create_publisher(Image, '/rostest_cams/front/image_raw', 10)
    jpeg_pub = helper.create_publisher(CompressedImage,
                                       '/rostest_cams/left/image_raw/compressed', 10)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    sent = {'n': 0}

    def publish():
        sent['n'] += 1
        stamp = 1_700_000_000_000_000_000 + sent['n'] * 1_000_000
        raw_pub.publish(image_msg(types, header_msg(types, stamp, 'front_optical'), frame))
        jpeg_pub.publish(compressed_image_msg(types, header_msg(types, stamp, 'left_optical'),
                                              frame[:96, :128]))

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(detector.node)
    executor.add_node(helper)
    try:
        ok = spin_until(executor, lambda: all(received[k] for k in (
            'front', 'left', 'diagnostics', 'image', 'jpeg')), each=publish)
        assert ok, {k: len(v) for k, v in received.items()}
        for camera, frame_id in (('front', 'front_optical'), ('left', 'left_optical')):
            msg = received[camera][0]
            assert msg.header.frame_id == frame_id
            assert msg.header.stamp.sec == 1_700_000_000
            for det in msg.detections:
                assert det.results[0].hypothesis.class_id in NAMES
                assert det.results[0].hypothesis.score >= 0.3
        image = received['image'][0]  # drawn off the inference thread, sent as CDR bytes
        # annotated_scale 0.5 by default
        assert (image.height, image.width, image.encoding) == (60, 80, 'bgr8')
        assert image.header.frame_id == 'front_optical'
        jpeg = received['jpeg'][0]
        assert jpeg.format == 'bgr8; jpeg compressed bgr8' and jpeg.header.frame_id == \
            'left_optical'
        assert cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8),
                            cv2.IMREAD_COLOR).shape == (48, 64, 3)
        names = {s.name for d in received['diagnostics'] for s in d.status}
        assert 'darknet53_detector: front' in names  # node name, as diagnostic_updater
        if hasattr(vision, 'LabelInfo'):
            assert spin_until(executor, lambda: received['label_info']
                               and received['left_label_info'], timeout=5.0)
            assert [c.class_name for c in received['label_info'][0].class_map] == NAMES
    finally:
        executor.shutdown()
        helper.destroy_node()
        detector.destroy()
    assert not any(t.name == 'darknet53-inference' and t.is_alive()
                   for t in threading.enumerate())


def test_runtime_parameters_are_validated(context, model_path):
    from rclpy.parameter import Parameter

    detector = _detector(context, model_path)
    try:
        node = detector.node
        (result,) = node.set_parameters([Parameter('conf_threshold', value=1.5)])
        assert not result.successful
        (result,) = node.set_parameters([Parameter('nms_threshold', value=0.3)])
        assert result.successful
        assert detector.core.detector.config.nms_threshold == pytest.approx(0.3)
        (result,) = node.set_parameters([Parameter('max_batch', value=2)])
        assert not result.successful  # read-only: needs a restart
        (result,) = node.set_parameters([Parameter('front.conf_threshold', value=0.6)])
        assert result.successful
        assert detector.core.cameras['front'].conf_threshold == pytest.approx(0.6)
        assert node.get_parameter('left.topic').value == '/rostest_cams/left/image_raw'
        assert node.describe_parameter('left.topic').read_only
        (result,) = node.set_parameters([Parameter('class_id_format', value='label')])
        assert not result.successful and 'class_id_format' in result.reason
        descriptor = node.describe_parameter('conf_threshold')
        assert descriptor.floating_point_range[0].to_value == 1.0 and descriptor.description
    finally:
        detector.destroy()


def test_bad_camera_parameter_fails_cleanly(context, model_path):
    from darknet53_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="parameter cameras: camera name '1front'"):
        _detector(context, model_path, cameras=['1front'])
    with pytest.raises(ConfigError, match="parameter cameras: 'front:/x' is the retired"):
        _detector(context, model_path, cameras=['front:/x'])
    assert not any(t.name == 'darknet53-inference' and t.is_alive()
                   for t in threading.enumerate())


def test_main_exits_on_shutdown(model_path, monkeypatch):
    """main() in the Humble/Jazzy form returns after an external shutdown."""
    from darknet53_ros.ros import node as node_module

    args = ['--ros-args', '-r', f'__ns:={NAMESPACE}', '-p', f'model:={model_path}']
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault('code', node_module.main(args)))
    thread.start()
    deadline = time.monotonic() + 20.0
    while not rclpy.ok() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # let the node finish starting and enter spin()
    rclpy.try_shutdown()  # the default context, as a SIGINT handler would
    thread.join(30)
    assert not thread.is_alive() and result.get('code') == 0


def test_lifecycle_node_every_transition(context, model_path):
    """The managed node through the lifecycle services, as `ros2 lifecycle set` drives it."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.executors import SingleThreadedExecutor

    from darknet53_ros.ros.lifecycle_node import LifecycleDetectorNode

    detector = LifecycleDetectorNode(context=context, namespace=NAMESPACE, share_dir=False,
                                     parameter_overrides=_overrides(model_path))
    helper = rclpy.create_node('lifecycle_client', context=context)
    name = f'{NAMESPACE}/darknet53_detector'
    change = helper.create_client(ChangeState, f'{name}/change_state')
    get = helper.create_client(GetState, f'{name}/get_state')
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(detector.node)
    executor.add_node(helper)

    def call(client, request):
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(request)
        assert spin_until(executor, future.done, timeout=30.0)
        return future.result()

    def transition(transition_id):
        return call(change, ChangeState.Request(transition=Transition(id=transition_id)))

    def state():
        return call(get, GetState.Request()).current_state.label

    try:
        assert state() == 'unconfigured' and detector.core is None
        assert transition(Transition.TRANSITION_CONFIGURE).success
        assert state() == 'inactive' and detector.core is not None
        assert not detector.core.running
        assert transition(Transition.TRANSITION_ACTIVATE).success
        assert state() == 'active' and detector.core.running
        assert transition(Transition.TRANSITION_DEACTIVATE).success
        assert state() == 'inactive' and not detector.core.running
        assert not _inference_threads()
        assert transition(Transition.TRANSITION_CLEANUP).success
        assert state() == 'unconfigured' and detector.core is None
        assert transition(Transition.TRANSITION_CONFIGURE).success
        assert transition(Transition.TRANSITION_ACTIVATE).success
        assert transition(Transition.TRANSITION_ACTIVE_SHUTDOWN).success
        assert state() == 'finalized' and detector.state == 'finalized'
        assert not _inference_threads()
    finally:
        executor.shutdown()
        helper.destroy_node()
        detector.destroy()


def test_lifecycle_configure_failure_stays_unconfigured(context, model_path):
    from darknet53_ros.ros.lifecycle_node import LifecycleDetectorNode

    detector = LifecycleDetectorNode(context=context, share_dir=False,
                                     parameter_overrides=_overrides(model_path,
                                                                    model='/no/such.onnx'))
    try:
        assert detector.node.trigger_configure().to_label() == 'transition_failure'
        assert detector.state == 'unconfigured' and detector.core is None
    finally:
        detector.destroy()  # shutdown transition from unconfigured
    assert detector.state == 'finalized'


def _inference_threads():
    return [t for t in threading.enumerate() if t.name == 'darknet53-inference' and t.is_alive()]


def _node_process(model_path, *extra):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'darknet53_ros.ros.node', *extra, '--ros-args',
           '-r', f'__ns:={NAMESPACE}_sig', '-p', f'model:={model_path}',
           '-p', 'cameras:=[front]', '-p', 'front.topic:=/rostest_sig/front/image_raw']
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)


@pytest.mark.parametrize('signals,extra', [
    ((signal.SIGINT,), ()),
    ((signal.SIGINT, signal.SIGINT), ()),
    ((signal.SIGTERM,), ()),
    ((signal.SIGINT, signal.SIGINT), ('--lifecycle',)),
])
def test_node_process_exits_cleanly_on_signals(context, model_path, signals, extra):
    """detector_node in its own process, streamed to, then SIGINT/SIGTERM (once or twice in
    quick succession): exit 0, no traceback, nothing logged at ERROR."""
    from sensor_msgs.msg import Image

    from darknet53_ros.io.messages import MessageTypes, header_msg, image_msg

    proc = _node_process(model_path, *extra)
    helper = rclpy.create_node('signal_camera', context=context)
    pub = helper.create_publisher(Image, '/rostest_sig/front/image_raw', 10)
    types = MessageTypes.from_rclpy()
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    try:
        deadline = time.monotonic() + 20.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # (unsubscribed until configured+activated with --lifecycle)
            assert proc.poll() is None
        if '--lifecycle' in extra:
            assert pub.get_subscription_count() == 0  # starts unconfigured
        else:
            assert pub.get_subscription_count() == 1
            for _ in range(40):  # stream while the signals arrive
                pub.publish(image_msg(types, header_msg(types, helper.get_clock().now()
                                                        .nanoseconds, 'f'), frame))
                time.sleep(0.02)
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=20.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        helper.destroy_node()
    assert proc.returncode == 0, out
    for bad in ('Traceback', 'ERROR', 'terminate called', 'context is invalid',
                'Failed to publish'):
        assert bad not in out, out
