"""Tests for darknet53_ros.ros (node_core, params, cameras, model_files, diagnostics): the ROS
node's behaviour without ROS, with real message classes: rclpy's where a ROS 2 is sourced,
else rosbags' (the ``message_types`` fixture)."""
from dataclasses import fields
import logging
import threading

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.inference.detector import DetectorConfig
from darknet53_ros.io.encodings import msg_to_bgr
from darknet53_ros.io.messages import byte_data
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.diagnostics import ALL_DROP_REASONS, ThrottledLog
from darknet53_ros.ros.model_files import load_detector, prepare_model, resolve_data_path
from darknet53_ros.ros.node_core import IMAGE_DECODER, NodeCore, Outputs
from darknet53_ros.ros.params import (
    DETECTOR_FIELDS,
    PARAMETERS,
    RUNTIME_PARAMETERS,
    NodeParams,
    load_params_file,
    validate_parameter,
)

from ..conftest import cdr_deserialize, cdr_serialize, export_tiny_model, requires

pytestmark = requires('onnxruntime')

NAMES = ['box', 'cone', 'ball']
STAMP = 1_700_000_000_123_456_789


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES)


@pytest.fixture
def types(message_types):
    """The shared ``message_types`` (test/conftest.py) under this module's short name."""
    return message_types


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class RecordingLogger:
    def __init__(self):
        self.records = []

    def _log(self, level, message):
        self.records.append((level, message))

    def warning(self, message):
        self._log('warning', message)

    def error(self, message):
        self._log('error', message)

    def info(self, message):
        self._log('info', message)


class Collect(Outputs):
    def __init__(self, annotated=False):
        self.dets = []
        self.images = []
        self.want = annotated
        self.event = threading.Event()

    def detections(self, camera, msg, stamp_ns):
        self.dets.append((camera.name, msg, stamp_ns))
        self.event.set()

    def wants_annotated(self, camera):
        return self.want

    def annotated(self, camera, msg, stamp_ns):
        self.images.append((camera.name, msg))


CAMERAS = {'cameras': ['a', 'b', 'c'], 'a.topic': '/a/image_raw', 'b.topic': '/b/image_raw',
           'b.transport': 'compressed', 'c.topic': '/c/image_raw'}


def _params(**values):
    if 'cameras' not in values:
        values = {**CAMERAS, **values}
    return NodeParams.from_dict(values)


def _core(model_path, types, params=None, outputs=None, **kw):
    params = params or _params()
    detector, path = load_detector(params, model_path=model_path)
    return NodeCore(params, detector, types, outputs or Collect(), model_path=path, **kw)


def _scene(h, w, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), (0, 255, 255), -1)
    return img


def _raw(types, image, frame_id, stamp=STAMP, encoding='bgr8'):
    from darknet53_ros.io.messages import header_msg, image_msg

    return image_msg(types, header_msg(types, stamp, frame_id), image, encoding)


def _jpeg(types, image, frame_id, stamp=STAMP):
    from darknet53_ros.io.messages import compressed_image_msg, header_msg

    return compressed_image_msg(types, header_msg(types, stamp, frame_id), image, 'jpeg')


