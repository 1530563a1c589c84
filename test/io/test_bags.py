"""Tests for darknet53_ros.io.bags: rosbag2 MCAP/SQLite3 round trips, independent MCAP reader."""
import os
from pathlib import Path
import shutil
import sqlite3

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.io import rosbags_compat
from darknet53_ros.io.bag_writer import (
    BagWriter,
    SyntheticFrame,
    synthetic_messages,
    write_synthetic_bag,
)
from darknet53_ros.io.bags import (
    COMPRESSED_IMAGE_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    BagReader,
    annotated_topic,
    detect_storage,
    detections_topic,
    list_image_topics,
)
from darknet53_ros.io.encodings import msg_to_bgr
from darknet53_ros.io.messages import (
    MessageTypes,
    detections_to_msg,
    header_msg,
    image_msg,
)

from ..conftest import optional_module, requires

pytestmark = requires('rosbags')
T0 = 1_700_000_000_000_000_000
# Read without importing rosbags here: a robot's python3 has no rosbags (no rosdep key), and
# this module must still collect (its tests then skip through pytestmark).
WRITES_MCAP = optional_module('rosbags') is not None and rosbags_compat.writes_mcap()
needs_mcap_writer = pytest.mark.skipif(not WRITES_MCAP,
                                       reason='rosbags < 0.10 writes SQLite3 only')


def _mcap_file(path, frames, distro='humble', statistics=True):
    """An MCAP rosbag2 storage file written with the mcap package (ros2 profile, ros2msg
    schemas): MCAP input for the reader on every rosbags version, rosbags 0.9 included."""
    from mcap.writer import Writer

    types = MessageTypes.from_rosbags(distro)
    store = types.typestore
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('wb') as stream:
        writer = Writer(stream, use_statistics=statistics)
        writer.start(profile='ros2', library='test')
        schemas, channels = {}, {}
        for topic, stamp, msg in synthetic_messages(types, frames):
            msgtype = msg.__msgtype__
            if msgtype not in schemas:
                text, _ = store.generate_msgdef(msgtype, ros_version=2)
                schemas[msgtype] = writer.register_schema(msgtype, 'ros2msg', text.encode())
            if topic not in channels:
                channels[topic] = writer.register_channel(
                    topic, 'cdr', schemas[msgtype],
                    {'offered_qos_profiles': rosbags_compat.DEFAULT_QOS_YAML})
            writer.add_message(channels[topic], stamp, types.serialize(msg), stamp)
        writer.finish()
    return path


def _synthetic_bag(path, frames, storage):
    """A bag in ``storage``; MCAP without metadata.yaml where rosbags cannot write MCAP."""
    if storage == 'mcap' and not WRITES_MCAP:
        _mcap_file(path / f'{path.name}_0.mcap', frames)
        return path
    return write_synthetic_bag(path, frames, storage=storage)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # Smooth content so JPEG stays close to the source.
        img = cv2.resize(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), (40, 32),
                         interpolation=cv2.INTER_LINEAR)
        out.append(img)
    return out


