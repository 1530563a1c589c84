"""Managed-node transitions, signal handling, sim-time frame timing and the receive-rate hint,
in plain Python (no ROS): darknet53_ros.ros.lifecycle, .signals, .scheduler, .diagnostics."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.cameras import parse_cameras
from darknet53_ros.ros.diagnostics import (
    ALL_DROP_REASONS,
    LOW_RECEIVE_FRACTION,
    RECEIVE_HINT,
    camera_status,
)
from darknet53_ros.ros.lifecycle import (
    ACTIVE,
    FINALIZED,
    INACTIVE,
    UNCONFIGURED,
    LifecycleError,
    ManagedDetector,
)
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import NodeParams
from darknet53_ros.ros.scheduler import FrameScheduler, PublisherRate, RateMeter
from darknet53_ros.ros.signals import ShutdownSignals

from ..conftest import export_tiny_model, requires

NAMES = ['box', 'cone', 'ball']
CAMERAS = {'cameras': ['a', 'b'], 'a.topic': '/a/image_raw', 'b.topic': '/b/image_raw',
           'b.transport': 'compressed'}


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp('model') / 'tiny.onnx', NAMES, size=64)


class FakePorts:
    """Records the transitions' calls into the ROS side."""

    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)

    def _call(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise RuntimeError(f'{name} failed')

    def open(self, core):
        self._call('open')

    def subscribe(self, core):
        self._call('subscribe')

    def unsubscribe(self):
        self._call('unsubscribe')

    def close(self):
        self._call('close')


def _managed(model_path, types, ports=None, **values):
    values = {'model': str(model_path), **CAMERAS, **values}
    cores = []

    def make_core(params, detector, path):
        cores.append(NodeCore(params, detector, types, Outputs(), model_path=path))
        return cores[-1]

    managed = ManagedDetector(ports or FakePorts(), lambda: dict(values),
                              lambda params: load_detector(params), make_core,
                              stop_timeout=5.0)
    return managed, cores


def _inference_threads():
    return [t for t in threading.enumerate() if t.name == 'darknet53-inference' and t.is_alive()]


# -- transitions -------------------------------------------------------------------------------
@requires('onnxruntime')
def test_every_transition(model_path, message_types):
    ports = FakePorts()
    managed, cores = _managed(model_path, message_types, ports)
    assert managed.state == UNCONFIGURED and managed.core is None
    core = managed.configure()
    assert managed.state == INACTIVE and not core.running and ports.calls == ['open']
    managed.activate()
    assert managed.state == ACTIVE and core.running and ports.calls[-1] == 'subscribe'
    managed.deactivate()  # unsubscribe first, then idle the engine (kept loaded)
    assert managed.state == INACTIVE and not core.running and not _inference_threads()
    assert ports.calls[-1] == 'unsubscribe' and core.detector.backend is not None
    assert 'inactive' in core.diagnostics()[f'{core.node_name}: detector']['message']
    managed.activate()  # again: a new inference thread, frames flow again
    assert core.running
    core.submit('a', object())  # undecodable: counted, proves the scheduler reopened
    deadline = time.monotonic() + 5
    while core.stats()['a']['dropped']['bad_image'] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.stats()['a']['dropped']['bad_image'] == 1
    managed.deactivate()
    managed.cleanup()  # engine released
    assert managed.state == UNCONFIGURED and managed.core is None and core._closed
    assert ports.calls[-1] == 'close'
    with pytest.raises(RuntimeError, match='shut down'):
        core.start()
    managed.configure()  # a fresh core from the current parameters
    assert len(cores) == 2 and managed.core is cores[1]
    managed.activate()
    managed.shutdown()  # from active
    assert managed.state == FINALIZED and cores[1]._closed and not _inference_threads()
    managed.shutdown()  # idempotent
    assert managed.state == FINALIZED


@requires('onnxruntime')
@pytest.mark.parametrize('steps', [(), ('configure',), ('configure', 'activate')])
def test_shutdown_from_any_state(model_path, message_types, steps):
    managed, cores = _managed(model_path, message_types)
    for step in steps:
        getattr(managed, step)()
    managed.shutdown()
    assert managed.state == FINALIZED and managed.core is None
    assert all(c._closed for c in cores) and not _inference_threads()


@requires('onnxruntime')
def test_transitions_not_allowed_raise(model_path, message_types):
    managed, _ = _managed(model_path, message_types)
    for step in ('activate', 'deactivate', 'cleanup'):
        with pytest.raises(LifecycleError, match='unconfigured'):
            getattr(managed, step)()
    managed.configure()
    with pytest.raises(LifecycleError):
        managed.configure()
    with pytest.raises(LifecycleError):
        managed.deactivate()
    managed.shutdown()
    with pytest.raises(LifecycleError, match='finalized'):
        managed.configure()


@requires('onnxruntime')
def test_failed_configure_leaves_nothing_loaded(model_path, message_types):
    managed, cores = _managed(model_path, message_types, cameras=['1bad'])
    with pytest.raises(ConfigError, match="parameter cameras: camera name '1bad'"):
        managed.configure()
    assert managed.state == UNCONFIGURED and not cores
    ports = FakePorts(fail={'open'})
    managed, cores = _managed(model_path, message_types, ports)
    with pytest.raises(RuntimeError, match='open failed'):
        managed.configure()
    assert managed.state == UNCONFIGURED and cores[0]._closed and ports.calls == ['open', 'close']


@requires('onnxruntime')
def test_failed_activate_stops_the_thread_and_reset(model_path, message_types):
    ports = FakePorts(fail={'subscribe'})
    managed, cores = _managed(model_path, message_types, ports)
    managed.configure()
    with pytest.raises(RuntimeError, match='subscribe failed'):
        managed.activate()
    assert managed.state == INACTIVE and not cores[0].running
    managed.reset()  # error processing: back to unconfigured, engine released
    assert managed.state == UNCONFIGURED and cores[0]._closed


# -- signals -----------------------------------------------------------------------------------
def test_first_signal_requests_shutdown_later_ones_are_ignored():
    before = signal.getsignal(signal.SIGINT)  # colcon test runs pytest with SIGINT ignored
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    woken = []
    signals = ShutdownSignals(on_request=lambda: woken.append(1)).install()
    try:
        assert not signals.requested
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert signals.wait(2.0) and signals.received == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # kernel-level from now on
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert woken == [1] and signals.received == signal.SIGINT
    finally:
        signals.restore()
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)
    assert restored is signal.default_int_handler