def _stamp(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


# -- parameters --------------------------------------------------------------------------------
def test_parameter_specs_match_params_dataclass():
    assert [s.name for s in PARAMETERS] == [f.name for f in fields(NodeParams)]
    defaults = NodeParams.from_dict({})
    assert defaults == NodeParams()
    for spec in PARAMETERS:
        assert spec.description and spec.type in ('string', 'bool', 'integer', 'double',
                                                  'string_array')
        validate_parameter(spec.name, spec.default)
    runtime = {s.name for s in PARAMETERS if not s.read_only}
    assert {'conf_threshold', 'nms_threshold'} <= runtime
    assert {'model', 'backend', 'cameras', 'max_batch'}.isdisjoint(runtime)
    assert NodeParams.from_dict(defaults.as_dict()) == defaults



def test_parameter_schema_is_the_single_source():
    """Types, runtime set and detector fields all derive from the NodeParams fields."""
    python_types = {'string': str, 'bool': bool, 'integer': int, 'double': float}
    defaults = NodeParams()
    for spec in PARAMETERS:
        if spec.type in python_types:
            assert type(spec.default) is python_types[spec.type], spec.name
            assert getattr(defaults, spec.name) == spec.default
    assert RUNTIME_PARAMETERS == {s.name for s in PARAMETERS if not s.read_only}
    assert DETECTOR_FIELDS == {'conf_threshold': 'conf_threshold',
                               'nms_threshold': 'nms_threshold',
                               'max_detections': 'max_detections'}
    config_fields = {f.name for f in fields(DetectorConfig)}
    assert set(DETECTOR_FIELDS.values()) <= config_fields
    assert set(DETECTOR_FIELDS) <= RUNTIME_PARAMETERS
    assert defaults.detector_options() == {
        'conf_threshold': 0.25, 'nms_threshold': 0.45, 'max_detections': 100}
    assert [(c.name, c.topic, c.transport) for c in defaults.cameras] == [
        ('camera', 'camera/image_raw', 'raw')]

@pytest.mark.parametrize('name, value', [
    ('conf_threshold', 1.5), ('conf_threshold', -0.01), ('nms_threshold', float('nan')),
    ('nms_threshold', 'high'), ('max_batch', 0), ('max_batch', 2.0), ('max_detections', True),
    ('backend', 'cuda'), ('class_id_format', 'label'), ('bond_heartbeat_period', -1.0),
    ('publish_annotated', 'yes'), ('max_frame_age', -1.0), ('cameras', 'front'),
    ('cameras', []), ('cameras', ['front', 3]), ('model', ''), ('diagnostics_period', 0.0),
])
def test_validation_errors_name_the_parameter(name, value):
    with pytest.raises(ConfigError, match=f'parameter {name}'):
        NodeParams.from_dict({name: value})


def test_unknown_parameter_names_the_source():
    with pytest.raises(ConfigError, match=r'my\.yaml: unknown parameter\(s\) conf_treshold'):
        NodeParams.from_dict({'conf_treshold': 0.3}, source='my.yaml')
    assert NodeParams.from_dict({'use_sim_time': True}, ignore_unknown=True) == NodeParams()


def test_integers_accepted_for_doubles():
    assert NodeParams.from_dict({'conf_threshold': 1, 'max_frame_age': 0}).conf_threshold == 1.0


# -- files -------------------------------------------------------------------------------------
def test_load_params_file_flattens_and_filters_by_node(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    conf_threshold: 0.3\n    nested:\n'
                    '      deep: 1\n/robot/darknet53_detector:\n  ros__parameters:\n'
                    '    max_batch: 2\nother_node:\n  ros__parameters:\n    max_batch: 8\n')
    assert load_params_file(path, 'darknet53_detector') == {
        'conf_threshold': 0.3, 'nested.deep': 1, 'max_batch': 2}
    bad = tmp_path / 'bad.yaml'
    bad.write_text('conf_threshold: 0.3\n')
    with pytest.raises(ConfigError, match='bad.yaml'):
        load_params_file(bad)


def test_resolve_data_path(tmp_path, model_path):
    assert resolve_data_path(str(model_path)) == model_path
    (tmp_path / 'engines').mkdir()
    engine = tmp_path / 'engines' / 'x.engine'
    engine.write_bytes(b'')
    assert resolve_data_path('engines/x.engine', share_dir=tmp_path) == engine
    with pytest.raises(ConfigError, match=r"parameter model: 'engines/y.engine' not found"):
        resolve_data_path('engines/y.engine', share_dir=tmp_path)


def test_prepare_model_exports_cfg_once(tmp_path):
    from darknet53_ros.inference.backends.base import model_metadata
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.weights import random_weights, write_weights

    text = yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.0625)
    cfg = tmp_path / 'm.cfg'
    cfg.write_text(text)
    with pytest.raises(ModelError, match='m.weights'):
        prepare_model(cfg, tmp_path / 'cache')
    network = parse_cfg(text)
    write_weights(tmp_path / 'm.weights', network, random_weights(network, 1))
    (tmp_path / 'm.names').write_text('alpha\nbeta\n')
    onnx_path = prepare_model(cfg, tmp_path / 'cache')
    assert onnx_path.suffix == '.onnx' and onnx_path.parent == tmp_path / 'cache'
    assert model_metadata(onnx_path)['names'] == ['alpha', 'beta']
    assert prepare_model(cfg, tmp_path / 'cache') == onnx_path
    assert prepare_model(onnx_path) == onnx_path


