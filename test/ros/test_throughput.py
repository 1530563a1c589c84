"""Issue 21 without ROS: decode threads, reduced-scale decoding with boxes in source pixels,
annotated images off the inference thread (latest wins, rate and scale), raw (CDR) ingest
with its fallback, ONNX Runtime without spinning, and the rate diagnostics in the node core."""
from __future__ import annotations

import re
import threading
import time

import cv2
import numpy as np
import pytest

from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.cdr import (
    CdrHeader,
    CdrImage,
    CdrTime,
    read_compressed_image,
    read_image,
    write_compressed_image,
    write_image,
)
from darknet53_ros.ros.annotator import RateLimiter
from darknet53_ros.ros.ingest import RawIngest
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import NodeParams

from ..conftest import cdr_deserialize, export_tiny_model, requires

pytestmark = requires('onnxruntime')

STAMP = 1_700_000_000_000_000_000
CAMERAS = ['a', 'b', 'c']
CAMERA_TOPICS = {'a.topic': '/a/image_raw', 'b.topic': '/b/image_raw',
                 'b.transport': 'compressed', 'c.topic': '/c/image_raw'}


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', ['x', 'y', 'z'])


@pytest.fixture
def types(message_types):
    """The shared ``message_types`` (test/conftest.py) under this module's short name."""
    return message_types


class Collect(Outputs):
    """Records everything; ``gate`` (when set) blocks annotated publishing until released."""

    def __init__(self, image=False, compressed=False, serialized=False):
        self.dets, self.images, self.jpegs = [], [], []
        self.want = (image, compressed)
        self.serialized = serialized
        self.gate: threading.Event | None = None
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def detections(self, camera, msg, stamp_ns):
        with self.lock:
            self.dets.append((camera.name, msg))

    def wants_annotated(self, camera):
        return self.want[0]

    def wants_annotated_compressed(self, camera):
        return self.want[1]

    def annotated(self, camera, msg, stamp_ns):
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(10)
        with self.lock:
            self.images.append((camera.name, msg))

    def annotated_compressed(self, camera, msg, stamp_ns):
        with self.lock:
            self.jpegs.append((camera.name, msg))


def _core(model_path, types, outputs=None, **values):
    params = NodeParams.from_dict({'cameras': CAMERAS, **CAMERA_TOPICS, 'max_frame_age': 0.0,
                                   **values})
    detector, path = load_detector(params, model_path=model_path)
    return NodeCore(params, detector, types, outputs or Collect(), model_path=path)


