"""ROS conventions on a real ROS 2 (Humble/Jazzy sourced; skipped elsewhere): per-camera
parameters through ``ros2 param``, a lifecycle node reloaded while unconfigured, QoS overrides
as ``ros2 topic info -v`` reports them, a remapped compressed camera, ``NAME/label_info`` in
both designs and bring-up / reset / bring-up again by Nav2's ``lifecycle_manager``.
"""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ..conftest import export_tiny_model, missing_modules, optional_module, spin_until

rclpy = optional_module('rclpy')
_MISSING = missing_modules('rclpy', 'vision_msgs.msg', 'onnxruntime', 'onnx')
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f'{", ".join(_MISSING)} not installed: these tests need a sourced '
                           'ROS 2 (Humble or Jazzy) with vision_msgs, and onnx for the models')

NAMES = ['box', 'cone', 'ball']
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Two models: three classes, and two classes (the model switched to at runtime)."""
    root = tmp_path_factory.mktemp('models')
    return (export_tiny_model(root / 'three.onnx', NAMES),
            export_tiny_model(root / 'two.onnx', ['a', 'b'], seed=1))


def _parameters(values):
    from rclpy.parameter import Parameter

    return [Parameter(name, value=value) for name, value in values.items()]


def _executor(context, *nodes):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    return executor


def _latched():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _jpeg(stamp_ns, frame_id='cam'):
    from darknet53_ros.io.messages import MessageTypes, compressed_image_msg, header_msg

    types = MessageTypes.from_rclpy()
    image = np.random.default_rng(stamp_ns % 7).integers(0, 255, (96, 128, 3), np.uint8)
    return compressed_image_msg(types, header_msg(types, stamp_ns, frame_id), image)


# -- parameters of the lifecycle node ----------------------------------------------------------
def test_lifecycle_parameters_reload_while_unconfigured(context, models):
    """Parameters applied at configure are writable while unconfigured (validated at once),
    refused while configured, and a cleanup + configure loads the new values; a camera added to
    ``cameras`` gets its NAME.* parameters at once."""
    from rclpy.parameter import Parameter

    from darknet53_ros.ros.lifecycle_node import LifecycleDetectorNode

    three, two = models
    detector = LifecycleDetectorNode(
        context=context, namespace='/rostest_lc', share_dir=False,
        parameter_overrides=_parameters({'model': str(three), 'cameras': ['front'],
                                         'front.transport': 'compressed'}))
    node = detector.node
    try:
        assert node.get_parameter('front.transport').value == 'compressed'
        assert not node.describe_parameter('model').read_only  # writable while unconfigured
        (bad,) = node.set_parameters([Parameter('front.transport', value='zip')])
        assert not bad.successful and 'parameter front.transport' in bad.reason
        (ok,) = node.set_parameters([Parameter('cameras', value=['front', 'rear'])])
        assert ok.successful and node.get_parameter('rear.topic').value == 'rear/image_raw'
        (ok,) = node.set_parameters([Parameter('rear.topic', value='/cams/rear')])
        assert ok.successful
        assert node.trigger_configure().to_label() == 'transition_success'
        assert [c.input_topic for c in detector.core.params.cameras] == [
            '/rostest_lc/front/image_raw/compressed', '/cams/rear']
        assert detector.core.detector.names == tuple(NAMES)
        (refused,) = node.set_parameters([Parameter('model', value=str(two))])
        assert not refused.successful and 'applied at configure' in refused.reason
        (runtime,) = node.set_parameters([Parameter('rear.conf_threshold', value=0.5)])
        assert runtime.successful
        assert node.trigger_cleanup().to_label() == 'transition_success'
        assert detector.core is None  # engine released
        (ok,) = node.set_parameters([Parameter('model', value=str(two))])
        assert ok.successful
        assert node.trigger_configure().to_label() == 'transition_success'
        assert detector.core.detector.names == ('a', 'b')
        assert detector.core.cameras['rear'].conf_threshold == pytest.approx(0.5)
    finally:
        detector.destroy()


# -- QoS overrides -----------------------------------------------------------------------------
def _reliability_of_subscriptions(node, topic, expected, timeout=10.0):
    """The reliabilities of the subscriptions on ``topic`` in the graph, once they are
    ``expected`` (discovery is asynchronous) or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = {info.qos_profile.reliability.name.lower()
                 for info in node.get_subscriptions_info_by_topic(topic)}
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_qos_override_changes_the_subscription_reliability(context, models):
    from darknet53_ros.errors import ConfigError
    from darknet53_ros.ros.node import DetectorNode

    topic = '/rostest_qos/front/image_raw'
    values = {'model': str(models[0]), 'cameras': ['front'], 'front.topic': topic}
    plain = DetectorNode(context=context, node_name='qos_plain', share_dir=False,
                         parameter_overrides=_parameters(values))
    helper = rclpy.create_node('qos_probe', context=context)
    try:
        assert _reliability_of_subscriptions(helper, topic, {'best_effort'}) == {'best_effort'}
    finally:
        plain.destroy()
    override = f'qos_overrides.{topic}.subscription.reliability'
    detector = DetectorNode(context=context, node_name='qos_override', share_dir=False,
                            parameter_overrides=_parameters({**values, override: 'reliable'}))
    try:
        assert detector.node.get_parameter(override).value == 'reliable'
        assert _reliability_of_subscriptions(helper, topic, {'reliable'}) == {'reliable'}
        if shutil.which('ros2'):  # as a user sees it (no daemon: a fresh daemon's first
            out = ''  # answer can miss a node that has just appeared)
            for _ in range(3):
                out = subprocess.run(['ros2', 'topic', 'info', '-v', '--no-daemon',
                                      '--spin-time', '2', topic], capture_output=True,
                                     text=True, timeout=60).stdout
                if 'qos_override' in out:
                    break
            assert 'qos_override' in out and 'RELIABLE' in out, out
    finally:
        detector.destroy()
        helper.destroy_node()
    with pytest.raises(ConfigError, match=topic):
        DetectorNode(context=context, node_name='qos_bad', share_dir=False,
                     parameter_overrides=_parameters({**values, override: 'sometimes'}))