def test_class_names_file(tmp_path, model_path):
    names = tmp_path / 'names.txt'
    names.write_text('x\ny\nz\n')
    detector, _ = load_detector(_params(class_names_file=str(names)), model_path=model_path)
    assert detector.names == ('x', 'y', 'z')
    detector.close()
    names.write_text('x\n')
    with pytest.raises(ConfigError, match='parameter class_names_file: 1 names'):
        load_detector(_params(class_names_file=str(names)), model_path=model_path)
    names.write_text('\n  \n')
    with pytest.raises(ConfigError, match='parameter class_names_file: .*no class names'):
        load_detector(_params(class_names_file=str(names)), model_path=model_path)


# -- processing --------------------------------------------------------------------------------
def test_batch_of_several_cameras(model_path, types):
    from darknet53_ros.inference.detector import Detector

    outputs = Collect()
    params = _params(conf_threshold=0.3, max_batch=3, decode_reduced=False)
    core = _core(model_path, types, params, outputs)
    images = {'a': _scene(120, 160, 1), 'b': _scene(200, 64, 2), 'c': _scene(50, 100, 3)}
    msgs = {'a': _raw(types, images['a'], 'a_optical', STAMP + 1),
            'b': _jpeg(types, images['b'], 'b_optical', STAMP + 2),
            'c': _raw(types, cv2.cvtColor(images['c'], cv2.COLOR_BGR2GRAY), 'c_optical',
                      STAMP + 3, 'mono8')}
    for name, msg in msgs.items():
        assert core.submit(name, msg)
    assert core.process_pending() == 3
    assert all(s['processed'] == 1 for s in core.stats().values())  # one batch of three
    assert core.diagnostics()['darknet53_detector: detector']['batches'] == 1
    by_camera = {name: msg for name, msg, _ in outputs.dets}
    assert set(by_camera) == {'a', 'b', 'c'}
    # Independent reference: decode with OpenCV, detect one image at a time.
    decoded = {'a': images['a'],
               'b': cv2.imdecode(np.asarray(msgs['b'].data), cv2.IMREAD_COLOR),
               'c': cv2.cvtColor(cv2.cvtColor(images['c'], cv2.COLOR_BGR2GRAY),
                                 cv2.COLOR_GRAY2BGR)}
    with Detector.from_model(model_path, conf_threshold=0.3) as reference:
        for name, msg in by_camera.items():
            assert msg.header.frame_id == f'{name}_optical'
            assert _stamp(msg.header) == STAMP + 1 + 'abc'.index(name)
            expected = reference.detect(decoded[name])
            assert len(msg.detections) == len(expected) > 0
            h, w = decoded[name].shape[:2]
            for det, box, score, cls in zip(msg.detections, expected.boxes, expected.scores,
                                            expected.class_ids):
                assert det.header.frame_id == f'{name}_optical'
                cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
                np.testing.assert_allclose([cx, cy, det.bbox.size_x, det.bbox.size_y],
                                           [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                                            box[2] - box[0], box[3] - box[1]], atol=1e-3)
                assert 0 <= cx <= w and 0 <= cy <= h
                assert det.bbox.size_x <= w + 1e-3 and det.bbox.size_y <= h + 1e-3
                assert det.results[0].hypothesis.class_id == NAMES[cls]
                assert det.results[0].hypothesis.score == pytest.approx(score, abs=1e-5)
    assert core.detector.config.conf_threshold == 0.3
    core.shutdown()