def _white_box(h, w, box):
    image = np.full((h, w, 3), 30, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 250
    return image


def _jpeg_payload(image, stamp=STAMP, frame_id='b'):
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    header = CdrHeader(CdrTime(*divmod(stamp, 1_000_000_000)), frame_id)
    return write_compressed_image(header, 'jpeg', data.reshape(-1))


def _raw_payload(image, stamp=STAMP, frame_id='a'):
    header = CdrHeader(CdrTime(*divmod(stamp, 1_000_000_000)), frame_id)
    h, w = image.shape[:2]
    return write_image(header, h, w, 'bgr8', w * 3, image)


def _find_white(images):
    """A stand-in for the network: one box around the bright pixels of each image it gets."""
    out = []
    for image in images:
        ys, xs = np.nonzero(image[:, :, 0] > 150)
        out.append(Detections(np.float32([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]),
                              np.float32([0.9]), np.int64([1]), ('x', 'y', 'z')))
    return out


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


# -- reduced-scale decoding: boxes in source pixels ---------------------------------------------
@pytest.mark.parametrize('decode_threads', [0, 2])
def test_reduced_decode_publishes_boxes_in_source_pixels(model_path, types, decode_threads):
    """Issue 21.3: a 1152x864 JPEG for a 96x96 network is decoded at 1/8 (144x108), and the
    published box still lands on the object in source pixels (the annotated image too)."""
    outputs = Collect(image=True)
    core = _core(model_path, types, outputs, decode_threads=decode_threads,
                 annotated_max_rate=0.0)
    seen = []

    def detect(images):
        seen.extend(image.shape for image in images)
        return _find_white(images)

    core.detector.detect_batch = detect
    box = (320, 200, 704, 456)
    core.submit('b', read_compressed_image(_jpeg_payload(_white_box(864, 1152, box))))
    core.submit('a', read_image(_raw_payload(_white_box(90, 120, (10, 20, 50, 60)))))
    assert core.process_pending() == 2
    assert sorted(seen) == [(90, 120, 3), (108, 144, 3)]
    by_camera = {name: msg for name, msg in outputs.dets}
    det = by_camera['b'].detections[0]
    cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
    np.testing.assert_allclose([cx - det.bbox.size_x / 2, cy - det.bbox.size_y / 2,
                                cx + det.bbox.size_x / 2, cy + det.bbox.size_y / 2], box,
                               atol=8 + 1)  # one decoded pixel is 8 source pixels
    det = by_camera['a'].detections[0]
    assert (det.bbox.size_x, det.bbox.size_y) == (40, 40)  # raw: exact, full size
    assert by_camera['b'].header.frame_id == 'b' and by_camera['b'].header.stamp.sec == \
        STAMP // 1_000_000_000
    annotated = {name: msg for name, msg in outputs.images}
    assert (annotated['b'].height, annotated['b'].width) == (108, 144)  # never upscaled
    core.shutdown()


# -- decode threads ------------------------------------------------------------------------------
def test_decode_threads_decode_off_the_inference_thread(model_path, types, monkeypatch):
    from darknet53_ros.io.frame_decoder import FrameDecoder

    names = []
    real = FrameDecoder.decode

    def spy(self, msg, key=''):
        names.append(threading.current_thread().name)
        return real(self, msg, key)

    monkeypatch.setattr(FrameDecoder, 'decode', spy)
    outputs = Collect()
    core = _core(model_path, types, outputs, decode_threads=2).start()
    image = _white_box(64, 80, (5, 5, 30, 30))
    for i in range(5):
        for camera in 'ac':
            core.submit(camera, read_image(_raw_payload(image, STAMP + i)))
        core.submit('b', read_compressed_image(_jpeg_payload(image, STAMP + i)))
        assert _wait(lambda i=i: len(outputs.dets) >= 3 * (i + 1) - 2)
    assert _wait(lambda: sum(s['published'] for s in core.stats().values())
                 + sum(s['dropped_total'] for s in core.stats().values()) == 15)
    assert names and all(n.startswith('darknet53-decode-') for n in names)
    assert core.shutdown() and not core.running
    alive = [t.name for t in threading.enumerate() if t.name.startswith('darknet53-')]
    assert alive == []


def test_decode_pool_decodes_on_demand_and_names_the_stage(model_path, types):
    """A compressed camera whose decoded frame still waits for inference is not decoded again;
    a frame replaced then counts as superseded (inference busy), one replaced while no decode
    thread was free as decode_superseded."""
    core = _core(model_path, types, decode_threads=1)
    image = read_compressed_image(_jpeg_payload(_white_box(32, 32, (1, 1, 9, 9))))
    core.submit('b', image)
    core.submit('b', image)  # replaces the first before any decode thread took it
    assert core.decode_pool.drain() == 1
    core.submit('b', image)
    assert core.decode_pool.drain() == 0  # its decoded frame still waits: no decode
    core.submit('b', image)  # replaces the encoded one while inference is behind
    stats = core.stats()['b']
    assert stats['dropped']['decode_superseded'] == 1 and stats['dropped']['superseded'] == 1
    assert core.process_pending() == 2  # the waiting decoded frame, then the newest one
    assert core.stats()['b']['processed'] == 2
    core.shutdown()


def test_raw_frames_are_decoded_eagerly_so_inference_takes_the_newest(model_path, types):
    """A raw camera is decoded as frames arrive, also while its decoded frame waits: the next
    batch gets the newest frame, not one held back for an inference period (issue 21:
    latency at 4x640x480 raw)."""
    core = _core(model_path, types, decode_threads=1)
    assert core.decode_pool.eager == {'a', 'c'}
    image = _white_box(32, 32, (1, 1, 9, 9))
    for n in range(3):
        core.submit('a', read_image(_raw_payload(image, stamp=STAMP + n)))
        assert core.decode_pool.drain() == 1  # decoded although the previous one waits
    assert core.stats()['a']['dropped']['superseded'] == 2
    batch = core.decode_pool.output.next_batch(timeout=0)
    assert [q.stamp_s for q in batch] == [(STAMP + 2) * 1e-9]
    assert core.process_batch(batch) == 1
    core.shutdown()


# -- annotated images off the inference thread ----------------------------------------------------
def test_slow_viewer_never_slows_detection(model_path, types):
    """Issue 21.1: annotated publishing blocked (a stalled viewer) while detections go on;
    the annotator keeps only the newest frame per camera."""
    outputs = Collect(image=True)
    outputs.gate = threading.Event()
    core = _core(model_path, types, outputs, annotated_max_rate=0.0, decode_threads=0).start()
    image = read_image(_raw_payload(_white_box(48, 64, (4, 4, 20, 20))))
    core.submit('a', image)
    assert _wait(lambda: 'darknet53-annotate' in outputs.threads)  # stuck in publish
    for i in range(20):
        core.submit('a', image)
        assert _wait(lambda i=i: len(outputs.dets) >= i + 2), 'detection waited for the viewer'
    assert len(outputs.images) == 0
    outputs.gate.set()
    assert _wait(lambda: len(outputs.images) == 2)  # the stuck one, then the newest
    time.sleep(0.05)
    assert len(outputs.images) == 2 and core.annotator.superseded['a'] >= 18
    assert core.shutdown()


def test_annotated_rate_scale_and_compressed_sibling(model_path, types):
    outputs = Collect(image=False, compressed=True, serialized=True)
    core = _core(model_path, types, outputs, annotated_max_rate=10.0, annotated_scale=0.5,
                 decode_threads=0)
    clock = {'now': 100.0}
    core.clock = lambda: clock['now']
    payload = _raw_payload(_white_box(120, 160, (10, 10, 60, 60)))
    for _ in range(30):  # 30 Hz for one second
        core.submit('a', read_image(payload))
        core.process_pending()
        clock['now'] += 1 / 30
    assert len(outputs.dets) == 30 and outputs.images == []
    assert 10 <= len(outputs.jpegs) <= 11  # at most 10 Hz (+ the first)
    name, msg = outputs.jpegs[0]
    back = read_compressed_image(msg)  # serialized outputs get CDR bytes
    image = cv2.imdecode(back.data, cv2.IMREAD_COLOR)
    assert back.format == 'bgr8; jpeg compressed bgr8' and image.shape == (60, 80, 3)
    assert back.header.frame_id == 'a'
    outputs.want = (True, False)
    core.update_parameters({'annotated_max_rate': 0.0, 'annotated_scale': 1.0})
    core.submit('a', read_image(payload))
    core.process_pending()
    raw = read_image(outputs.images[-1][1])
    assert (raw.height, raw.width, raw.encoding) == (120, 160, 'bgr8')
    core.shutdown()


def test_rate_limiter_keeps_the_cadence_under_jitter():
    limiter = RateLimiter(10.0)
    rng = np.random.default_rng(0)
    times = np.arange(0, 10, 1 / 30) + rng.normal(0, 0.003, 300)
    allowed = [t for t in np.sort(times) if limiter.allow('a', float(t))]
    assert 95 <= len(allowed) <= 101  # 10 Hz, not 7.5 Hz from jitter
    assert np.min(np.diff(allowed)) > 0.05
    assert RateLimiter(0.0).allow('a', 0.0) and RateLimiter(0.0).allow('a', 0.0)
    limiter = RateLimiter(1.0)
    assert limiter.allow('a', 50.0) and not limiter.allow('a', 50.5)
    assert limiter.allow('a', 10.0)  # the clock went back (looping bag): restart
    assert limiter.allow('b', 10.2)  # per camera


# -- raw (CDR) ingest -----------------------------------------------------------------------------
def test_raw_ingest_reads_cdr_and_falls_back(model_path, types):
    outputs = Collect()
    core = _core(model_path, types, outputs, decode_threads=0)
    calls = []

    def deserialize(data):
        calls.append(len(data))
        return cdr_deserialize(types, b'\x00\x01' + data[2:], types.Image)

    ingest = RawIngest(core.submit, 'a', False, deserialize)
    payload = _raw_payload(_white_box(24, 32, (2, 2, 9, 9)))
    ingest(payload)
    assert ingest.read_cdr == 1 and calls == []
    ingest(b'\x00\x09' + payload[2:])  # an encapsulation the reader leaves to the RMW
    assert ingest.read_fallback == 1 and calls == [len(payload)]
    assert core.process_pending() == 1  # the fallback's frame (it replaced the first)
    for _ in range(2):  # truncated: counted as bad_image with the field named
        ingest(payload[:40])
        core.process_pending()
    stats = core.stats()['a']
    assert stats['dropped']['bad_image'] == 2 and 'truncated' in stats['last_error']
    RawIngest(core.submit, 'b', True)(b'\x00\x09\x00\x00')  # no fallback: unreadable
    core.process_pending()
    assert 'encapsulation 0x0009' in core.stats()['b']['last_error']
    core.shutdown()


def test_cdr_header_becomes_a_message_header(model_path, types):
    outputs = Collect()
    core = _core(model_path, types, outputs)
    msg = CdrImage(CdrHeader(CdrTime(12, 345), 'cam_optical'), 8, 8, 'mono8', 0, 8,
                   np.zeros(64, np.uint8))
    core.submit('c', msg)
    core.process_pending()
    header = outputs.dets[0][1].header
    assert isinstance(header, types.Header)
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (12, 345, 'cam_optical')
    core.shutdown()


# -- ONNX Runtime threads ------------------------------------------------------------------------
def test_onnxruntime_sessions_do_not_spin(model_path):
    from darknet53_ros.inference.backends.onnxruntime_backend import (
        SPINNING_KEYS,
        shared_cpu_threads,
    )

    assert [shared_cpu_threads(n) for n in (1, 2, 4, 6, 8, 12, 64)] == [1, 2, 2, 3, 4, 4, 4]
    detector, _ = load_detector(NodeParams(), model_path=model_path)
    options = detector.backend.session.get_session_options()
    assert [options.get_session_config_entry(key) for key in SPINNING_KEYS] == ['0', '0']
    assert options.intra_op_num_threads == shared_cpu_threads()
    detector.close()
    detector, _ = load_detector(NodeParams(allow_spinning=True, intra_op_threads=3),
                                model_path=model_path)
    options = detector.backend.session.get_session_options()
    assert [options.get_session_config_entry(key) for key in SPINNING_KEYS] == ['1', '1']
    assert options.intra_op_num_threads == 3
    detector.close()


# -- diagnostics: detected rate below the publisher's --------------------------------------------
def test_diagnostics_warn_when_detection_falls_behind_the_camera(model_path, types):
    """Issue 21.5: 30 Hz arriving, every second frame superseded before inference: WARN
    naming the reason (the old check stayed OK until 60 % were lost before the node)."""
    core = _core(model_path, types, decode_threads=0)
    clock = {'now': 10.0}
    core.clock = core.scheduler.clock = lambda: clock['now']
    payload = _white_box(16, 16, (1, 1, 5, 5))
    core.diagnostics()
    for i in range(90):
        core.submit('a', read_image(_raw_payload(payload, STAMP + i * 33_333_333)))
        if i % 2:
            core.process_pending()
        clock['now'] += 1 / 30
    status = core.diagnostics()['darknet53_detector: a']
    assert status['level'] == 1, status['message']
    assert re.match(r'detecting 1[45]\.\d Hz of ~30\.0 Hz published \((49|50)%\)',
                    status['message'])
    assert 'superseded (inference busy' in status['message']
    core.update_parameters({'rate_warn_fraction': 0.4})
    for i in range(90, 120):
        core.submit('a', read_image(_raw_payload(payload, STAMP + i * 33_333_333)))
        if i % 2:
            core.process_pending()
        clock['now'] += 1 / 30
    assert core.diagnostics()['darknet53_detector: a']['level'] == 0
    core.shutdown()
