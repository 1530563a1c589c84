"""``darknet53 detect --fleet`` on Ray Data: the rows equal ``detect`` on each source alone,
exactly once through a killed worker and a driver killed with ``kill -9``, on a two-node local
Ray cluster. Ray tests share one cluster (``ray.cluster_utils.Cluster``), 40 tiny two-camera
bags, a corrupt bag, a bag with an undecodable frame and a folder with a broken image."""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from darknet53_ros.cli.common import check_dependencies
from darknet53_ros.cli.main import build_parser
from darknet53_ros.errors import ConfigError

from ..conftest import optional_module, requires

RAY_NEEDS = ('ray', 'pyarrow', 'cv2', 'onnxruntime', 'rosbags')
needs_ray = requires(*RAY_NEEDS)
BAGS = 40
"""Bags of the fleet: 2 cameras x 2 frames each. The fleet also holds a corrupt bag, a bag with
an undecodable frame and a folder with an unreadable image."""
SOURCES_OK = BAGS + 2
FRAMES_OK = BAGS * 4 + 2 + 2
ROOT = Path(__file__).resolve().parents[2]
cv2 = optional_module('cv2')


# -- the command line (no Ray needed) ---------------------------------------------------------
def _fleet_args(*extra: str):
    return build_parser().parse_args(['detect', '--model', 'm.onnx', '--fleet', 'a', 'b',
                                      '--output', 'out', *extra])


def test_fleet_refuses_old_python_in_one_line(monkeypatch):
    monkeypatch.setattr(sys, 'version_info', (3, 8, 18, 'final', 0))
    with pytest.raises(ConfigError) as info:
        check_dependencies(_fleet_args())
    text = str(info.value)
    assert '\n' not in text and 'detect --fleet' in text and '3.10+' in text


def test_fleet_names_the_extra_when_ray_is_missing(monkeypatch):
    from darknet53_ros.cli import common

    monkeypatch.setattr(common, '_installed', lambda module: module != 'ray')
    monkeypatch.setattr(sys, 'version_info', (3, 11, 7, 'final', 0))  # CI's 3.8 too
    with pytest.raises(ConfigError, match=r"ray, which is not installed: pip install "
                                          r"'darknet53_ros\[fleet\]'") as info:
        check_dependencies(_fleet_args())
    assert '\n' not in str(info.value)
    check_dependencies(build_parser().parse_args(['detect', '--model', 'm.onnx', '--source',
                                                  'x.png', '--output', 'o']))


def test_fleet_options_parse():
    args = _fleet_args('--batch-size', '6', '--workers', '2', '--ray-address', 'auto')
    assert (args.fleet, args.batch, args.workers, args.ray_address) == (['a', 'b'], 6, 2,
                                                                         'auto')
    with pytest.raises(SystemExit):
        build_parser().parse_args(['detect', '--model', 'm', '--source', 's', '--fleet', 'a',
                                   '--output', 'o'])


def test_fleet_refuses_annotated_image_options():
    from darknet53_ros.cli.detect import run_fleet

    for extra in (['--save-images', '3'], ['--annotated', 'raw']):
        with pytest.raises(ConfigError, match='apply to --source'):
            run_fleet(_fleet_args(*extra))


# -- sources (pyarrow only) --------------------------------------------------------------------
@requires('pyarrow', 'cv2')
def test_expand_sources_globs_listings_archives(tmp_path):
    import numpy as np

    from darknet53_ros.tools.fleet_sources import expand_sources, unit_for

    archive = tmp_path / 'archive'
    for name in ('run_b', 'run_a'):
        (archive / name).mkdir(parents=True)
        (archive / name / 'x.mcap').write_bytes(b'\x89MCAP0\r\n')
    (archive / 'notes').mkdir()
    images = tmp_path / 'imgs'
    images.mkdir()
    cv2.imwrite(str(images / 'a.png'), np.zeros((8, 8, 3), np.uint8))
    listing = tmp_path / 'list.txt'
    listing.write_text('# fleet\nimgs\n\ns3://bucket/bag7  # remote\n' + str(archive / 'run_a')
                       + '\n')
    units = expand_sources([str(archive), str(listing), str(tmp_path / 'arch*' / 'run_*'),
                            str(tmp_path / 'missing')])
    sources = [u.source for u in units]
    assert sources == [str(archive / 'run_a'), str(archive / 'run_b'), str(images),
                       's3://bucket/bag7', str(tmp_path / 'missing')]
    assert units[0] == unit_for(str(archive / 'run_a'))
    assert units[0].uid.startswith('run_a-') and len({u.uid for u in units}) == 5