def test_signals_outside_the_main_thread_install_nothing():
    before = signal.getsignal(signal.SIGINT)
    result = {}

    def run():
        result['signals'] = ShutdownSignals().install()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGINT) is before
    result['signals'].request()
    assert result['signals'].requested


# -- frame timing on the node clock (use_sim_time) ---------------------------------------------
class SimClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def test_max_frame_age_and_rates_follow_the_given_clock():
    clock = SimClock()
    scheduler = FrameScheduler(['a'], max_age_s=0.5, clock=clock)
    scheduler.submit('a', 'f1')
    time.sleep(0.6)  # wall time passes, simulated time does not (paused simulation)
    assert [q.frame for q in scheduler.next_batch(timeout=0)] == ['f1']
    scheduler.submit('a', 'f2')
    clock.now += 0.6  # simulated time passes: stale
    assert scheduler.next_batch(timeout=0) == []
    assert scheduler.stats()['a']['dropped']['stale'] == 1
    scheduler.submit('a', 'f3')
    clock.now = 10.0  # looping bag: time jumps back, the wait is clamped, not negative
    (queued,) = scheduler.next_batch(timeout=0)
    assert queued.frame == 'f3' and scheduler.stats()['a']['last_wait_s'] == 0.0


def test_rate_meter_restarts_when_the_clock_goes_back():
    meter = RateMeter(window_s=5.0)
    for t in (10.0, 10.1, 10.2):
        meter.add(t)
    meter.add(1.0)
    meter.add(1.5)
    assert meter.rate(1.5) == pytest.approx(2.0)


@requires('onnxruntime')
def test_core_latency_and_age_on_the_node_clock(model_path, message_types):
    """NodeCore(frame_clock=node clock): queue wait and latency both in ROS (sim) time."""
    from darknet53_ros.io.messages import header_msg, image_msg

    types = message_types
    sim_ns = {'now': 5_000_000_000}
    params = NodeParams.from_dict({'model': str(model_path), **CAMERAS, 'max_frame_age': 0.5})
    detector, path = load_detector(params)
    core = NodeCore(params, detector, types, Outputs(), model_path=path,
                    now_ns=lambda: sim_ns['now'], frame_clock=lambda: sim_ns['now'] * 1e-9)
    try:
        image = np.zeros((32, 32, 3), np.uint8)
        core.submit('a', image_msg(types, header_msg(types, 4_900_000_000, 'cam'), image))
        time.sleep(0.6)  # wall time only: not stale in simulated time
        assert core.process_pending() == 1
        stats = core.stats()['a']
        assert stats['latency_s'] == pytest.approx(0.1) and stats['dropped']['stale'] == 0
        core.submit('a', image_msg(types, header_msg(types, 5_000_000_000, 'cam'), image))
        sim_ns['now'] += 600_000_000
        assert core.process_pending() == 0 and core.stats()['a']['dropped']['stale'] == 1
    finally:
        core.shutdown()