# -- image_transport naming: a remap of the base topic carries over ----------------------------
def test_remapped_compressed_camera_is_served(context, models):
    from sensor_msgs.msg import CompressedImage
    import vision_msgs.msg as vision

    from darknet53_ros.ros.node import DetectorNode

    detector = DetectorNode(
        context=context, namespace='/rostest_remap', share_dir=False,
        cli_args=['--ros-args', '-r', 'left/image_raw:=/remapped/left/image'],
        parameter_overrides=_parameters({'model': str(models[0]), 'cameras': ['left'],
                                         'left.transport': 'compressed'}))
    helper = rclpy.create_node('remap_camera', context=context)
    received = []
    helper.create_subscription(vision.Detection2DArray, '/rostest_remap/left/detections',
                               received.append, 10)
    publisher = helper.create_publisher(CompressedImage, '/remapped/left/image/compressed', 10)
    executor = _executor(context, detector.node, helper)
    sent = {'n': 0}

    def publish():
        sent['n'] += 1
        publisher.publish(_jpeg(1_700_000_000_000_000_000 + sent['n'], 'left_optical'))

    try:
        assert detector.core.cameras['left'].input_topic == '/remapped/left/image/compressed'
        assert helper.count_subscribers('/remapped/left/image/compressed') == 1
        assert helper.count_subscribers('/rostest_remap/left/image_raw/compressed') == 0
        assert spin_until(executor, lambda: received, each=publish)
        assert received[0].header.frame_id == 'left_optical'
    finally:
        executor.shutdown()
        helper.destroy_node()
        detector.destroy()