def test_empty_detections_are_published(model_path, types):
    outputs = Collect(annotated=True)
    core = _core(model_path, types, _params(conf_threshold=1.0), outputs)
    for name in 'abc':
        core.submit(name, _raw(types, _scene(64, 64, 0), f'{name}_frame'))
    core.process_pending()
    assert sorted(n for n, _, _ in outputs.dets) == ['a', 'b', 'c']
    for name, msg, _ in outputs.dets:
        assert msg.detections == [] and msg.header.frame_id == f'{name}_frame'
        assert _stamp(msg.header) == STAMP
    assert len(outputs.images) == 3
    core.shutdown()


def test_annotated_images_only_when_wanted(model_path, types):
    outputs = Collect(annotated=False)
    core = _core(model_path, types, _params(conf_threshold=0.3, annotated_scale=1.0), outputs)
    image = _scene(90, 120, 5)
    core.submit('a', _raw(types, image, 'a'))
    core.process_pending()
    assert len(outputs.dets) == 1 and outputs.images == []
    outputs.want = True
    core.submit('a', _raw(types, image, 'a'))
    core.process_pending()
    ((name, msg),) = outputs.images
    assert name == 'a' and (msg.height, msg.width, msg.encoding) == (90, 120, 'bgr8')
    assert msg.header.frame_id == 'a'
    drawn = np.asarray(msg.data).reshape(90, 120, 3)
    assert len(outputs.dets[-1][1].detections) > 0 and not np.array_equal(drawn, image)
    core.update_parameters({'publish_annotated': False})
    core.submit('a', _raw(types, image, 'a'))
    core.process_pending()
    assert len(outputs.images) == 1
    core.shutdown()


def test_draw_detections_copies_and_draws():
    from darknet53_ros.inference.postprocess import Detections
    from darknet53_ros.io.draw import draw_detections

    image = np.zeros((60, 80, 3), np.uint8)
    dets = Detections(np.array([[10, 10, 50, 40]], np.float32), np.array([0.9], np.float32),
                      np.array([1]), ('a', 'b'))
    out = draw_detections(image, dets.boxes, dets.scores, dets.class_ids, dets.names)
    assert image.max() == 0 and out.shape == image.shape and out[10, 30].any()
    assert out[25, 30].max() == 0  # box interior untouched


def test_bad_frames_dropped_counted_and_logged_once_per_camera(model_path, types):
    from darknet53_ros.io.messages import header_msg

    clock = FakeClock()
    logger = RecordingLogger()
    outputs = Collect()
    core = _core(model_path, types, _params(log_throttle_period=10.0), outputs, clock=clock,
                 logger=logger)
    good = _raw(types, _scene(40, 40, 1), 'a')
    short = types.Image(header=header_msg(types, STAMP, 'a'), height=40, width=40,
                        encoding='bgr8', is_bigendian=0, step=120,
                        data=byte_data(types, np.zeros(100, np.uint8)))
    float_image = types.Image(header=header_msg(types, STAMP, 'a'), height=2, width=2,
                              encoding='32FC1', is_bigendian=0, step=8,
                              data=byte_data(types, np.zeros(16, np.uint8)))
    garbage = types.CompressedImage(header=header_msg(types, STAMP, 'b'), format='jpeg',
                                    data=byte_data(types, b'not a jpeg at all'))
    for camera, msg in [('a', short), ('b', garbage), ('a', float_image), ('a', good)]:
        core.submit(camera, msg)
        core.process_pending()
    stats = core.stats()
    assert stats['a']['dropped']['bad_image'] == 2 and stats['b']['dropped']['bad_image'] == 1
    assert stats['a']['published'] == 1 and stats['b']['published'] == 0
    warnings = [m for level, m in logger.records if level == 'warning']
    assert len(warnings) == 2
    assert 'camera a (/a/image_raw)' in warnings[0] and 'data' in warnings[0]
    assert 'camera b (/b/image_raw/compressed)' in warnings[1]
    assert 'float' not in warnings[0]
    clock.now += 11.0
    core.submit('a', float_image)
    core.process_pending()
    warnings = [m for level, m in logger.records if level == 'warning']
    assert len(warnings) == 3 and '32FC1' in warnings[2] and '1 more since' in warnings[2]
    assert core.stats()['a']['last_error'].startswith('ImageError')
    core.shutdown()