def _frames():
    images = _images(3)
    frames = []
    for i, img in enumerate(images):
        frames.append(SyntheticFrame('/front/image_raw', 'front', T0 + i * 100_000_000, img,
                                     'rgb8'))
        frames.append(('/rear/image_raw/compressed', 'rear', T0 + i * 100_000_000 + 1, img,
                       'jpeg'))
        frames.append(('/side/image_raw', 'side', T0 + i * 100_000_000 + 2, img, 'mono8'))
    return images, frames


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_multi_camera(tmp_path, storage):
    images, frames = _frames()
    bag = _synthetic_bag(tmp_path / 'bag', frames, storage)
    assert detect_storage(bag) == storage
    assert sorted(os.listdir(tmp_path)) == ['bag']  # no temporary leftovers
    topics = {t.name: (t.msgtype, t.count) for t in list_image_topics(bag)}
    assert topics == {'/front/image_raw': (IMAGE_TYPE, 3),
                      '/rear/image_raw/compressed': (COMPRESSED_IMAGE_TYPE, 3),
                      '/side/image_raw': (IMAGE_TYPE, 3)}
    with BagReader(bag) as reader:
        got = list(reader.messages(['/front/image_raw', '/rear/image_raw/compressed']))
        assert [t for t, _, _ in got] == ['/front/image_raw', '/rear/image_raw/compressed'] * 3
        for index, (topic, stamp, msg) in enumerate(got):
            image = images[index // 2]
            assert stamp == T0 + (index // 2) * 100_000_000 + (index % 2)
            assert msg.header.frame_id == ('front' if index % 2 == 0 else 'rear')
            bgr = msg_to_bgr(msg)
            if topic == '/front/image_raw':
                assert msg.encoding == 'rgb8'
                np.testing.assert_array_equal(bgr, image)
            else:
                assert msg.format == 'bgr8; jpeg compressed bgr8'
                assert np.abs(bgr.astype(int) - image).mean() < 3
        assert reader.counts['/front/image_raw'].read == 3
        assert reader.counts['/front/image_raw'].undecodable == 0
        side = [m for _, _, m in reader.messages(['/side/image_raw'])]
        np.testing.assert_array_equal(msg_to_bgr(side[0])[..., 0],
                                      cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY))
        window = list(reader.messages(start_ns=T0 + 100_000_000, stop_ns=T0 + 200_000_000))
        assert len(window) == 3
        with pytest.raises(SourceError, match='/nope'):
            list(reader.messages(['/nope']))


def _write_detections(path, storage=None, overwrite=False):
    types = MessageTypes.from_rosbags('jazzy')
    with BagWriter(path, storage=storage, types=types, overwrite=overwrite) as writer:
        for i, topic in enumerate(['/front/image_raw', '/rear/image_raw/compressed']):
            header = header_msg(types, T0 + i, topic.split('/')[1])
            msg = detections_to_msg(types, header, [[1, 2, 11, 22]], [0.75], [3],
                                    names=['a', 'b', 'c', 'dog'])
            writer.write(detections_topic(topic), T0 + i, msg)
            empty = detections_to_msg(types, header, [], [], [])
            writer.write(detections_topic(topic), T0 + 10 + i, empty)
            writer.write(annotated_topic(topic), T0 + i,
                         image_msg(types, header, np.full((8, 8, 3), 7, np.uint8)))
    return path


@needs_mcap_writer
@requires('mcap')
def test_detections_readable_with_rosbags_and_mcap(tmp_path):
    bag = _write_detections(tmp_path / 'out')
    with BagReader(bag) as reader:
        assert reader.topics['/front/image_raw/detections'].msgtype == DETECTIONS_TYPE
        assert reader.topics['/rear/image_raw/detections/image'].msgtype == IMAGE_TYPE
        dets = [m for _, _, m in reader.messages(['/rear/image_raw/detections'])]
        assert [len(m.detections) for m in dets] == [1, 0]
        det = dets[0].detections[0]
        assert det.results[0].hypothesis.class_id == 'dog'
        assert (det.bbox.center.position.x, det.bbox.size_y) == (6.0, 20.0)
        assert dets[0].header.frame_id == 'rear'

    # Independent reader: the mcap package sees ros2msg schemas with embedded dependencies.
    from mcap.reader import make_reader

    (mcap_file,) = bag.glob('*.mcap')
    with mcap_file.open('rb') as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        channels = {c.topic: c for c in summary.channels.values()}
        schema = schemas[DETECTIONS_TYPE]
        assert schema.encoding == 'ros2msg'
        text = schema.data.decode()
        for dependency in ('MSG: vision_msgs/Detection2D', 'MSG: vision_msgs/BoundingBox2D',
                           'MSG: vision_msgs/ObjectHypothesisWithPose', 'MSG: std_msgs/Header',
                           'MSG: geometry_msgs/PoseWithCovariance'):
            assert dependency in text
        assert set(channels) == {
            '/front/image_raw/detections', '/front/image_raw/detections/image',
            '/rear/image_raw/detections', '/rear/image_raw/detections/image'}
        for channel in channels.values():
            assert channel.message_encoding == 'cdr'
            assert 'offered_qos_profiles' in channel.metadata
        raw = [m.data for _, c, m in reader.iter_messages(topics=['/front/image_raw/detections'])]
    assert len(raw) == 2

    # Decode with a fresh typestore built only from the embedded schema text.
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(text, DETECTIONS_TYPE))
    msg = store.deserialize_cdr(raw[0], DETECTIONS_TYPE)
    assert msg.detections[0].bbox.size_x == 10.0
    assert msg.detections[0].results[0].hypothesis.score == 0.75


