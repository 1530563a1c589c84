"""The rclpy glue (darknet53_ros.ros.ports) over a fake node (test/fakes/rclpy_node.py):
per-camera parameter declaration, reload-vs-runtime parameter sets of the plain and the
lifecycle node, topics resolved as image_transport does, QoS overrides on every entity, and
LabelInfo beside each camera. test_ros_conventions.py checks the same on a real ROS 2."""
import sys

import pytest

from darknet53_ros.ros.lifecycle import ManagedDetector
from darknet53_ros.ros.model_files import load_detector

from ..conftest import export_tiny_model, requires
from ..fakes.rclpy_node import FakeNode, Parameter, fake_ros_modules

NAMES = ['box', 'cone', 'ball']


@pytest.fixture
def ros(monkeypatch):
    """The fake ROS modules (also where ROS 2 is sourced: they go with the fake node)."""
    for name, module in fake_ros_modules().items():
        monkeypatch.setitem(sys.modules, name, module)


def _ports(managed=False, **overrides):
    from darknet53_ros.ros.ports import RosPorts

    node = FakeNode(namespace='/robot', overrides=overrides,
                    remaps=overrides.pop('_remaps', None) if '_remaps' in overrides else None)
    return node, RosPorts(node, managed=managed)


def test_camera_parameters_declared_from_the_list(ros):
    node, ports = _ports(cameras=['front', 'left'], **{'left.transport': 'compressed'})
    assert node.get_parameter('front.topic').value == 'front/image_raw'
    assert node.get_parameter('left.transport').value == 'compressed'
    assert node.describe_parameter('front.topic').read_only  # plain node: restart to change
    assert not node.describe_parameter('front.conf_threshold').read_only  # runtime
    values = ports.read_parameters()
    assert values['cameras'] == ['front', 'left'] and values['left.reliability'] == 'best_effort'
    assert not node.logger.texts('warning')


def test_misspelt_overrides_are_named(ros):
    node, _ = _ports(cameras=['front'], **{'frnt.topic': '/x', 'conf_treshold': 0.3,
                                           'qos_reliability': 'reliable',
                                           'qos_overrides./a.subscription.depth': 3})
    (warning,) = node.logger.texts('warning')
    assert 'frnt.topic (no camera frnt in cameras: front)' in warning
    assert 'conf_treshold (did you mean conf_threshold?)' in warning
    assert 'qos_reliability (retired: per camera: NAME.reliability' in warning
    assert 'qos_overrides./a' not in warning  # checked once the entities exist


def test_retired_camera_strings_declare_nothing_and_fail_at_configure(ros):
    from darknet53_ros.errors import ConfigError
    from darknet53_ros.ros.params import NodeParams

    node, ports = _ports(managed=True, cameras=['front:/front/image_raw:raw'])
    assert not any('.' in name for name in node.params if name != 'qos_overrides')
    with pytest.raises(ConfigError, match=r"the retired 'NAME:TOPIC:TRANSPORT' form: list names "
                                          r'\(cameras: \[front\]\) and set front.topic: '
                                          '/front/image_raw, front.transport: raw'):
        NodeParams.from_dict(ports.read_parameters())


def test_lifecycle_node_takes_reload_parameters_while_unconfigured(ros):
    node, ports = _ports(managed=True, cameras=['front'])
    assert not node.describe_parameter('model').read_only
    assert not node.describe_parameter('front.topic').read_only
    (bad,) = node.set_parameters([Parameter('front.transport', 'zip')])
    assert not bad.successful and "parameter front.transport: 'zip'" in bad.reason
    (bad,) = node.set_parameters([Parameter('cameras', ['front', '1x'])])
    assert not bad.successful and "camera name '1x'" in bad.reason
    (ok,) = node.set_parameters([Parameter('cameras', ['front', 'rear'])])
    assert ok.successful  # rear's parameters exist from now on
    (ok,) = node.set_parameters([Parameter('rear.topic', '/cams/rear')])
    assert ok.successful and ports.read_parameters()['rear.topic'] == '/cams/rear'