class _SwitchableBackend:
    """Wraps a real backend: can block (Event) or fail on demand."""

    def __init__(self, backend):
        self.inner = backend
        self.input_shape = backend.input_shape
        self.metadata = backend.metadata
        self.max_batch = backend.max_batch
        self.fixed_batch = backend.fixed_batch
        self.model_path = backend.model_path
        self.describe = backend.describe
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = False
        self.batches = []
        self.closed = False

    def infer(self, batch):
        self.entered.set()
        assert self.release.wait(10)
        self.batches.append(batch.shape[0])
        if self.fail:
            raise RuntimeError('device lost')
        return self.inner.infer(batch)

    def close(self):
        self.closed = True
        self.inner.close()


def _switchable_core(model_path, types, **kw):
    from darknet53_ros.inference.backends.registry import create_backend
    from darknet53_ros.inference.detector import Detector, DetectorConfig

    backend = _SwitchableBackend(create_backend(model_path))
    params = kw.pop('params', None) or _params(max_frame_age=0.0)
    detector = Detector(backend, DetectorConfig(conf_threshold=params.conf_threshold))
    return NodeCore(params, detector, types, kw.pop('outputs', Collect()), **kw), backend


def test_slow_backend_never_blocks_submission(model_path, types):
    outputs = Collect()
    core, backend = _switchable_core(model_path, types, outputs=outputs,
                                     params=_params(max_frame_age=0.0, max_batch=2,
                                                    decode_threads=0))
    backend.release.clear()
    core.start()
    frame = _raw(types, _scene(32, 32, 0), 'a')
    core.submit('a', frame)
    assert backend.entered.wait(10)  # the worker is now stuck inside inference

    def flood():
        for _ in range(25):
            for camera in 'abc':
                core.submit(camera, frame)

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join(10)
    blocked = thread.is_alive()
    backend.release.set()
    assert not blocked, 'submit() waited for inference'
    stats = core.stats()
    assert stats['a']['dropped']['superseded'] == 24 and stats['b']['received'] == 25
    assert core.shutdown()
    assert backend.closed and not core.running
    assert all(size <= 2 for size in backend.batches)
    assert not any(t.name == 'darknet53-inference' and t.is_alive()
                   for t in threading.enumerate())
    assert core.shutdown()  # idempotent


def test_inference_error_counted_and_core_keeps_running(model_path, types):
    logger = RecordingLogger()
    outputs = Collect()
    core, backend = _switchable_core(model_path, types, outputs=outputs, logger=logger)
    backend.fail = True
    core.start()
    outputs.event.clear()
    core.submit('a', _raw(types, _scene(32, 32, 0), 'a'))
    core.submit('b', _raw(types, _scene(32, 32, 0), 'b'))
    for _ in range(200):
        stats = core.stats()
        if stats['a']['dropped']['inference_error'] + stats['b']['dropped'][
                'inference_error'] == 2:
            break
        threading.Event().wait(0.02)
    assert [lvl for lvl, _ in logger.records] == ['error']
    assert 'device lost' in logger.records[0][1]
    backend.fail = False
    core.submit('c', _raw(types, _scene(32, 32, 0), 'c'))
    assert outputs.event.wait(10)
    assert [n for n, _, _ in outputs.dets] == ['c'] and core.running
    diag = core.diagnostics()
    assert diag['darknet53_detector: detector']['level'] == 2
    assert diag['darknet53_detector: a']['level'] == 2
    core.shutdown()


