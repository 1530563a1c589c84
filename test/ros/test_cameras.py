"""Per-camera parameters (darknet53_ros.ros.cameras, .params, .schema), QoS override checks
(.qos), the lifecycle-manager bond (.bond) and diagnostic naming helpers, without ROS."""
from dataclasses import replace
import re

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.ros.bond import HEARTBEAT_TIMEOUT, NO_BONDPY, ManagerBond
from darknet53_ros.ros.cameras import (
    CAMERA_PARAMETERS,
    CameraSpec,
    applies_to,
    camera_key,
    parse_cameras,
    resolve_topics,
)
from darknet53_ros.ros.diagnostics import hardware_id, keep_above
from darknet53_ros.ros.params import (
    NodeParams,
    is_runtime,
    override_warning,
    validate_parameter,
)
from darknet53_ros.ros.qos import qos_override_warning, unmatched_qos_overrides

from ..conftest import export_tiny_model, optional_module


# -- the list of names and the per-name parameters ---------------------------------------------
def test_defaults_derive_from_the_name():
    (front, left) = parse_cameras(['front', 'left'])
    assert (front.topic, front.transport, front.reliability) == ('front/image_raw', 'raw',
                                                                 'best_effort')
    assert (front.frame_id, front.conf_threshold, front.tracking) == ('', -1.0, False)
    assert left.input_topic == 'left/image_raw'
    assert [spec.name for spec in CAMERA_PARAMETERS] == [
        'topic', 'transport', 'reliability', 'frame_id', 'conf_threshold', 'tracking']
    assert front.parameters() == {'front.topic': 'front/image_raw', 'front.transport': 'raw',
                                  'front.reliability': 'best_effort', 'front.frame_id': '',
                                  'front.conf_threshold': -1.0, 'front.tracking': False}


def test_per_camera_values():
    values = {'front.topic': '/front/image_raw', 'left.topic': 'left/color',
              'left.transport': 'compressed', 'left.reliability': 'reliable',
              'left.frame_id': 'left_optical', 'left.conf_threshold': 0.5,
              'left.tracking': True}
    front, left = parse_cameras(['front', 'left'], values)
    assert front.input_topic == '/front/image_raw' and not front.compressed
    assert left.compressed and left.input_topic == 'left/color/compressed'
    assert (left.reliability, left.frame_id, left.tracking) == ('reliable', 'left_optical', True)
    assert left.threshold(0.25) == 0.5 and front.threshold(0.25) == 0.25
    assert (left.detections_topic, left.annotated_topic, left.label_info_topic) == (
        'left/detections', 'left/detections/image', 'left/label_info')