def test_sqlite3_bag_stores_definitions(tmp_path):
    bag = _write_detections(tmp_path / 'out', storage='sqlite3')
    (db,) = bag.glob('*.db3')
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute(
            'select topic_type, encoded_message_definition from message_definitions'))
    assert 'MSG: vision_msgs/Detection2D' in rows[DETECTIONS_TYPE]
    with BagReader(bag) as reader:
        assert sum(1 for _ in reader.messages()) == 6


def test_writer_is_atomic(tmp_path):
    bag = _write_detections(tmp_path / 'out')
    before = sorted(p.name for p in bag.iterdir())
    with pytest.raises(SourceError, match='exists'):
        BagWriter(bag)
    types = MessageTypes.from_rosbags()
    with pytest.raises(RuntimeError, match='crash'):
        with BagWriter(bag, types=types, overwrite=True) as writer:
            writer.write('/x', 1, header_msg(types, 1, 'x'))
            raise RuntimeError('crash')
    assert sorted(p.name for p in bag.iterdir()) == before
    assert sorted(os.listdir(tmp_path)) == ['out']  # partial bag removed
    with BagReader(bag) as reader:
        assert '/x' not in reader.topics
    _write_detections(bag, storage='sqlite3', overwrite=True)
    assert detect_storage(bag) == 'sqlite3' and sorted(os.listdir(tmp_path)) == ['out']
    with pytest.raises(ConfigError, match='storage'):
        BagWriter(tmp_path / 'other', storage='rosbag1')


def test_writer_rejects_type_conflicts(tmp_path):
    types = MessageTypes.from_rosbags()
    with pytest.raises(ConfigError, match='/t'):
        with BagWriter(tmp_path / 'b', types=types) as writer:
            writer.write('/t', 1, header_msg(types, 1))
            writer.write('/t', 2, types.Time(sec=0, nanosec=0))
    with pytest.raises(ConfigError, match='typestore'):
        with BagWriter(tmp_path / 'c', types=types) as writer:
            writer.write_raw('/t', 1, b'', 'nope_msgs/msg/Nope')
    assert not (tmp_path / 'b').exists() and not (tmp_path / 'c').exists()