def test_runtime_parameter_updates(model_path, types):
    core = _core(model_path, types)
    applied = core.update_parameters({'conf_threshold': 0.6, 'nms_threshold': 0.3,
                                      'max_frame_age': 0.0, 'use_sim_time': True})
    assert applied == {'conf_threshold': 0.6, 'nms_threshold': 0.3, 'max_frame_age': 0.0}
    assert (core.detector.config.conf_threshold, core.detector.config.nms_threshold) == (0.6,
                                                                                          0.3)
    assert core.scheduler.max_age_s is None and core.params.conf_threshold == 0.6
    with pytest.raises(ConfigError, match='parameter nms_threshold'):
        core.update_parameters({'conf_threshold': 0.1, 'nms_threshold': 1.5})
    assert core.detector.config.conf_threshold == 0.6  # nothing applied
    with pytest.raises(ConfigError, match='parameter max_batch: applied at configure'):
        core.update_parameters({'max_batch': 8})
    core.update_parameters({'class_id_format': 'index'})
    core.submit('a', _raw(types, _scene(64, 64, 3), 'a'))
    core.update_parameters({'conf_threshold': 0.2})
    outputs = core.outputs
    core.process_pending()
    (_, msg, _), = outputs.dets
    assert msg.detections and all(d.results[0].hypothesis.class_id in '012'
                                   for d in msg.detections)
    core.shutdown()


# -- diagnostics and label info ----------------------------------------------------------------
def test_diagnostics_content_and_cdr_round_trip(model_path, types):
    clock = FakeClock(500.0)
    publish = {'ns': STAMP}
    core = _core(model_path, types, _params(decode_threads=0), clock=clock,
                 now_ns=lambda: publish['ns'])
    bad = types.CompressedImage(header=_raw(types, _scene(8, 8, 0), 'b').header,
                                format='jpeg', data=byte_data(types, np.zeros(4, np.uint8)))
    for i in range(11):
        clock.now += 0.1
        stamp = STAMP + i * 100_000_000
        publish['ns'] = stamp + 25_000_000  # published 25 ms after the image stamp
        core.submit('a', _raw(types, _scene(32, 32, i), 'a', stamp))
        if i % 2 == 0:
            core.submit('b', bad)
        core.process_pending()
    core.submit('a', _raw(types, _scene(32, 32, 0), 'a'))
    core.submit('a', _raw(types, _scene(32, 32, 0), 'a'))  # supersedes the previous one
    msg = core.diagnostics_msg(stamp_ns=STAMP)
    back = cdr_deserialize(types, cdr_serialize(types, msg), types.DiagnosticArray)
    statuses = {s.name: s for s in back.status}
    assert set(statuses) == {'darknet53_detector: detector', 'darknet53_detector: a',
                             'darknet53_detector: b', 'darknet53_detector: c'}
    values = {name: {kv.key: kv.value for kv in s.values} for name, s in statuses.items()}
    det = values['darknet53_detector: detector']
    assert det['backend'] == 'onnxruntime' and det['precision'] == 'fp32'
    assert det['engine_file'] == str(model_path) and det['input_size'] == '96x96'
    assert det['classes'] == '3' and int(det['frames']) == 11
    a = values['darknet53_detector: a']
    # Received: 11 frames 0.1 s apart plus 2 at the last instant (13 in 1.0 s); published:
    # the 11 (10 intervals of 0.1 s).
    assert float(a['input_hz']) == pytest.approx(12.0)
    assert float(a['output_hz']) == pytest.approx(10.0)
    assert float(a['latency_ms']) == pytest.approx(25.0)
    assert float(a['latency_ms_max']) == pytest.approx(25.0)
    assert (a['received'], a['published'], a['dropped_superseded']) == ('13', '11', '1')
    assert a['topic'] == '/a/image_raw' and a['detections_topic'] == 'a/detections'
    for reason in ALL_DROP_REASONS:
        assert f'dropped_{reason}' in a
    b = values['darknet53_detector: b']
    assert b['dropped_bad_image'] == '6' and b['published'] == '0'
    assert 'ImageError' in b['last_error']
    assert statuses['darknet53_detector: b'].level == types.DiagnosticStatus.WARN
    assert statuses['darknet53_detector: a'].level == types.DiagnosticStatus.OK
    c = statuses['darknet53_detector: c']
    assert c.level == types.DiagnosticStatus.WARN and 'no images received' in c.message
    assert statuses['darknet53_detector: detector'].level == types.DiagnosticStatus.OK
    # Next report: levels compare with the previous one.
    again = {k: v for k, v in core.diagnostics().items()}
    assert again['darknet53_detector: b']['level'] == 1  # nothing received since
    assert 'no images in the last' in again['darknet53_detector: b']['message']
    core.shutdown()
    assert core.diagnostics()['darknet53_detector: detector']['message'] == 'shut down'