@requires('pyarrow', 'cv2')
def test_read_unit_records_frames_failures_and_errors(tmp_path):
    import numpy as np

    from darknet53_ros.tools.fleet_sources import ReadOptions, read_unit, unit_for

    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), np.full((20, 30, 3), 200, np.uint8))
    (folder / 'b.jpg').write_bytes(b'not a jpeg')
    options = ReadOptions(block_frames=1)
    rows = [r for block in read_unit(unit_for(str(folder)), options) for r in block.to_pylist()]
    assert [(r['kind'], r['seq'], r['index'], r['file']) for r in rows] == [
        ('frame', 0, 0, 'a.png'), ('failed', 1, 1, 'b.jpg'), ('end', -1, None, None)]
    assert (rows[0]['height'], rows[0]['width'], rows[0]['channels']) == (20, 30, 3)
    assert rows[-1]['count'] == 2
    # Through pyarrow.fs (file:// URI): fetched to scratch space, read the same.
    uri_rows = [r for block in read_unit(unit_for(folder.as_uri()), options)
                for r in block.to_pylist()]
    assert [r['kind'] for r in uri_rows] == ['frame', 'failed', 'end']
    for source in (str(tmp_path / 'nope'), (tmp_path / 'nope').as_uri()):
        (error,) = [r for b in read_unit(unit_for(source), options) for r in b.to_pylist()]
        assert error['kind'] == 'error' and 'nope' in error['reason']


# -- the fleet on Ray --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def fleet_inputs(tmp_path_factory):
    """The demo model, 40 two-camera bags and a corrupt one."""
    if missing := [m for m in RAY_NEEDS if optional_module(m) is None]:
        pytest.skip(f'{", ".join(missing)} not installed')
    from darknet53_ros.tools.camera_bag import write_camera_bag
    from darknet53_ros.tools.demo import export_demo_model
    from darknet53_ros.training.synthetic.scenes import generate_scene

    root = tmp_path_factory.mktemp('fleet')
    model = export_demo_model(root / 'demo.onnx')
    for i in range(BAGS):
        write_camera_bag(root / 'bags' / f'drive{i:02d}', cameras=2, frames=2, seed=i,
                         width=160, height=128)
    corrupt = root / 'bags' / 'drive_corrupt'
    corrupt.mkdir()
    (corrupt / 'drive_corrupt_0.mcap').write_bytes(b'\x89MCAP0\r\n' + b'\x00garbage' * 64)
    _bag_with_a_bad_frame(root / 'more' / 'bad_frame')
    folder = root / 'more' / 'images'
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f'img{i}.png'), generate_scene(7, i, 128, 96)[0])
    (folder / 'broken.jpg').write_bytes(b'not a jpeg')
    return model, root / 'bags'


def _bag_with_a_bad_frame(path):
    """Three JPEG frames on one topic, the second one undecodable."""
    from darknet53_ros.io.bag_writer import BagWriter
    from darknet53_ros.io.messages import MessageTypes, header_msg
    from darknet53_ros.training.synthetic.scenes import generate_scene

    types = MessageTypes.from_rosbags('humble')
    with BagWriter(path, types=types) as writer:
        for i in range(3):
            stamp = 1_700_000_000_000_000_000 + i * 50_000_000
            data = cv2.imencode('.jpg', generate_scene(3, i, 160, 128)[0])[1].reshape(-1)
            if i == 1:
                data = data[:40]
            writer.write('/cam/image_raw/compressed', stamp, types.CompressedImage(
                header=header_msg(types, stamp, 'cam'), format='jpeg', data=data))


def _sources(bags):
    return [str(bags), str(bags.parent / 'more' / '*')]