# -- publisher rate from header stamps and the receive hint -------------------------------------
def _stamps(rate, n, keep=lambda i: True, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [100.0 + i / rate + rng.uniform(-jitter, jitter) for i in range(n) if keep(i)]


@pytest.mark.parametrize('loss', [0.0, 0.3, 0.6])
def test_publisher_rate_from_stamps(loss):
    """Random losses (what an overflowing receive buffer does) up to 60 %, with jitter."""
    lost = np.random.default_rng(1).random(400) < loss
    estimator = PublisherRate(window=120)
    for stamp in _stamps(30.0, 400, lambda i: not lost[i], jitter=0.002):
        estimator.add(stamp)
    hz, fraction = estimator.estimate()
    assert hz == pytest.approx(30.0, rel=0.15)
    assert fraction == pytest.approx(1.0 - loss, abs=0.12)


def test_publisher_rate_needs_real_increasing_stamps():
    estimator = PublisherRate(min_frames=5)
    for _ in range(20):
        estimator.add(0.0)  # unstamped frames
    assert estimator.estimate() is None
    for stamp in (5.0, 5.1, 5.2, 5.3, 1.0, 1.1):  # restart: stamps go back
        estimator.add(stamp)
    assert estimator.estimate() is None


def _entry(publisher_hz, fraction, received=100, output_hz=None):
    if output_hz is None:
        output_hz = (publisher_hz or 0.0) * (fraction or 0.0)
    return {'received': received, 'dropped': dict.fromkeys(ALL_DROP_REASONS, 0),
            'received_hz': 0.0, 'output_hz': output_hz,
            'published': received, 'latency_s': None, 'latency_mean_s': None,
            'latency_max_s': None, 'max_wait_s': 0.0, 'dropped_total': 0, 'last_error': '',
            'publisher_hz': publisher_hz, 'received_fraction': fraction}


def test_receive_hint_when_far_below_the_publisher_rate():
    (camera,) = parse_cameras(['front'], {'front.topic': '/front/image_raw'})
    status, _ = camera_status(camera, _entry(30.0, 0.4), {'received': 50}, 1.0)
    assert status['level'] == 1 and RECEIVE_HINT in status['message']
    assert '12.0 Hz of ~30.0 Hz' in status['message']
    status, _ = camera_status(camera, _entry(30.0, LOW_RECEIVE_FRACTION + 0.05),
                              {'received': 50}, 1.0)
    assert status['level'] == 0
    status, _ = camera_status(camera, _entry(None, None), {'received': 50}, 1.0)
    assert status['level'] == 0 and status['publisher_hz'] == 'n/a'
    assert LOW_RECEIVE_FRACTION == NodeParams().rate_warn_fraction == 0.8
    status, _ = camera_status(camera, _entry(30.0, 0.7), {'received': 50}, 1.0,
                              warn_fraction=0.6)
    assert status['level'] == 0
    status, _ = camera_status(camera, _entry(30.0, 0.1), {'received': 50}, 1.0,
                              warn_fraction=0.0)  # the check is off
    assert status['level'] == 0


def test_detected_rate_warning_names_the_reason():
    """Issue 21.5: frames received but not detected get a WARN naming where they went."""
    (camera,) = parse_cameras(['front'], {'front.topic': '/front/image_raw'})
    entry = _entry(30.0, 1.0, output_hz=15.0)
    entry['dropped'] = {**entry['dropped'], 'superseded': 40, 'decode_superseded': 5}
    status, _ = camera_status(camera, entry, {'received': 50, 'superseded': 10}, 1.0)
    assert status['level'] == 1
    assert status['message'].startswith('detecting 15.0 Hz of ~30.0 Hz published (50%)')
    assert status['message'].index('superseded (inference busy') < \
        status['message'].index('decode (decode threads busy')
    assert 'superseded (inference busy: a newer frame replaced a waiting one): 30' in \
        status['message']
    entry = _entry(30.0, 1.0, output_hz=12.0)
    entry['dropped'] = {**entry['dropped'], 'bad_image': 9}
    status, _ = camera_status(camera, entry, {'received': 50}, 1.0)
    # bad frames are a WARN of their own; the rate message yields to it
    assert status['level'] == 1 and 'undecodable' in status['message']
    status, _ = camera_status(camera, _entry(30.0, 0.95, output_hz=27.0), {'received': 50},
                              1.0)
    assert status['level'] == 0
