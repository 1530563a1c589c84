"""Tests for darknet53_ros.ros.scheduler (no timing assertions: fake clocks and Events)."""
from collections import Counter
import threading

import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.scheduler import FrameScheduler, InferenceWorker, RateMeter

from ..hypo import given, settings, st


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def test_newest_frame_per_camera_and_superseded_count():
    sched = FrameScheduler(['a', 'b'], max_batch=2, max_age_s=None)
    for i in range(5):
        assert sched.submit('a', f'a{i}', stamp_s=float(i), header={'i': i})
    sched.submit('b', 'b0')
    batch = sched.next_batch(timeout=0)
    assert [(f.camera, f.frame) for f in batch] == [('a', 'a4'), ('b', 'b0')]
    assert batch[0].seq == 5 and batch[0].stamp_s == 4.0 and batch[0].header == {'i': 4}
    stats = sched.stats()
    assert stats['a']['received'] == 5 and stats['a']['processed'] == 1
    assert stats['a']['dropped']['superseded'] == 4 and stats['a']['dropped_total'] == 4
    assert stats['b']['dropped_total'] == 0
    assert sched.next_batch(timeout=0) == []


def test_stale_frames_dropped_by_arrival_time():
    clock = FakeClock()
    sched = FrameScheduler(['a', 'b'], max_batch=2, max_age_s=0.5, clock=clock)
    sched.submit('a', 'old', stamp_s=1e9)  # stamp is ignored for staleness
    clock.now += 0.4
    sched.submit('b', 'fresh', stamp_s=0.0)
    clock.now += 0.2  # a waited 0.6 s, b waited 0.2 s
    batch = sched.next_batch(timeout=0)
    assert [f.frame for f in batch] == ['fresh']
    assert sched.stats()['a']['dropped']['stale'] == 1
    assert sched.stats()['b']['last_wait_s'] == pytest.approx(0.2)
    # Only stale frames waiting: they are dropped and the call times out empty.
    sched.submit('a', 'x')
    clock.now += 1.0
    assert sched.next_batch(timeout=0.01) == []
    assert sched.stats()['a']['dropped']['stale'] == 2 and sched.pending() == 0


def test_round_robin_fairness_many_cameras():
    cameras = [f'cam{i}' for i in range(7)]
    sched = FrameScheduler(cameras, max_batch=3, max_age_s=None)
    served = Counter()
    order = []
    for _ in range(70):
        for cam in cameras:  # every camera always has a frame waiting
            sched.submit(cam, cam)
        batch = sched.next_batch(timeout=0)
        assert len(batch) == 3 and len({f.camera for f in batch}) == 3
        served.update(f.camera for f in batch)
        order.extend(f.camera for f in batch)
    assert set(served.values()) == {30}  # 70 batches * 3 / 7 cameras
    assert order[:9] == [f'cam{i % 7}' for i in range(9)]  # strict rotation


@settings(max_examples=50, deadline=None)
@given(n_cameras=st.integers(1, 9), max_batch=st.integers(1, 9),
       rounds=st.lists(st.sets(st.integers(0, 8)), min_size=1, max_size=30))
