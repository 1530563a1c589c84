"""Tests for ``darknet53 replay``: a 4-camera MCAP bag through the node core into a new bag."""
import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, SourceError

from ..conftest import export_tiny_model, requires

pytestmark = requires('rosbags', 'onnxruntime')

NAMES = ['box', 'cone', 'ball']
T0 = 1_700_000_000_000_000_000
FRAMES = 4
# (topic, frame_id, encoding, size (h, w)): raw and compressed topics mixed.
CAMERAS = [
    ('/front/image_raw', 'front_optical', 'bgr8', (120, 160)),
    ('/left/image_raw/compressed', 'left_optical', 'jpeg', (96, 128)),
    ('/right/image_raw/compressed', 'right_optical', 'png', (80, 80)),
    ('/rear/image_raw', 'rear_optical', 'rgb8', (64, 112)),
]
CORRUPT_TOPIC = '/rear/image_raw'


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES)


def _stamp(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """4 cameras x FRAMES frames at 10 Hz, plus one corrupt image (decodes as CDR, too little
    pixel data) and one message that is not even valid CDR on the rear camera."""
    from darknet53_ros.io.bag_writer import BagWriter
    from darknet53_ros.io.messages import compressed_image_msg, header_msg, image_msg

    path = tmp_path_factory.mktemp('bags') / 'cams'
    rng = np.random.default_rng(0)
    with BagWriter(path) as writer:
        types = writer.types
        for i in range(FRAMES):
            for k, (topic, frame_id, encoding, (h, w)) in enumerate(CAMERAS):
                stamp = T0 + i * 100_000_000 + k * 1_000_000
                header = header_msg(types, stamp, frame_id)
                image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                if encoding in ('jpeg', 'png'):
                    msg = compressed_image_msg(types, header, image, encoding)
                else:
                    msg = image_msg(types, header, image, encoding)
                writer.write(topic, stamp + 2_000_000, msg)  # received 2 ms after the stamp
        bad_stamp = T0 + 150_000_000
        corrupt = types.Image(header=header_msg(types, bad_stamp, 'rear_optical'), height=64,
                              width=112, encoding='bgr8', is_bigendian=0, step=336,
                              data=np.zeros(10, np.uint8))
        writer.write(CORRUPT_TOPIC, bad_stamp, corrupt)
        writer.write_raw(CORRUPT_TOPIC, bad_stamp + 1, b'\x00\x01\x00\x00\xff',
                         'sensor_msgs/msg/Image')
    return path


def _read(path, topics=None):
    from darknet53_ros.io.bags import BagReader

    with BagReader(path) as reader:
        return dict(reader.topics), list(reader.messages(topics))


def _inputs(bag):
    _, messages = _read(bag, [c[0] for c in CAMERAS])
    return messages


def test_deterministic_replay_cli(bag, model_path, tmp_path):
    from darknet53_ros.cli.main import main
    from darknet53_ros.io.bags import detections_topic

    out = tmp_path / 'out'
    assert main(['replay', '--model', str(model_path), '--bag', str(bag), '--output',
                 str(out)]) == 0
    topics, messages = _read(out)
    inputs = _inputs(bag)
    for topic, frame_id, _, (h, w) in CAMERAS:
        det_topic = detections_topic(topic)
        assert topics[det_topic].msgtype == 'vision_msgs/msg/Detection2DArray'
        assert topics[det_topic].count == FRAMES  # the corrupt message is dropped
        image_topic = det_topic + '/image'
        assert topics[image_topic].msgtype == 'sensor_msgs/msg/Image'
        dets = [(t, m) for tp, t, m in messages if tp == det_topic]
        sources = [(t, m) for tp, t, m in inputs if tp == topic
                   and m.header.frame_id == frame_id and len(m.data) > 100]
        assert [_stamp(m.header) for _, m in dets] == [_stamp(m.header) for _, m in sources]
        for (t_out, det), (t_in, _) in zip(dets, sources):
            assert det.header.frame_id == frame_id and t_out >= t_in
            for d in det.detections:
                assert d.header.frame_id == frame_id
                assert 0 <= d.bbox.center.position.x <= w and 0 <= d.bbox.center.position.y <= h
                assert d.results[0].hypothesis.class_id in NAMES
        images = [m for tp, _, m in messages if tp == image_topic]
        assert [(m.height, m.width, m.header.frame_id) for m in images] == \
            [(h, w, frame_id)] * FRAMES
    for topic, *_ in CAMERAS:  # NAME/label_info beside NAME/detections, once per camera
        label_topic = detections_topic(topic)[:-len('detections')] + 'label_info'
        labels = [m for tp, _, m in messages if tp == label_topic]
        assert len(labels) == 1, label_topic
        assert [c.class_name for c in labels[0].class_map] == NAMES
    diagnostics = [m for tp, _, m in messages if tp == '/diagnostics']
    assert diagnostics
    final = {s.name: {kv.key: kv.value for kv in s.values} for s in diagnostics[-1].status}
    rear = final['darknet53_detector: rear_image_raw']
    assert rear['dropped_bad_image'] == '1' and rear['published'] == str(FRAMES)
    assert rear['received'] == str(FRAMES + 1)
    for topic, *_ in CAMERAS:
        name = topic.replace('/compressed', '').strip('/').replace('/', '_')
        stats = final[f'darknet53_detector: {name}']
        assert stats['dropped_superseded'] == '0' and stats['dropped_stale'] == '0'
    assert final['darknet53_detector: detector']['backend'] == 'onnxruntime'


def test_replay_is_deterministic_and_params_apply(bag, model_path, tmp_path):
    from darknet53_ros.tools.replay import replay_bag

    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    publish_annotated: false\n'
                      '    max_batch: 3\n    conf_threshold: 0.3\n    class_id_format: index\n')
    cameras = ['front:/front/image_raw', '/left/image_raw/compressed',
               'back:/rear/image_raw:raw']
    runs = []
    for name in ('a', 'b'):
        summary = replay_bag(bag, tmp_path / name, model=model_path, params=params,
                             cameras=cameras)
        runs.append(_read(tmp_path / name))
    topics, messages = runs[0]
    assert {t for t in topics if 'detections' in t} == {
        '/front/detections', '/left/image_raw/detections', '/back/detections'}
    assert summary.cameras['back']['dropped']['bad_image'] == 1
    assert summary.undecodable == {CORRUPT_TOPIC: 1}
    assert summary.topics['/front/detections'] == FRAMES
    dets_a = [(tp, t, m) for tp, t, m in runs[0][1] if tp.endswith('detections')]
    dets_b = [(tp, t, m) for tp, t, m in runs[1][1] if tp.endswith('detections')]
    assert len(dets_a) == 3 * FRAMES
    for (tp_a, t_a, a), (tp_b, t_b, b) in zip(dets_a, dets_b):
        assert (tp_a, t_a) == (tp_b, t_b)
        assert [(d.bbox.center.position.x, d.results[0].hypothesis.class_id)
                for d in a.detections] == [(d.bbox.center.position.x,
                                            d.results[0].hypothesis.class_id)
                                           for d in b.detections]
    assert any(m.detections for _, _, m in dets_a)
    assert all(d.results[0].hypothesis.class_id in '012' and d.results[0].hypothesis.score
               >= 0.3 for _, _, m in dets_a for d in m.detections)