def test_label_info(model_path, types):
    core = _core(model_path, types, _params(conf_threshold=0.4))
    msg = core.label_info_msg(STAMP)
    back = cdr_deserialize(types, cdr_serialize(types, msg), types.LabelInfo)
    assert [(c.class_id, c.class_name) for c in back.class_map] == list(enumerate(NAMES))
    assert back.threshold == pytest.approx(0.4) and _stamp(back.header) == STAMP
    core.shutdown()


def test_throttled_log_per_key():
    clock = FakeClock(0.0)
    logger = RecordingLogger()
    log = ThrottledLog(logger, 5.0, clock)
    assert log('a', 'first a') and log('b', 'first b')
    assert not log('a', 'again a') and not log('a', 'again a')
    clock.now = 5.0
    assert log('a', 'later a')
    assert [m for _, m in logger.records] == ['first a', 'first b',
                                              'later a (2 more since the last report)']
    log.period_s = 0.0
    assert log('a', 'x') and log('a', 'y')


def test_images_are_decoded_by_the_package_decoder(model_path, types, monkeypatch):
    """One decoder: the node, replay and tests all decode with io.encodings (through
    io.frame_decoder, which adds reduced-scale JPEG and reused buffers)."""
    from darknet53_ros.io import encodings, frame_decoder

    assert frame_decoder.image_to_bgr is encodings.image_to_bgr
    assert frame_decoder.compressed_to_bgr is encodings.compressed_to_bgr
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[4])
        return encodings.image_to_bgr(*args, **kwargs)

    monkeypatch.setattr(frame_decoder, 'image_to_bgr', spy)
    outputs = Collect()
    core = _core(model_path, types, outputs=outputs)
    image = _scene(10, 12, 0)
    msg = _raw(types, image, 'x')
    core.submit('a', msg)
    assert core.process_pending() == 1 and calls == [msg.data]
    assert core.diagnostics()['darknet53_detector: detector']['image_converter'] == \
        IMAGE_DECODER == 'darknet53_ros.io.encodings'
    np.testing.assert_array_equal(msg_to_bgr(msg), image)
    core.shutdown()


def test_camera_spec_defaults():
    spec = CameraSpec('front', '/front/image_raw')
    assert spec.output_prefix == 'front/' and spec.transport == 'raw'
    assert CameraSpec('rear').topic == 'rear/image_raw'
    assert NodeParams().cameras[0].topic == 'camera/image_raw'


def test_decompression_bomb_is_dropped_before_decoding(model_path, types, monkeypatch):
    """Issue 13.1: a small PNG declaring 30000x30000 never reaches the decoder; it is counted
    as bad_image with the reason, and the other cameras' frames go through."""
    from darknet53_ros.io.messages import header_msg

    from ..toy import png_declaring

    real = cv2.imdecode
    decoded = []

    def imdecode(buf, flags):
        decoded.append(buf.size)
        return real(buf, flags)

    monkeypatch.setattr(cv2, 'imdecode', imdecode)
    core = _core(model_path, types, outputs=Collect())
    bomb = types.CompressedImage(header=header_msg(types, STAMP, 'b'), format='png',
                                 data=byte_data(types, png_declaring(30000, 30000)))
    core.submit('a', _raw(types, _scene(10, 12, 0), 'a'))
    core.submit('b', bomb)
    assert core.process_pending() == 1 and decoded == []
    stats = core.stats()['b']
    assert stats['dropped']['bad_image'] == 1
    assert '30000x30000' in stats['last_error'] and 'max_image_pixels' in stats['last_error']
    core.shutdown()