def test_truncated_and_corrupt_bags(tmp_path):
    _, frames = _frames()
    bag = _synthetic_bag(tmp_path / 'bag', frames, 'mcap')
    (mcap_file,) = bag.glob('*.mcap')
    data = mcap_file.read_bytes()
    truncated = tmp_path / 'truncated'
    truncated.mkdir()
    (truncated / 'rec_0.mcap').write_bytes(data[:len(data) // 2])
    with pytest.raises(SourceError, match='truncated'):
        BagReader(truncated).open()
    garbage = tmp_path / 'garbage.mcap'
    garbage.write_bytes(b'\x89MCAP0\r\n' + b'\0' * 64)
    with pytest.raises(SourceError, match='garbage.mcap'):
        list_image_topics(garbage)
    with pytest.raises(SourceError, match='missing'):
        list_image_topics(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SourceError, match='empty'):
        detect_storage(tmp_path / 'empty')


def test_undecodable_messages_are_counted_and_skipped(tmp_path):
    types = MessageTypes.from_rosbags()
    with BagWriter(tmp_path / 'b', types=types) as writer:
        writer.write('/cam/image', 1, image_msg(types, header_msg(types, 1), np.zeros((2, 2, 3),
                                                                                    np.uint8)))
        writer.write_raw('/cam/image', 2, b'\x00\x01\x00\x00\xff', IMAGE_TYPE)
        writer.write('/cam/image', 3, image_msg(types, header_msg(types, 3), np.ones((2, 2, 3),
                                                                                   np.uint8)))
    with BagReader(tmp_path / 'b') as reader:
        stamps = [stamp for _, stamp, _ in reader.messages()]
        assert stamps == [1, 3]
        counts = reader.counts['/cam/image']
        assert (counts.read, counts.undecodable) == (2, 1) and counts.last_error


def test_single_files_and_directories_without_metadata(tmp_path):
    images, frames = _frames()
    for storage in ('mcap', 'sqlite3'):
        bag = _synthetic_bag(tmp_path / storage, frames, storage)
        (file,) = [p for p in bag.iterdir() if p.name != 'metadata.yaml']
        renamed = tmp_path / f'{storage}_recording.bin'  # wrong suffix: detected by content
        shutil.copy(file, renamed)
        assert detect_storage(renamed) == storage
        with BagReader(renamed) as reader:
            assert len(reader.image_topics()) == 3
            assert sum(1 for _ in reader.messages()) == 9
        (bag / 'metadata.yaml').unlink(missing_ok=True)  # e.g. a recording that crashed
        with BagReader(bag) as reader:
            msgs = [m for _, _, m in reader.messages(['/front/image_raw'])]
            np.testing.assert_array_equal(msg_to_bgr(msgs[2]), images[2])


def test_topic_names():
    assert detections_topic('/cam/image_raw') == '/cam/image_raw/detections'
    assert detections_topic('/cam/image_raw/compressed') == '/cam/image_raw/detections'
    assert annotated_topic('/cam/image_raw/compressed/') == '/cam/image_raw/detections/image'


def test_reader_requires_open(tmp_path):
    bag = write_synthetic_bag(tmp_path / 'b', [('/c', 'c', 1, np.zeros((2, 2, 3), np.uint8))])
    reader = BagReader(Path(bag))
    with pytest.raises(SourceError, match='not open'):
        next(reader.messages())


@requires('mcap')
def test_mcap_written_by_another_tool_is_read(tmp_path):
    """An MCAP file from another writer (the mcap package), alone and in a folder, with and
    without statistics: read on every rosbags version (0.9 gets metadata written for it)."""
    images, frames = _frames()
    file = _mcap_file(tmp_path / 'rec' / 'rec_0.mcap', frames)
    for source in (file, file.parent):
        with BagReader(source) as reader:
            assert {t.name: t.count for t in reader.image_topics()} == {
                '/front/image_raw': 3, '/rear/image_raw/compressed': 3, '/side/image_raw': 3}
            msgs = [m for _, _, m in reader.messages(['/front/image_raw'])]
            np.testing.assert_array_equal(msg_to_bgr(msgs[1]), images[1])
    bare = _mcap_file(tmp_path / 'bare.mcap', frames, statistics=False)
    with BagReader(bare) as reader:
        assert len(reader.image_topics()) == 3
        assert sum(1 for _ in reader.messages()) == 9


def test_default_storage_and_explicit_mcap_where_mcap_cannot_be_written(monkeypatch, caplog):
    monkeypatch.setattr(rosbags_compat, 'writes_mcap', lambda: True)
    assert rosbags_compat.resolve_storage(None) == 'mcap'
    assert rosbags_compat.resolve_storage('sqlite3') == 'sqlite3'
    monkeypatch.setattr(rosbags_compat, 'writes_mcap', lambda: False)
    with caplog.at_level('WARNING'):
        assert rosbags_compat.resolve_storage(None, 'rosbag2 out') == 'sqlite3'
    assert [r.getMessage() for r in caplog.records] == [
        'rosbag2 out: writing SQLite3 (.db3): rosbags 0.9 (the last release for Python 3.8) '
        'cannot write MCAP']
    assert rosbags_compat.resolve_storage('sqlite3') == 'sqlite3'
    with pytest.raises(ConfigError, match='out: storage mcap cannot be written'):
        rosbags_compat.resolve_storage('mcap', 'out')


@pytest.mark.skipif(WRITES_MCAP, reason='rosbags >= 0.10 writes MCAP')
def test_rosbags_0_9_writes_sqlite3_by_default_and_refuses_explicit_mcap(tmp_path):
    _, frames = _frames()
    bag = write_synthetic_bag(tmp_path / 'bag', frames)
    assert detect_storage(bag) == 'sqlite3'
    with pytest.raises(ConfigError, match='mcap'):
        write_synthetic_bag(tmp_path / 'other', frames, storage='mcap')
    assert not (tmp_path / 'other').exists()


def test_missing_typestore_falls_back_to_iron(monkeypatch, caplog):
    monkeypatch.setattr(rosbags_compat, 'store_names',
                        lambda: ['ros2_humble', 'ros2_iron'])
    with caplog.at_level('WARNING'):
        store = rosbags_compat.get_store('ros2_jazzy')
    assert 'sensor_msgs/msg/Image' in store.types
    assert 'using ros2_iron' in caplog.text