def test_plain_node_refuses_reload_parameters(ros):
    node, _ = _ports(cameras=['front'])
    (refused,) = node.set_parameters([Parameter('model', 'other.onnx')])
    assert not refused.successful and 'read-only' in refused.reason


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES, size=64)


def _managed(ports, types):
    ports.types = types
    return ManagedDetector(ports, ports.read_parameters,
                           lambda params: load_detector(params, share_dir=False),
                           ports.make_core, stop_timeout=5.0)


@requires('onnxruntime')
def test_topics_qos_and_label_info(message_types, ros, model_path):
    """Inputs resolved as image_transport does (a remap of the base topic carries over to
    .../compressed), QoS overrides on every entity, NAME/label_info per camera, and one
    warning naming a QoS override that matched nothing."""
    node, ports = _ports(
        managed=True, model=str(model_path), cameras=['front', 'left'],
        _remaps={'/robot/left/image_raw': '/cams/left/image'},
        **{'left.transport': 'compressed', 'front.reliability': 'reliable',
           'left.conf_threshold': 0.6,
           'qos_overrides./robot/front/image_raw.subscription.depth': 3,
           'qos_overrides./cams/left/image/compressed.subscription.reliability': 'reliable',
           'qos_overrides./robot/front/detections.publisher.reliability': 'best_effort',
           'qos_overrides./robot/left/image_raw/compressed.subscription.reliability':
               'reliable'})
    managed = _managed(ports, message_types)
    managed.configure()
    try:
        publishers = node.topics('publisher')
        assert set(publishers) == {
            '/robot/front/detections', '/robot/front/detections/image',
            '/robot/front/detections/image/compressed', '/robot/front/label_info',
            '/robot/left/detections', '/robot/left/detections/image',
            '/robot/left/detections/image/compressed', '/robot/left/label_info', '/diagnostics'}
        annotated = publishers['/robot/left/detections/image/compressed']
        assert annotated.qos_profile.reliability.name == 'BEST_EFFORT'
        label = publishers['/robot/left/label_info']
        assert label.qos_profile.durability.name == 'TRANSIENT_LOCAL'
        assert label.published[0].threshold == pytest.approx(0.6)
        assert publishers['/robot/front/label_info'].published[0].threshold == \
            pytest.approx(0.25)
        assert publishers['/robot/front/detections'].qos_profile.reliability.name == \
            'BEST_EFFORT'
        managed.activate()
        subscriptions = node.topics('subscription')
        assert set(subscriptions) == {'/robot/front/image_raw', '/cams/left/image/compressed'}
        front, left = subscriptions['/robot/front/image_raw'], \
            subscriptions['/cams/left/image/compressed']
        assert (front.qos_profile.reliability.name, front.qos_profile.depth) == ('RELIABLE', 3)
        assert left.qos_profile.reliability.name == 'RELIABLE'  # the override
        (warning,) = node.logger.texts('warning')
        assert warning.startswith('ignored QoS override(s)')
        assert 'qos_overrides./robot/left/image_raw/compressed.subscription.reliability' \
            in warning
        # runtime: one camera's threshold; its LabelInfo is published again
        (ok,) = node.set_parameters([Parameter('left.conf_threshold', 0.7)])
        assert ok.successful and label.published[-1].threshold == pytest.approx(0.7)
        (refused,) = node.set_parameters([Parameter('left.topic', '/other')])
        assert not refused.successful and 'applied at configure' in refused.reason
    finally:
        managed.shutdown()
    assert not node.entities


@requires('onnxruntime')
def test_bad_qos_override_is_a_clear_error(message_types, ros, model_path):
    from darknet53_ros.errors import ConfigError

    node, ports = _ports(model=str(model_path), cameras=['front'], **{
        'qos_overrides./robot/front/image_raw.subscription.reliability': 'sometimes'})
    managed = _managed(ports, message_types)
    managed.configure()
    try:
        with pytest.raises(ConfigError, match='camera front: subscription '
                                              '/robot/front/image_raw: Unexpected QoS'):
            managed.activate()
    finally:
        managed.shutdown()