def test_no_camera_waits_more_than_one_rotation(n_cameras, max_batch, rounds):
    cameras = [f'c{i}' for i in range(n_cameras)]
    sched = FrameScheduler(cameras, max_batch=max_batch, max_age_s=None)
    waiting_batches = Counter()
    for submitted in rounds:
        for i in submitted:
            if i < n_cameras:
                sched.submit(cameras[i], i)
        batch = sched.next_batch(timeout=0)
        taken = {f.camera for f in batch}
        assert len(batch) == len(taken) <= max_batch
        assert len(batch) == min(max_batch, len(taken) + sched.pending())
        for cam in cameras:
            waiting_batches[cam] = 0 if cam in taken or not sched.stats()[cam]['pending'] \
                else waiting_batches[cam] + 1
            # A waiting camera is served within ceil(n / max_batch) batches.
            assert waiting_batches[cam] <= -(-n_cameras // max_batch)


def test_batching_across_cameras_with_blocking_wait():
    sched = FrameScheduler(['a', 'b', 'c'], max_batch=4, max_age_s=None)
    results = []
    started = threading.Event()

    def consumer():
        started.set()
        results.append(sched.next_batch(timeout=10))

    thread = threading.Thread(target=consumer)
    thread.start()
    started.wait()
    sched.submit('b', 1)
    thread.join(10)
    assert not thread.is_alive()
    assert [f.camera for f in results[0]] == ['b']
    for cam in 'abc':
        sched.submit(cam, cam)
    assert [f.camera for f in sched.next_batch(timeout=0)] == ['c', 'a', 'b']


def test_close_wakes_waiters_and_rejects_frames():
    sched = FrameScheduler(['a'], max_age_s=None)
    results = []
    thread = threading.Thread(target=lambda: results.append(sched.next_batch()))
    thread.start()
    sched.close()
    thread.join(10)
    assert not thread.is_alive() and results == [[]]
    assert sched.submit('a', 1) is False
    assert sched.stats()['a']['dropped']['closed'] == 1


def test_bad_configuration_and_unknown_camera():
    with pytest.raises(ConfigError, match='cameras'):
        FrameScheduler([])
    with pytest.raises(ConfigError, match='duplicate'):
        FrameScheduler(['a', 'a'])
    with pytest.raises(ConfigError, match='max_batch'):
        FrameScheduler(['a'], max_batch=0)
    with pytest.raises(ConfigError, match="'z'"):
        FrameScheduler(['a']).submit('z', 1)


def test_rate_meter_and_stats_rates():
    meter = RateMeter(window_s=2.0)
    for i in range(11):
        meter.add(10.0 + i * 0.1)
    assert meter.rate(11.0) == pytest.approx(10.0)
    assert meter.rate(20.0) == 0.0  # everything left the window
    clock = FakeClock()
    sched = FrameScheduler(['a'], max_age_s=None, clock=clock)
    for _ in range(5):
        sched.submit('a', 0)
        sched.next_batch(timeout=0)
        clock.now += 0.5
    assert sched.stats()['a']['received_hz'] == pytest.approx(2.0, rel=0.3)
    assert sched.stats()['a']['processed_hz'] == pytest.approx(2.0, rel=0.3)


def test_slow_worker_never_blocks_submit():
    cameras = ['a', 'b', 'c', 'd']
    sched = FrameScheduler(cameras, max_batch=2, max_age_s=None)
    release = threading.Event()
    entered = threading.Event()
    seen = []

    def slow(batch):
        seen.append([f.frame for f in batch])
        entered.set()
        release.wait(30)

    worker = InferenceWorker(sched, slow, poll_s=0.01).start()
    sched.submit('a', -1)
    assert entered.wait(10)  # the worker is now stuck inside slow()
    returned = 0
    for i in range(1000):
        sched.submit(cameras[i % 4], i)
        returned += 1
    assert returned == 1000
    stats = sched.stats()
    assert sum(s['received'] for s in stats.values()) == 1001
    # The worker holds one batch; every camera keeps only its newest frame.
    assert sched.pending() == 4
    assert sum(s['dropped']['superseded'] for s in stats.values()) == 1000 - 4
    release.set()
    assert worker.stop(timeout=10)
    assert not worker.running
    assert seen[0] == [-1]
    assert worker.errors == 0


def test_worker_counts_errors_and_keeps_running():
    sched = FrameScheduler(['a', 'b'], max_batch=1, max_age_s=None)
    errors = []
    done = threading.Event()
    processed = []

    def process(batch):
        frame = batch[0].frame
        if frame == 'boom':
            raise RuntimeError('boom')
        processed.append(frame)
        if frame == 'last':
            done.set()

    def on_error(exc, batch):
        errors.append((str(exc), batch[0].camera))
        raise ValueError('the callback failing must not kill the worker')

    worker = InferenceWorker(sched, process, on_error, poll_s=0.01).start()
    sched.submit('a', 'boom')
    sched.submit('b', 'ok')
    assert done.wait(0) is False
    # 'last' is submitted once both earlier frames are out of the queue.
    while sched.pending():
        threading.Event().wait(0.001)
    sched.submit('a', 'last')
    assert done.wait(10)
    assert worker.stop(timeout=10)
    assert errors == [('boom', 'a')] and worker.errors == 1
    assert isinstance(worker.last_error, RuntimeError)
    assert 'last' in processed and worker.frames == len(processed)


def test_stop_without_closing_scheduler():
    sched = FrameScheduler(['a'], max_age_s=None)
    worker = InferenceWorker(sched, lambda batch: None, poll_s=0.01).start()
    assert worker.stop(timeout=10, close_scheduler=False)
    assert not sched.closed and sched.submit('a', 1)