def test_max_image_pixels_limits_raw_images(model_path, types):
    core = _core(model_path, types, params=_params(max_image_pixels=100))
    core.submit('a', _raw(types, _scene(10, 12, 0), 'a'))
    core.submit('c', _raw(types, _scene(8, 12, 0), 'c'))
    assert core.process_pending() == 1
    assert core.stats()['a']['dropped']['bad_image'] == 1
    core.shutdown()


def test_override_warning_names_misspelt_parameters():
    """Issue 13.11: rclpy drops overrides of undeclared parameters; the node warns."""
    from darknet53_ros.ros.params import override_warning

    assert override_warning(['conf_threshold', 'use_sim_time', 'qos_overrides./x.depth']) == ''
    text = override_warning(['conf_treshold', 'zzz', 'max_batch'])
    assert text.startswith('ignored parameter override(s) matching no parameter')
    assert 'conf_treshold (did you mean conf_threshold?)' in text and ', zzz' in text


def test_preprocess_parameter_reaches_the_detector(tmp_path):
    detector, _ = load_detector(NodeParams(preprocess='cpu'), cache_dir=tmp_path)
    with detector:
        assert detector.config.preprocess == 'cpu' and detector.preprocess_on == 'cpu'
    with pytest.raises(ConfigError, match='preprocess: gpu, but the onnxruntime backend'):
        load_detector(NodeParams(preprocess='gpu'), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match='preprocess'):
        NodeParams.from_dict({'preprocess': 'tpu'})


def test_cuda_runtime_parameter_reaches_only_the_tensorrt_backend(tmp_path, monkeypatch):
    from darknet53_ros.ros import model_files

    calls = []

    class _Backend:
        metadata: dict = {}

    class _Detector:
        backend = _Backend()

        @classmethod
        def from_model(cls, path, **kw):
            calls.append((path.suffix, kw))
            return cls()

    monkeypatch.setattr(model_files, 'Detector', _Detector)
    engine, onnx_model = tmp_path / 'm.engine', tmp_path / 'm.onnx'
    engine.write_bytes(b'x')
    onnx_model.write_bytes(b'x')
    load_detector(NodeParams(cuda_runtime='cuda-python'), model_path=engine)
    load_detector(NodeParams(cuda_runtime='cuda-python'), model_path=onnx_model)
    assert calls[0][1]['backend'] == 'tensorrt' and calls[0][1]['cuda_runtime'] == 'cuda-python'
    assert calls[1][1]['backend'] == 'onnxruntime' and 'cuda_runtime' not in calls[1][1]
    with pytest.raises(ConfigError, match='cuda_runtime'):
        NodeParams.from_dict({'cuda_runtime': 'opencl'})


def test_bundled_demo_model_announces_itself(model_path, types, caplog):
    """A robot launched without model:= serves the synthetic demo model: a start-up warning
    and a WARN detector diagnostic say so (issue 19.7); any other model stays quiet."""
    from darknet53_ros.ros.diagnostics import WARN
    from darknet53_ros.ros.model_files import DEMO_MODEL, DEMO_WARNING, resolve_data_path

    assert resolve_data_path(NodeParams().model, share_dir=False) == DEMO_MODEL
    caplog.set_level(logging.WARNING)
    params = _params()
    detector, _ = load_detector(params, model_path=model_path)
    core = NodeCore(params, detector, types, Collect(), model_path=DEMO_MODEL)
    try:
        assert DEMO_WARNING in caplog.text and 'model:=' in DEMO_WARNING
        status = core.diagnostics()['darknet53_detector: detector']
        assert status['level'] == WARN and 'bundled demo model' in status['message']
    finally:
        core.shutdown()
    caplog.clear()
    core = _core(model_path, types)
    try:
        assert DEMO_WARNING not in caplog.text
        status = core.diagnostics()['darknet53_detector: detector']
        assert 'demo' not in status['message']
    finally:
        core.shutdown()