@pytest.fixture(scope='module')
def cluster(fleet_inputs):
    """A two-node local Ray cluster, connected. The head has one CPU: of two detector actors
    (one CPU each) one must run on the other node."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        'num_cpus': 1, 'include_dashboard': False})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _options(output, **kw):
    from darknet53_ros.tools.fleet import FleetOptions

    kw.setdefault('workers', 2)
    kw.setdefault('batch_size', 3)
    return FleetOptions(output=output, progress=False, **kw)


@pytest.fixture(scope='module')
def fleet_run(fleet_inputs, cluster, tmp_path_factory):
    """The fleet over the 40 bags (and the corrupt one) on the two-node cluster."""
    from darknet53_ros.tools.fleet import run_fleet

    model, bags = fleet_inputs
    out = tmp_path_factory.mktemp('fleet_out') / 'out'
    summary = run_fleet(model, _sources(bags), _options(out, write_bags=True))
    return out, summary


def _table(out: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out / 'detections').sort_by([('unit', 'ascending')])


def _reference(model, source, tmp):
    """``darknet53 detect`` on one source alone: its rows (from images.json and
    detections.json) and its skipped frames (summary.json)."""
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.tools.runner import OfflineRunner

    with Detector.from_model(model) as detector:
        OfflineRunner(detector, tmp, annotate=False, progress=False).run(source)
    images = json.loads((tmp / 'images.json').read_text())
    found: dict[int, list] = {image['id']: [] for image in images}
    for det in json.loads((tmp / 'detections.json').read_text()):
        found[det['image_id']].append((det['category_id'] - 1, det['score'], *det['bbox']))
    rows = {(i['source'], i['index']): (i.get('stamp_ns'), i['width'], i['height'],
                                        sorted(found[i['id']])) for i in images}
    failures = json.loads((tmp / 'summary.json').read_text())['failures']
    return rows, sorted((f['source'], f['index'], f['reason']) for f in failures)


def _frame_key(row):
    """What detect calls a frame's source: the topic, else the image file, else the video."""
    if row['topic'] is not None:
        return row['topic']
    return str(Path(row['source']) / row['file']) if row['file'] else row['source']


def _fleet_rows(rows):
    """Fleet rows in the form of :func:`_reference` (COCO rounding of boxes and scores)."""
    out: dict[tuple, tuple] = {}
    for r in rows:
        key = (_frame_key(r), r['frame_index'])
        stamp, width, height, dets = out.setdefault(key, (r['stamp_ns'], r['width'],
                                                          r['height'], []))
        if r['detection'] is not None:
            dets.append((r['class_id'], round(r['score'], 5), round(r['x1'], 2),
                         round(r['y1'], 2), round(r['x2'] - r['x1'], 2),
                         round(r['y2'] - r['y1'], 2)))
    return {k: (s, w, h, sorted(d)) for k, (s, w, h, d) in out.items()}


def _fleet_failures(rows):
    return sorted((_frame_key(r), r['frame_index'], r['reason']) for r in rows)


def _bag_messages(path):
    from darknet53_ros.io.bags import BagReader

    with BagReader(path) as reader:
        return [(topic, when, m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec,
                 [(d.results[0].hypothesis.class_id, d.results[0].hypothesis.score,
                   d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                   d.bbox.size_y) for d in m.detections])
                for topic, when, m in reader.messages()]


@needs_ray
def test_fleet_rows_equal_detect_on_each_source(fleet_inputs, fleet_run, tmp_path):
    import pyarrow.parquet as pq

    model, bags = fleet_inputs
    out, summary = fleet_run
    rows = _table(out).to_pylist()
    failures = pq.read_table(out / 'failures').to_pylist()
    assert [Path(s['source']).name for s in summary.failed_sources] == ['drive_corrupt']
    assert 'cannot open' in summary.failed_sources[0]['reason']
    assert [(f['scope'], Path(f['source']).name) for f in failures
            if f['scope'] == 'source'] == [('source', 'drive_corrupt')]
    assert summary.frames_now == FRAMES_OK and len(summary.sources) == SOURCES_OK + 1
    by_source: dict[str, list] = {}
    for row in rows:
        by_source.setdefault(row['source'], []).append(row)
    more = bags.parent / 'more'
    assert sorted(by_source) == sorted([str(bags / f'drive{i:02d}') for i in range(BAGS)]
                                       + [str(more / 'bad_frame'), str(more / 'images')])
    # detect on a few bags alone (all of them: the same code, 40 times the time) and on the
    # sources with bad frames
    for source in [bags / f'drive{i:02d}' for i in (0, 17, BAGS - 1)] + [
            more / 'bad_frame', more / 'images']:
        reference, skipped = _reference(model, source, tmp_path / source.name)
        assert _fleet_rows(by_source[str(source)]) == reference, source
        assert _fleet_failures([f for f in failures if f['source'] == str(source)]) == skipped
        if source.parent == bags:
            uid = by_source[str(source)][0]['unit']
            assert _bag_messages(out / 'bags' / f'{uid}_detections') == _bag_messages(
                tmp_path / source.name / f'{source.name}_detections')
    assert {(r['topic'], r['frame_id']) for r in by_source[str(bags / 'drive00')]} == {
        ('/front/image_raw', 'front_camera_optical_frame'),
        ('/left/image_raw/compressed', 'left_camera_optical_frame')}
    assert len({(r['unit'], _frame_key(r), r['frame_index']) for r in rows}) == FRAMES_OK
    assert sum(r['detection'] is not None for r in rows) == sum(
        s.get('detections', 0) for s in summary.sources)
    assert pq.read_schema(next((out / 'detections').glob('*.parquet'))).metadata[
        b'darknet53_ros.fleet.schema_version'] == b'1'
    assert not [p for p in out.rglob('*') if '.tmp' in p.name or p.name.endswith('.partial')]