@pytest.mark.parametrize('values, message', [
    ({'left.transport': 'zip'}, "parameter left.transport: 'zip' is not one of raw, compressed"),
    ({'left.reliability': 'sometimes'}, 'parameter left.reliability: .* not one of'),
    ({'left.conf_threshold': 1.5}, r'parameter left.conf_threshold: 1.5 is outside \[-1, 1\]'),
    ({'left.conf_threshold': 'high'}, 'parameter left.conf_threshold: expected double'),
    ({'left.conf_threshold': -0.5}, r'parameter left.conf_threshold: -0.5 is neither in \[0, 1\] '
                                    r'nor -1.0'),
    ({'left.tracking': 'yes'}, 'parameter left.tracking: expected bool'),
    ({'left.topic': '/x y'}, "parameter left.topic: '/x y' is not a valid ROS topic name"),
    ({'left.topic': ''}, 'parameter left.topic: must not be empty'),
    ({'left.topic': '/l/image_raw/compressed'},
     r'parameter left.topic: .* give the base topic \(left.topic: /l/image_raw\) and '
     'left.transport: compressed'),
    ({'left.topic': '/x', 'front.topic': '/x'}, 'cameras front and left both subscribe /x'),
])
def test_errors_name_the_camera_and_key(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_cameras(['front', 'left'], values)


@pytest.mark.parametrize('names, message', [
    ('front', r"expected a list of camera names, got the string 'front' \(write \[front\]\)"),
    ([], 'at least one camera'),
    (['a', 'a'], 'duplicate camera name'),
    (['1cam'], "camera name '1cam' is not a ROS name token"),
    (['/abs'], 'camera name'),
    (['arm/wrist'], "camera name 'arm/wrist' is not a ROS name token"),
    (['a__b'], 'camera name'),
    ([3], 'expected a camera name, got 3'),
])
def test_bad_name_lists(names, message):
    with pytest.raises(ConfigError, match=f'parameter cameras: {message}'):
        parse_cameras(names)


@pytest.mark.parametrize('entry, hint', [
    ('front:/front/image_raw:raw',
     r'cameras: \[front\]\) and set front.topic: /front/image_raw, front.transport: raw'),
    ('left:/left/image_raw/compressed',
     'left.topic: /left/image_raw, left.transport: compressed'),
    ('rear:', r'cameras: \[rear\]\)$'),
])
def test_retired_strings_are_refused_with_the_equivalent_parameters(entry, hint):
    with pytest.raises(ConfigError) as info:
        NodeParams.from_dict({'cameras': ['ok', entry]})
    text = str(info.value)
    assert "is the retired 'NAME:TOPIC:TRANSPORT' form" in text and '\n' not in text
    assert re.search(hint, text), text


def test_camera_names_cannot_shadow_node_parameters():
    with pytest.raises(ConfigError, match="camera name 'model' is a node parameter"):
        NodeParams.from_dict({'cameras': ['model']})
    with pytest.raises(ConfigError, match="camera name 'qos_overrides' is a node parameter"):
        NodeParams.from_dict({'cameras': ['qos_overrides']})


def test_prefix_camera_name_false_needs_one_camera():
    with pytest.raises(ConfigError, match='parameter prefix_camera_name'):
        NodeParams.from_dict({'cameras': ['a', 'b'], 'prefix_camera_name': False})
    (single,) = NodeParams.from_dict({'cameras': ['a'], 'prefix_camera_name': False}).cameras
    assert (single.detections_topic, single.annotated_topic, single.label_info_topic) == (
        'detections', 'detections/image', 'label_info')


def test_camera_key_and_applies_to():
    assert camera_key('front.topic') == ('front', 'topic')
    assert camera_key('arm_wrist.conf_threshold') == ('arm_wrist', 'conf_threshold')
    for name in ('front', 'front.size', 'conf_threshold', 'arm/wrist.topic',
                 'qos_overrides./front/image_raw.subscription.reliability'):
        assert camera_key(name) is None, name
    assert applies_to('front.topic', ['front']) and not applies_to('rear.topic', ['front'])
    assert applies_to('model', ['front'])


def test_resolve_topics_keeps_the_base_name():
    cameras = parse_cameras(['front', 'left'], {'left.transport': 'compressed'})
    remaps = {'front/image_raw': '/cam0/image', 'left/image_raw': '/cam1/image'}
    front, left = resolve_topics(cameras, lambda topic: remaps[topic])
    assert front.input_topic == '/cam0/image'
    assert left.input_topic == '/cam1/image/compressed'  # the remap carried over
    assert left.topic == 'left/image_raw'  # the parameter value is unchanged

    def fail(topic):
        raise RuntimeError('invalid')

    with pytest.raises(ConfigError, match='parameter front.topic: cannot resolve'):
        resolve_topics(cameras, fail)


# -- NodeParams with cameras -------------------------------------------------------------------
def test_node_params_round_trip_and_unknown_camera_parameters():
    values = {'cameras': ['front', 'left'], 'left.transport': 'compressed',
              'front.conf_threshold': 0.4}
    params = NodeParams.from_dict(values)
    assert NodeParams.from_dict(params.as_dict()) == params
    assert params.as_dict()['left.topic'] == 'left/image_raw'
    with pytest.raises(ConfigError, match=r'my.yaml: unknown parameter\(s\) rear.topic '
                                          r'\(no camera rear in cameras: front, left\)'):
        NodeParams.from_dict({**values, 'rear.topic': '/r'}, source='my.yaml')
    assert NodeParams.from_dict({**values, 'rear.topic': '/r'}, ignore_unknown=True) == params
    with pytest.raises(ConfigError, match=r'qos_reliability \(retired: per camera: '
                                          'NAME.reliability'):
        NodeParams.from_dict({'qos_reliability': 'reliable'})
    # rclpy's own parameters are never misspellings
    assert NodeParams.from_dict({'use_sim_time': True,
                                 'qos_overrides./x.subscription.depth': 2}) == NodeParams()


def test_detector_threshold_is_the_lowest_camera_threshold():
    params = NodeParams.from_dict({'cameras': ['a', 'b', 'c'], 'conf_threshold': 0.3,
                                   'a.conf_threshold': 0.5, 'b.conf_threshold': 0.1})
    assert params.detector_options()['conf_threshold'] == 0.1
    assert [c.threshold(params.conf_threshold) for c in params.cameras] == [0.5, 0.1, 0.3]
    high = NodeParams.from_dict({'cameras': ['a'], 'a.conf_threshold': 0.6})
    assert high.detector_options()['conf_threshold'] == 0.6


def test_updated_applies_runtime_camera_parameters_only():
    params = NodeParams.from_dict({'cameras': ['front', 'left']})
    resolved = replace(params, cameras=resolve_topics(params.cameras, lambda t: f'/ns/{t}'))
    new, applied = resolved.updated({'left.conf_threshold': 0.7, 'use_sim_time': True,
                                     'rear.topic': '/x'})
    assert applied == {'left.conf_threshold': 0.7}
    assert new.cameras[1].conf_threshold == 0.7
    assert new.cameras[1].resolved_topic == '/ns/left/image_raw'  # kept
    assert resolved.updated({'front.topic': 'front/image_raw'})[0] == resolved  # unchanged
    for name, value in (('front.topic', '/other'), ('left.transport', 'compressed'),
                        ('cameras', ['front']), ('model', 'x.onnx')):
        with pytest.raises(ConfigError, match=f'parameter {name}: applied at configure'):
            resolved.updated({name: value})
    with pytest.raises(ConfigError, match='parameter left.conf_threshold'):
        resolved.updated({'left.conf_threshold': 2.0})
    with pytest.raises(ConfigError, match='parameter rear.topic: unknown'):
        resolved.updated({'rear.topic': '/x'}, ignore_unknown=False)


def test_validate_and_runtime_of_camera_parameters():
    assert validate_parameter('rear.transport', 'compressed') == 'compressed'
    assert validate_parameter('rear.conf_threshold', 1) == 1.0
    assert validate_parameter('cameras', ['a', 'b']) == ['a', 'b']
    with pytest.raises(ConfigError, match='parameter rear.topic: .* transport topic'):
        validate_parameter('rear.topic', '/r/image_raw/compressed')
    with pytest.raises(ConfigError, match="parameter cameras: 'a:/x' is the retired"):
        validate_parameter('cameras', ['a:/x'])
    with pytest.raises(ConfigError, match='parameter rear.size: unknown'):
        validate_parameter('rear.size', 1)
    assert is_runtime('conf_threshold') and is_runtime('front.conf_threshold')
    assert not is_runtime('model') and not is_runtime('front.topic')
    assert not is_runtime('front.tracking') and not is_runtime('nonsense')


def test_override_warning_names_misspelt_cameras_and_keys():
    names = ['conf_threshold', 'front.topic', 'use_sim_time',
             'qos_overrides./front/image_raw.subscription.reliability']
    assert override_warning(names, ['front']) == ''
    text = override_warning([*names, 'frnt.topic', 'front.topik', 'conf_treshold'], ['front'])
    assert 'frnt.topic (no camera frnt in cameras: front)' in text
    assert 'conf_treshold (did you mean conf_threshold?)' in text
    assert 'front.topik' in text and 'use_sim_time' not in text


# -- QoS overrides -----------------------------------------------------------------------------
def test_unmatched_qos_overrides_are_named():
    declared = ['model', 'qos_overrides./front/image_raw.subscription.reliability',
                'qos_overrides./front/image_raw.subscription.depth',
                'qos_overrides./front/detections.publisher.history']
    overrides = ['model', 'qos_overrides./front/image_raw.subscription.reliability',
                 'qos_overrides./front/image.subscription.reliability',
                 'qos_overrides./front/image_raw.subscription.durability']
    unmatched = unmatched_qos_overrides(overrides, declared)
    assert unmatched == ['qos_overrides./front/image.subscription.reliability',
                         'qos_overrides./front/image_raw.subscription.durability']
    text = qos_override_warning(unmatched, declared)
    assert text.startswith('ignored QoS override(s) matching no publisher or subscription')
    assert '{history,depth,reliability}' in text
    assert '/front/detections.publisher, /front/image_raw.subscription' in text
    assert qos_override_warning([], declared) == ''


# -- the bond to a lifecycle manager -----------------------------------------------------------
class _Logger:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(('info', text))

    def warning(self, text):
        self.lines.append(('warning', text))


class _Node:
    def __init__(self):
        self.logger = _Logger()
        self.destroyed = []
        self.timers = []

    def get_name(self):
        return 'darknet53_detector'

    def create_timer(self, period, callback):
        timer = [period, callback]
        self.timers.append(timer)
        return timer

    def destroy_timer(self, timer):
        self.timers.remove(timer)

    def fire_timers(self):
        for _, callback in list(self.timers):
            callback()

    def get_logger(self):
        return self.logger

    def destroy_subscription(self, entity):
        self.destroyed.append(entity)

    def destroy_publisher(self, entity):
        self.destroyed.append(entity)


class _FakeBond:
    """bondpy.bondpy.Bond's interface as ManagerBond uses it (the humble branch's
    constructor; later branches take ``(topic, id, node)``)."""

    made = []

    def __init__(self, node, topic, bond_id):
        self.topic, self.id, self.node = topic, bond_id, node
        self.started = self.shut = self.broken = False
        self.heartbeat_period = self.heartbeat_timeout = None
        self.sub, self.pub = f'sub:{topic}', f'pub:{topic}'
        _FakeBond.made.append(self)

    def start(self):
        self.started = True

    def break_bond(self):
        self.broken = True

    def shutdown(self):
        self.shut = True


def test_bond_formed_and_broken_as_nav2_nodes_do():
    node = _Node()
    bond = ManagerBond(node, factory=lambda: _FakeBond)
    assert bond.form(0.1) and bond.formed
    made = bond.bond
    assert (made.topic, made.id, made.started) == ('bond', 'darknet53_detector', True)
    assert (made.heartbeat_period, made.heartbeat_timeout) == (0.1, HEARTBEAT_TIMEOUT)
    assert not bond.form(0.1)  # one bond at a time
    bond.break_bond()  # the manager is told at once, the bond released a little later
    assert made.broken and not made.shut and not bond.formed and len(node.timers) == 1
    node.fire_timers()
    assert made.shut and node.destroyed == ['sub:bond', 'pub:bond'] and not node.timers
    bond.break_bond()  # idempotent
    assert not bond.form(0.0) and not bond.formed  # bond_heartbeat_period 0: no bond
    assert bond.form(0.1)
    second = bond.bond
    bond.break_bond()
    bond.close()  # node going away: everything released now
    assert second.shut and not node.timers


def test_both_bondpy_constructors():
    from darknet53_ros.ros.bond import make_bond

    class Later:
        def __init__(self, topic, id, node, on_broken=None, on_formed=None):
            self.args = (topic, id, node)

    class Humble:
        def __init__(self, node, topic, bond_id, on_broken=None, on_formed=None):
            self.args = (topic, bond_id, node)

    for cls in (Later, Humble):
        assert make_bond(cls, 'node', 'bond', 'det').args == ('bond', 'det', 'node')


def test_without_bondpy_the_node_says_how_to_configure_the_manager():
    node = _Node()
    bond = ManagerBond(node, factory=lambda: None)
    assert not bond.form(0.1) and not bond.form(0.1)
    assert node.logger.lines == [('info', NO_BONDPY)]
    assert 'bond_timeout: 0.0' in NO_BONDPY


def test_bondpy_interface_where_installed():
    """The attributes ManagerBond sets and calls exist on the real bondpy.Bond."""
    module = optional_module('bondpy.bondpy')
    if module is None:
        pytest.skip('bondpy not installed: needs a sourced ROS 2 with bond_core')
    for name in ('heartbeat_period', 'heartbeat_timeout', 'start', 'shutdown'):
        assert hasattr(module.Bond, name), name


# -- diagnostics naming and per-camera thresholds ----------------------------------------------
@pytest.mark.parametrize('info, expected', [
    ({'backend': 'onnxruntime', 'providers': 'CPUExecutionProvider'}, 'none'),
    ({'backend': 'onnxruntime', 'providers': 'CUDAExecutionProvider, CPUExecutionProvider'},
     'cuda:0'),
    ({'backend': 'tensorrt'}, 'cuda:0'),
    ({'backend': 'tensorrt', 'dla_core': '1'}, 'cuda:0/dla1'),
    ({'backend': 'x', 'device': 'cuda:1'}, 'cuda:1'),
    ({'backend': 'x', 'device': 'cpu'}, 'none'),
])
def test_hardware_id(info, expected):
    assert hardware_id(info) == expected


def test_keep_above_filters_in_float32():
    det = Detections(np.arange(12, dtype=np.float32).reshape(3, 4),
                     np.array([0.9, 0.3, 0.29999998], np.float32), np.array([0, 1, 2]), None)
    assert keep_above(det, 0.1) is det
    kept = keep_above(det, 0.3)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.3]) and kept.class_ids.tolist() == [0, 1]
    assert kept.boxes.shape == (2, 4)