# -- LabelInfo beside each camera's detections, in both designs --------------------------------
@pytest.mark.parametrize('design', ['one_node', 'node_per_camera'])
def test_label_info_per_camera_in_both_designs(context, models, design):
    import vision_msgs.msg as vision

    from darknet53_ros.ros.node import DetectorNode

    if not hasattr(vision, 'LabelInfo'):
        pytest.skip('this vision_msgs has no LabelInfo')
    namespace = f'/rostest_label_{design}'
    common = {'model': str(models[0]), 'conf_threshold': 0.3}
    if design == 'one_node':
        nodes = [DetectorNode(context=context, namespace=namespace, share_dir=False,
                              parameter_overrides=_parameters({
                                  **common, 'cameras': ['front', 'left'],
                                  'left.conf_threshold': 0.6}))]
    else:  # as multi_camera.launch.py node_per_camera:=true: <ns>/<NAME>, no prefix
        nodes = [DetectorNode(context=context, node_name=f'darknet53_{name}',
                              namespace=f'{namespace}/{name}', share_dir=False,
                              parameter_overrides=_parameters({
                                  **common, 'cameras': [name], 'prefix_camera_name': False,
                                  f'{name}.topic': f'{namespace}/{name}/image_raw',
                                  f'{name}.conf_threshold': threshold}))
                 for name, threshold in (('front', -1.0), ('left', 0.6))]
    helper = rclpy.create_node('label_probe', context=context)
    received = {'front': [], 'left': []}
    for name, messages in received.items():
        helper.create_subscription(vision.LabelInfo, f'{namespace}/{name}/label_info',
                                   messages.append, _latched())
    executor = _executor(context, helper, *(n.node for n in nodes))
    try:
        assert spin_until(executor, lambda: all(received.values()), timeout=10.0)
        assert received['front'][0].threshold == pytest.approx(0.3)
        assert received['left'][0].threshold == pytest.approx(0.6)
        assert [c.class_name for c in received['left'][0].class_map] == NAMES
        assert not helper.get_publishers_info_by_topic(f'{namespace}/label_info')
    finally:
        executor.shutdown()
        helper.destroy_node()
        for node in nodes:
            node.destroy()


# -- the bond a lifecycle manager waits for ----------------------------------------------------
class _Spinner:
    """Spins an executor in a background thread while the test waits on a bond."""

    def __init__(self, executor):
        import threading

        self.executor, self.stop = executor, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5.0)


def test_bond_formed_at_activate_and_broken_at_deactivate(context, models):
    """The manager side of Nav2's bond (bondpy with the manager's settings: heartbeat timeout
    4 s, period 0.1 s) forms within bond_timeout / 2 after activate, holds past the timeout and
    sees the node break it at deactivate."""
    from rclpy.duration import Duration

    from darknet53_ros.ros.bond import bond_class, make_bond
    from darknet53_ros.ros.lifecycle_node import LifecycleDetectorNode

    cls = bond_class()
    if cls is None:
        pytest.skip('bondpy not installed: needs bond_core built')
    detector = LifecycleDetectorNode(
        context=context, namespace='/rostest_bond', share_dir=False,
        parameter_overrides=_parameters({'model': str(models[0]), 'cameras': ['front']}))
    manager = rclpy.create_node('lifecycle_manager_test', namespace='/rostest_bond',
                                context=context)
    executor = _executor(context, detector.node, manager)
    try:
        assert detector.node.trigger_configure().to_label() == 'transition_success'
        assert detector.node.trigger_activate().to_label() == 'transition_success'
        assert detector.bond.formed
        bond = make_bond(cls, manager, 'bond', 'darknet53_detector')
        bond.heartbeat_timeout = 4.0
        bond.heartbeat_period = 0.1
        bond.start()
        with _Spinner(executor):
            assert bond.wait_until_formed(Duration(seconds=2.0))
            time.sleep(5.0)
            assert not bond.is_broken()
        assert detector.node.trigger_deactivate().to_label() == 'transition_success'
        assert not detector.bond.formed
        with _Spinner(executor):
            assert bond.wait_until_broken(Duration(seconds=2.0))
        bond.shutdown()
    finally:
        executor.shutdown()
        manager.destroy_node()
        detector.destroy()


# -- Nav2's lifecycle manager ------------------------------------------------------------------
def _nav2_not_ready():
    missing = missing_modules('nav2_msgs.srv', 'lifecycle_msgs.srv')
    if missing:
        return f'{", ".join(missing)} not installed: needs nav2_lifecycle_manager built'
    ament = optional_module('ament_index_python.packages')
    try:
        ament.get_package_prefix('nav2_lifecycle_manager')
    except Exception:
        return 'nav2_lifecycle_manager is not installed in the sourced ROS 2'
    return ''


def _call(executor, client, request, timeout=30.0):
    assert client.wait_for_service(timeout_sec=timeout), client.srv_name
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout=timeout), client.srv_name
    return future.result()