def test_realtime_replay_accounts_for_every_frame(bag, model_path, tmp_path):
    from darknet53_ros.tools.replay import replay_bag

    summary = replay_bag(bag, tmp_path / 'rt', model=model_path, realtime=True, rate=4.0,
                         params={'max_frame_age': 0.05, 'publish_annotated': False})
    topics, _ = _read(tmp_path / 'rt')
    assert '/front/image_raw/label_info' in topics and '/diagnostics' in topics
    for topic, *_ in CAMERAS:
        base = topic.replace('/compressed', '').strip('/')
        stats = summary.cameras[base.replace('/', '_')]
        expected = FRAMES + (1 if topic == CORRUPT_TOPIC else 0)
        assert stats['received'] == expected
        assert stats['published'] + stats['dropped_total'] == expected
        written = topics.get(f'/{base}/detections')  # absent when every frame was dropped
        assert (written.count if written else 0) == stats['published']
    # The corrupt frame is either decoded and dropped or superseded before the worker sees it.
    assert summary.cameras['rear_image_raw']['dropped']['bad_image'] <= 1


def test_replay_errors(bag, model_path, tmp_path):
    from darknet53_ros.tools.replay import replay_bag

    with pytest.raises(SourceError, match='/nope/image'):
        replay_bag(bag, tmp_path / 'x', model=model_path, cameras=['nope:/nope/image'])
    with pytest.raises(ConfigError, match='parameter conf_threshold'):
        replay_bag(bag, tmp_path / 'x', model=model_path, params={'conf_threshold': 2.0})
    with pytest.raises(ConfigError, match='parameter model'):
        replay_bag(bag, tmp_path / 'x', model='missing/model.onnx')
    (tmp_path / 'exists').mkdir()
    with pytest.raises(SourceError, match='exists'):
        replay_bag(bag, tmp_path / 'exists', model=model_path)
    assert not (tmp_path / 'x').exists()