def test_camera_spec_is_hashable_and_formats_its_default_topic():
    assert CameraSpec('arm_wrist').topic == 'arm_wrist/image_raw'
    assert len({CameraSpec('a'), CameraSpec('a')}) == 1


# -- per-camera settings in the node core (ONNX Runtime, the message_types fixture) -----------
NAMES = ['box', 'cone', 'ball']
STAMP = 1_700_000_000_123_456_789


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES)


def _core(model_path, types, **values):
    pytest.importorskip('onnxruntime', reason='onnxruntime not installed')
    from darknet53_ros.ros.model_files import load_detector
    from darknet53_ros.ros.node_core import NodeCore, Outputs

    class Collect(Outputs):
        def __init__(self):
            self.dets = {}

        def detections(self, camera, msg, stamp_ns):
            self.dets[camera.name] = msg

    params = NodeParams.from_dict({'model': str(model_path), **values})
    detector, path = load_detector(params)
    return NodeCore(params, detector, types, Collect(), model_path=path, node_name='det'), types


def _image_msg(types, image, frame_id):
    from darknet53_ros.io.messages import header_msg, image_msg

    return image_msg(types, header_msg(types, STAMP, frame_id), image)


def test_camera_threshold_equals_detecting_at_it(model_path, message_types):
    """A camera above the node threshold gets exactly what a detector at its threshold finds
    (independent path: Detector.detect at that threshold); the other camera the node's."""
    from darknet53_ros.inference.detector import Detector

    core, types = _core(model_path, message_types, cameras=['a', 'b'], conf_threshold=0.2,
                        **{'a.conf_threshold': 0.3})
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    try:
        assert core.detector.config.conf_threshold == pytest.approx(0.2)
        for name in ('a', 'b'):
            core.submit(name, _image_msg(types, image, name))
        assert core.process_pending() == 2
        for name, threshold in (('a', 0.3), ('b', 0.2)):
            with Detector.from_model(model_path, conf_threshold=threshold) as reference:
                expected = reference.detect(image)
            got = core.outputs.dets[name].detections
            assert len(got) == len(expected) > 0, name
            assert [d.results[0].hypothesis.score for d in got] == pytest.approx(
                expected.scores.tolist(), abs=1e-6)
        assert len(core.outputs.dets['a'].detections) < len(core.outputs.dets['b'].detections)
        # runtime change of one camera's threshold: the detector follows the lowest
        core.update_parameters({'b.conf_threshold': 0.35})
        assert core.detector.config.conf_threshold == pytest.approx(0.3)
        assert core.label_info_msg(camera='b').threshold == pytest.approx(0.35)
        assert core.label_info_msg(camera='a').threshold == pytest.approx(0.3)
    finally:
        core.shutdown()