def _wait_state(executor, client, label, timeout=60.0):
    from lifecycle_msgs.srv import GetState

    deadline = time.monotonic() + timeout
    state = ''
    while time.monotonic() < deadline:
        state = _call(executor, client, GetState.Request()).current_state.label
        if state == label:
            return state
        time.sleep(0.2)
    return state


def _stop(proc):
    """SIGINT to the process group (``ros2 run`` does not pass it on), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize('bond', [True, False], ids=['bond', 'no_bond'])
def test_nav2_lifecycle_manager_bring_up_reset_and_new_model(context, models, tmp_path, bond):
    """bring-up with the manager's default bond_timeout (the node forms the bond with bondpy),
    or without a bond (bond_timeout: 0.0 as the README says for a node without bondpy), reset,
    ros2 param set of model, bring-up again: the node serves the new model."""
    reason = _nav2_not_ready()
    if reason:
        pytest.skip(reason)
    from lifecycle_msgs.srv import GetState
    from nav2_msgs.srv import ManageLifecycleNodes
    import vision_msgs.msg as vision

    from darknet53_ros.ros.bond import bond_class

    three, two = models
    namespace = '/rostest_nav2'
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    node_log, manager_log = tmp_path / 'node.log', tmp_path / 'manager.log'
    bond = bond and bond_class() is not None
    node_proc = subprocess.Popen(
        [sys.executable, '-m', 'darknet53_ros.ros.node', '--lifecycle', '--ros-args',
         '-r', f'__ns:={namespace}', '-p', f'model:={three}', '-p', 'cameras:=[front]',
         '-p', f'bond_heartbeat_period:={0.1 if bond else 0.0}'],
        stdout=node_log.open('w'), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    manager_args = ['-p', 'node_names:=[darknet53_detector]', '-p', 'autostart:=true']
    if not bond:
        manager_args += ['-p', 'bond_timeout:=0.0']  # the README's setting without bondpy
    manager = subprocess.Popen(
        ['ros2', 'run', 'nav2_lifecycle_manager', 'lifecycle_manager', '--ros-args',
         '-r', f'__ns:={namespace}', '-r', '__node:=lifecycle_manager_detector',
         *manager_args], stdout=manager_log.open('w'), stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    helper = rclpy.create_node('nav2_probe', context=context)
    labels = []
    helper.create_subscription(vision.LabelInfo, f'{namespace}/front/label_info',
                               labels.append, _latched())
    get_state = helper.create_client(GetState, f'{namespace}/darknet53_detector/get_state')
    manage = helper.create_client(ManageLifecycleNodes,
                                  f'{namespace}/lifecycle_manager_detector/manage_nodes')
    executor = _executor(context, helper)
    try:
        assert _wait_state(executor, get_state, 'active') == 'active', manager_log.read_text()
        assert spin_until(executor, lambda: labels, timeout=10.0)
        assert len(labels[-1].class_map) == 3
        time.sleep(5.0)  # past bond_timeout: the bond holds (the manager would reset)
        assert _wait_state(executor, get_state, 'active', timeout=5.0) == 'active'
        reset = _call(executor, manage, ManageLifecycleNodes.Request(
            command=ManageLifecycleNodes.Request.RESET))
        assert reset.success
        assert _wait_state(executor, get_state, 'unconfigured') == 'unconfigured'
        subprocess.run(['ros2', 'param', 'set', f'{namespace}/darknet53_detector', 'model',
                        str(two)], check=True, timeout=60, env=env, capture_output=True)
        labels.clear()
        startup = _call(executor, manage, ManageLifecycleNodes.Request(
            command=ManageLifecycleNodes.Request.STARTUP))
        assert startup.success, manager_log.read_text()
        assert _wait_state(executor, get_state, 'active') == 'active'
        assert spin_until(executor, lambda: labels and len(labels[-1].class_map) == 2,
                           timeout=10.0)
    finally:
        executor.shutdown()
        helper.destroy_node()
        log = manager_log.read_text()  # before the teardown (which breaks the bond)
        _stop(manager)
        _stop(node_proc)
    assert 'unable to be reached' not in log and 'Have not received a heartbeat' not in log, log
    assert ('connected with bond' in log) == bond, log
    assert 'Traceback' not in node_log.read_text(), node_log.read_text()