@needs_ray
def test_killed_worker_gives_identical_output(fleet_inputs, fleet_run, tmp_path, monkeypatch):
    """An actor that dies mid-batch (os._exit) is restarted by Ray and its batch run again:
    nothing lost, nothing twice. Ten sources (the corrupt one and the bad frames among them)
    keep it short."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from darknet53_ros.tools.fleet import FAULT_ENV, run_fleet
    from darknet53_ros.tools.fleet_sources import unit_for

    model, bags = fleet_inputs
    more = bags.parent / 'more'
    chosen = [bags / f'drive{i:02d}' for i in range(0, BAGS, 5)] + [
        bags / 'drive_corrupt', more / 'bad_frame', more / 'images']
    listing = tmp_path / 'sources.txt'
    listing.write_text('\n'.join(str(p) for p in chosen) + '\n')
    flag = tmp_path / 'crashed'
    monkeypatch.setenv(FAULT_ENV, f'exit-once:{flag}')
    summary = run_fleet(model, [str(listing)], _options(tmp_path / 'out', write_bags=True))
    assert flag.exists()  # an actor died in its first batch
    assert summary.frames_now == (len(chosen) - 3) * 4 + 4
    assert [Path(s['source']).name for s in summary.failed_sources] == ['drive_corrupt']
    reference = _table(fleet_run[0])
    units = pa.array([unit_for(str(p)).uid for p in chosen])
    assert _table(tmp_path / 'out').equals(reference.filter(pc.is_in(reference['unit'], units)))


@needs_ray
def test_sources_inside_the_output_are_left_out(tmp_path):
    from darknet53_ros.tools.fleet import _inside
    from darknet53_ros.tools.fleet_sources import unit_for

    out = tmp_path / 'out'
    assert _inside(unit_for(str(out / 'bags' / 'x_detections')), out)
    assert not _inside(unit_for(str(tmp_path / 'drive')), out)
    assert not _inside(unit_for('s3://bucket/out/x'), out)


def _driver(args, env):
    return subprocess.Popen([sys.executable, '-m', 'darknet53_ros.cli.main', *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@needs_ray
def test_resume_after_kill_9_of_the_driver(fleet_inputs, fleet_run, cluster, tmp_path):
    from darknet53_ros.tools.fleet import FAULT_ENV

    model, bags = fleet_inputs
    out = tmp_path / 'out'
    args = ['detect', '--model', str(model), '--fleet', *_sources(bags), '--output', str(out),
            '--workers', '1', '--batch-size', '2', '--write-bags', '--no-progress']
    env = {**os.environ, 'PYTHONPATH': str(ROOT), FAULT_ENV: 'delay:0.2'}
    driver = _driver([*args, '--ray-address', cluster.address], env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if len(list((out / 'manifest').glob('*.json'))) >= 3:
            break
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()[0][-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    committed = len(list((out / 'manifest').glob('*.json')))
    assert 3 <= committed < SOURCES_OK
    env.pop(FAULT_ENV)
    env.pop('RAY_ADDRESS', None)
    rerun = _driver(args, env)  # a new local Ray, same arguments
    text = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 1 and (out / 'summary.json').is_file(), text[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['done_earlier'] >= committed and summary['failed'] == 1
    assert summary['done_earlier'] + summary['processed_now'] == SOURCES_OK
    assert _table(out).equals(_table(fleet_run[0]))
    assert not [p for p in out.rglob('*') if '.tmp' in p.name or p.name.endswith('.partial')]
    # the folder belongs to this configuration: other thresholds are refused, before any work
    from darknet53_ros.tools.fleet import run_fleet

    with pytest.raises(ConfigError, match='another configuration'):
        run_fleet(model, _sources(bags), _options(out, detector={'conf_threshold': 0.5}))