def test_frame_id_override_and_label_info_per_camera(model_path, message_types):
    core, types = _core(model_path, message_types, cameras=['a', 'b'], conf_threshold=0.4,
                        **{'a.frame_id': 'a_optical'})
    image = np.zeros((32, 32, 3), np.uint8)
    try:
        core.submit('a', _image_msg(types, image, 'wrong_frame'))
        core.submit('b', _image_msg(types, image, 'b_driver'))
        core.process_pending()
        a, b = core.outputs.dets['a'], core.outputs.dets['b']
        assert a.header.frame_id == 'a_optical' and b.header.frame_id == 'b_driver'
        assert (a.header.stamp.sec, a.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
        label = core.label_info_msg(STAMP, 'a')
        assert label.header.frame_id == 'a_optical' and label.threshold == pytest.approx(0.4)
        assert [c.class_name for c in label.class_map] == NAMES
    finally:
        core.shutdown()


def test_diagnostics_named_as_diagnostic_updater_names_them(model_path, message_types):
    core, types = _core(model_path, message_types, cameras=['a'],
                        **{'a.transport': 'compressed', 'a.topic': '/cam/a'})
    try:
        msg = core.diagnostics_msg(STAMP)
        statuses = {s.name: s for s in msg.status}
        assert set(statuses) == {'det: detector', 'det: a'}  # node name, no namespace
        assert statuses['det: detector'].hardware_id == 'none'  # ONNX Runtime on the CPU
        assert statuses['det: a'].hardware_id == 'none'
        values = {kv.key: kv.value for kv in statuses['det: a'].values}
        assert values['topic'] == '/cam/a/compressed'
    finally:
        core.shutdown()