def test_cameras_given_as_one_string_are_rejected(bag, model_path, tmp_path):
    """Issue 13.11: ``cameras: front`` in a params file became five one-letter cameras."""
    from darknet53_ros.tools.replay import _camera_values, replay_bag

    with pytest.raises(ConfigError, match='parameter cameras: expected string_array, got str'):
        replay_bag(bag, tmp_path / 'x', model=model_path, params={'cameras': 'front'})
    assert _camera_values(None, {'cameras': ['front']}, {}) == ({}, set())  # the params'
    assert _camera_values(['front:/f/image_raw/compressed', 'rear',
                           '/left/image_raw/compressed'], {},
                          {'/left/image_raw/compressed': 'sensor_msgs/msg/CompressedImage'}) == ({
        'cameras': ['front', 'rear', 'left_image_raw'], 'front.topic': '/f/image_raw',
        'front.transport': 'compressed', 'rear.topic': 'rear/image_raw',
        'rear.transport': 'raw', 'left_image_raw.topic': '/left/image_raw',
        'left_image_raw.transport': 'compressed'}, {'left_image_raw'})


def test_params_file_cameras_with_per_camera_settings(bag, model_path, tmp_path):
    """The params file's cameras and NAME.* settings drive the replay; --cameras replaces the
    list (other cameras' settings then do not apply)."""
    from darknet53_ros.tools.replay import replay_bag

    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    cameras: [f, l]\n    publish_annotated: '
                      'false\n    f: {topic: /front/image_raw, frame_id: f_override}\n'
                      '    l: {topic: /left/image_raw, transport: compressed}\n')
    replay_bag(bag, tmp_path / 'a', model=model_path, params=params)
    topics, messages = _read(tmp_path / 'a')
    assert {t for t in topics if t.endswith('detections')} == {'/f/detections',
                                                                '/l/detections'}
    assert {m.header.frame_id for tp, _, m in messages if tp == '/f/detections'} == {
        'f_override'}
    replay_bag(bag, tmp_path / 'b', model=model_path, params=params,
               cameras=['f:/front/image_raw'])
    topics, _ = _read(tmp_path / 'b')
    assert {t for t in topics if t.endswith('detections')} == {'/f/detections'}


def test_explicit_mcap_is_refused_before_any_work_where_rosbags_cannot_write_it(
        monkeypatch, tmp_path):
    """rosbags 0.9 (Python 3.8): ``--storage mcap`` fails at once, naming the output; the
    default storage falls back to SQLite3 instead (see test/io/test_bags.py)."""
    from darknet53_ros.io import rosbags_compat
    from darknet53_ros.tools.replay import replay_bag

    monkeypatch.setattr(rosbags_compat, 'writes_mcap', lambda: False)
    with pytest.raises(ConfigError, match='out: storage mcap cannot be written'):
        replay_bag(tmp_path / 'missing_bag', tmp_path / 'out', storage='mcap')
