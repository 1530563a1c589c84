"""Frame scheduling core of the detector node: newest-frame-per-camera, fair batching.

Pure Python and ``threading``; no ROS. Subscription callbacks call
:meth:`FrameScheduler.submit`, which never blocks on inference: each camera keeps only its
newest unprocessed frame (an older one still waiting is dropped as ``superseded``). One
:class:`InferenceWorker` thread takes batches with :meth:`FrameScheduler.next_batch`: the newest
frame of up to ``max_batch`` waiting cameras, served round-robin starting after the camera
served last, so with more cameras than batch slots none starves.

Staleness uses the *arrival time on the scheduler's clock*, not the message stamp: a camera's
clock may be offset from the host, but how long a frame has been waiting here is what makes a
detection useless. The node passes its ROS clock (simulated time under ``use_sim_time``, so a
bag played at half speed gets twice the wall-clock budget, and nothing goes stale while the
simulation is paused). Frames waiting longer than ``max_age_s`` are dropped as ``stale`` when a
batch is assembled. The clock may jump backwards (a looping bag): waits are then clamped to 0
and rate windows restart.

:class:`PublisherRate` estimates a camera's publish rate from the header stamps it receives,
so a received rate far below it (frames lost in the DDS receive buffer or the subscription's
queue) can be reported without knowing the publisher.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import threading
import time
from typing import Any

from darknet53_ros.errors import ConfigError

__all__ = ['DROP_REASONS', 'FrameScheduler', 'InferenceWorker', 'PublisherRate', 'QueuedFrame',
           'RateMeter']

DROP_REASONS = ('superseded', 'stale', 'closed', 'decode_superseded')
"""Reasons a submitted frame is dropped without being processed: replaced by a newer frame of
its camera while the inference thread was busy, waited too long, the node stopped, or (with
decode threads) replaced before a decode thread was free."""


@dataclass(frozen=True)
class QueuedFrame:
    """A frame handed to the worker."""

    camera: str
    frame: Any
    stamp_s: float | None
    header: Any
    arrival_s: float
    """Arrival time on the scheduler clock."""
    seq: int
    """Per-camera submission counter (1 = first frame of that camera)."""


class RateMeter:
    """Event rate over a sliding time window (events per second on the given clock)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 1000) -> None:
        """Keep at most ``max_events`` event times no older than ``window_s``."""
        self.window_s = float(window_s)
        self._times: deque[float] = deque(maxlen=max_events)

    def add(self, now: float) -> None:
        """Record one event at time ``now`` (a clock that went backwards restarts the window)."""
        if self._times and now < self._times[-1]:
            self._times.clear()
        self._times.append(now)

    def rate(self, now: float) -> float:
        """Events per second over the window ending at ``now`` (0 with fewer than 2 events)."""
        times = self._times
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        return (len(times) - 1) / span if span > 0 else 0.0


class PublisherRate:
    """A camera's publish rate and the fraction of its frames received, from header stamps.

    Lost frames leave gaps of whole periods between the stamps that arrive, so the publish
    period is estimated as a low percentile (``quantile``) of the stamp differences of the last
    ``window`` frames received: robust to losses up to well over half the frames, and to
    jitter. The received fraction is then ``(n - 1) * period / (last - first)``. Both are in
    stamp time, so they hold for recorded or simulated time alike. Stamps that are zero, repeat
    or go backwards (camera restart, looping bag) restart the window. A strictly periodic loss
    (every other frame) looks like a slower publisher; buffer overflows are not periodic.
    """

    def __init__(self, window: int = 60, quantile: float = 0.25, min_frames: int = 10) -> None:
        """Estimate over the last ``window`` stamps, once ``min_frames`` have arrived."""
        self.quantile = float(quantile)
        self.min_frames = int(min_frames)
        self._stamps: deque[float] = deque(maxlen=int(window))

    def add(self, stamp_s: float | None) -> None:
        """Record the stamp (seconds) of a received frame."""
        if stamp_s is None or stamp_s <= 0:
            return
        if self._stamps and stamp_s <= self._stamps[-1]:
            self._stamps.clear()
        self._stamps.append(stamp_s)

    def estimate(self) -> tuple[float, float] | None:
        """``(publisher_hz, received_fraction)``, or None with too few frames."""
        stamps = list(self._stamps)
        if len(stamps) < self.min_frames:
            return None
        deltas = sorted(b - a for a, b in zip(stamps, stamps[1:]))
        period = deltas[min(len(deltas) - 1, int(self.quantile * len(deltas)))]
        span = stamps[-1] - stamps[0]
        if period <= 0 or span <= 0:
            return None
        return 1.0 / period, min(1.0, (len(stamps) - 1) * period / span)


@dataclass
class _CameraState:
    pending: QueuedFrame | None = None
    received: int = 0
    processed: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    received_rate: RateMeter = field(default_factory=RateMeter)
    processed_rate: RateMeter = field(default_factory=RateMeter)
    publisher_rate: PublisherRate = field(default_factory=PublisherRate)
    last_wait_s: float = 0.0
    max_wait_s: float = 0.0


class FrameScheduler:
    """Newest-frame-per-camera queue with round-robin batching (thread-safe).

    Args:
        cameras: camera names, in round-robin order.
        max_batch: most frames per batch (each from a different camera).
        max_age_s: frames waiting longer than this (arrival time on ``clock``) are dropped
            as ``stale``; ``None`` or ``<= 0`` disables the check.
        clock: monotonic time source in seconds (injectable for tests).
    """

    def __init__(self, cameras: Sequence[str], max_batch: int = 1,
                 max_age_s: float | None = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create a scheduler for ``cameras``; raises ConfigError on bad arguments."""
        names = [str(c) for c in cameras]
        if not names:
            raise ConfigError('scheduler cameras: at least one camera is required')
        if len(set(names)) != len(names):
            raise ConfigError(f'scheduler cameras: duplicate camera names in {names}')
        if int(max_batch) < 1:
            raise ConfigError(f'scheduler max_batch: must be >= 1, got {max_batch}')
        self.cameras: tuple[str, ...] = tuple(names)
        self.max_batch = int(max_batch)
        self.max_age_s = float(max_age_s) if max_age_s and max_age_s > 0 else None
        self.clock = clock
        self._state = {name: _CameraState() for name in names}
        self._index = {name: i for i, name in enumerate(names)}
        self._cond = threading.Condition(threading.Lock())
        self._next = 0  # round-robin start index
        self._closed = False
        self._batches = 0
        self._claimed: set[str] = set()  # cameras being decoded (take/release)
        #: camera -> the drop reason of a replaced frame (default ``superseded``); the decode
        #: stage tells whether decoding or inference kept the frame waiting
        self.supersede_reason: Callable[[str], str] | None = None

    # -- producer side -------------------------------------------------------------------------
    def submit(self, camera: str, frame: Any, stamp_s: float | None = None,
               header: Any = None, arrival_s: float | None = None) -> bool:
        """Offer a frame; never waits for inference. Returns False if the scheduler is closed.

        A frame of the same camera still waiting is replaced (counted ``superseded``).
        ``arrival_s`` keeps the arrival time of a frame handed on from an earlier stage
        (default: now).

        Raises:
            ConfigError: ``camera`` is not one of the configured cameras.
        """
        state = self._state.get(camera)
        if state is None:
            raise ConfigError(f'scheduler camera: unknown camera {camera!r} '
                              f'(configured: {", ".join(self.cameras)})')
        with self._cond:
            now = self.clock()
            state.received += 1
            state.received_rate.add(now)
            state.publisher_rate.add(stamp_s)
            if self._closed:
                state.dropped['closed'] += 1
                return False
            if state.pending is not None:
                reason = 'superseded' if self.supersede_reason is None \
                    else self.supersede_reason(camera)
                state.dropped[reason] += 1
            state.pending = QueuedFrame(camera, frame, stamp_s, header,
                                        now if arrival_s is None else arrival_s, state.received)
            self._cond.notify()
            return True

    # -- consumer side -------------------------------------------------------------------------
    def next_batch(self, timeout: float | None = None) -> list[QueuedFrame]:
        """Wait for frames and take the newest frame of up to ``max_batch`` cameras.

        Blocks until at least one fresh frame waits, ``timeout`` seconds pass (returns ``[]``)
        or the scheduler is closed (returns ``[]``). Cameras are served round-robin starting
        after the camera served last.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._closed:
                    return []
                batch = self._take_batch()
                if batch:
                    return batch
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._cond.wait(remaining)

    # -- decode-stage consumer (issue 21): one frame, one camera claimed at a time -----------
    def take(self, timeout: float | None = None,
             busy: Callable[[], set[str]] | None = None) -> QueuedFrame | None:
        """Wait for and take the newest frame of one camera no other caller has claimed, and
        claim that camera until :meth:`release` (so one camera's frames are decoded one at a
        time, in order, by a pool of threads); cameras in ``busy()`` are left waiting too.
        None on timeout or when closed."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._closed:
                skip = self._claimed | busy() if busy is not None else self._claimed
                batch = self._take_batch(limit=1, skip=skip)
                if batch:
                    self._claimed.add(batch[0].camera)
                    return batch[0]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return None

    def release(self, camera: str) -> None:
        """End the claim :meth:`take` made on ``camera``."""
        with self._cond:
            self._claimed.discard(camera)
            self._cond.notify_all()

    def _take_batch(self, limit: int | None = None,
                    skip: set[str] | frozenset[str] = frozenset()) -> list[QueuedFrame]:
        """Collect a batch under the lock (drops stale frames on the way)."""
        now = self.clock()
        batch: list[QueuedFrame] = []
        n = len(self.cameras)
        last_served = None
        for offset in range(n):
            index = (self._next + offset) % n
            state = self._state[self.cameras[index]]
            queued = state.pending
            if queued is None or queued.camera in skip:
                continue
            wait = max(0.0, now - queued.arrival_s)
            if self.max_age_s is not None and wait > self.max_age_s:
                state.pending = None
                state.dropped['stale'] += 1
                continue
            state.pending = None
            state.processed += 1
            state.processed_rate.add(now)
            state.last_wait_s = wait
            state.max_wait_s = max(state.max_wait_s, wait)
            batch.append(queued)
            last_served = index
            if len(batch) >= (limit or self.max_batch):
                break
        if last_served is not None:
            self._next = (last_served + 1) % n
            self._batches += 1
        return batch

    # -- lifecycle and statistics --------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting frames, drop waiting ones (``closed``) and wake every waiter."""
        with self._cond:
            if not self._closed:
                self._closed = True
                for state in self._state.values():
                    if state.pending is not None:
                        state.pending = None
                        state.dropped['closed'] += 1
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept frames again after :meth:`close` (a deactivated node being reactivated)."""
        with self._cond:
            self._closed = False
            self._claimed.clear()

    def wake(self) -> None:
        """Wake waiting :meth:`next_batch` calls without closing (they re-check and re-wait)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def pending(self) -> int:
        """Number of cameras with a frame waiting."""
        with self._cond:
            return sum(s.pending is not None for s in self._state.values())

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-camera counters and rates (a snapshot, plain dicts for diagnostics).

        Keys per camera: ``received``, ``processed``, ``dropped`` (dict by reason),
        ``dropped_total``, ``pending`` (bool), ``received_hz``, ``processed_hz``,
        ``last_wait_s``, ``max_wait_s``, ``publisher_hz`` and ``received_fraction`` (from
        header stamps, :class:`PublisherRate`; None until enough frames arrived).
        """
        with self._cond:
            now = self.clock()
            return {
                name: {
                    **dict(zip(('publisher_hz', 'received_fraction'),
                               s.publisher_rate.estimate() or (None, None))),
                    'received': s.received,
                    'processed': s.processed,
                    'dropped': dict(s.dropped),
                    'dropped_total': sum(s.dropped.values()),
                    'pending': s.pending is not None,
                    'received_hz': s.received_rate.rate(now),
                    'processed_hz': s.processed_rate.rate(now),
                    'last_wait_s': s.last_wait_s,
                    'max_wait_s': s.max_wait_s,
                }
                for name, s in self._state.items()
            }

    @property
    def batches(self) -> int:
        """Number of non-empty batches handed out."""
        return self._batches


class InferenceWorker:
    """A thread looping ``next_batch`` -> ``process_batch_fn(batch)``.

    Exceptions from ``process_batch_fn`` are caught, counted and passed to
    ``on_error(exc, batch)`` (whose own exceptions are swallowed); the loop goes on.

    Args:
        scheduler: the :class:`FrameScheduler` to drain.
        process_batch_fn: called with a non-empty list of :class:`QueuedFrame`.
        on_error: optional error callback.
        poll_s: how often the loop re-checks the stop flag while idle.
        name: thread name.
    """

    def __init__(self, scheduler: FrameScheduler,
                 process_batch_fn: Callable[[list[QueuedFrame]], Any],
                 on_error: Callable[[BaseException, list[QueuedFrame]], Any] | None = None,
                 poll_s: float = 0.1, name: str = 'darknet53-inference') -> None:
        """Create the worker (not started)."""
        self.scheduler = scheduler
        self.process_batch_fn = process_batch_fn
        self.on_error = on_error
        self.poll_s = float(poll_s)
        self.batches = 0
        self.frames = 0
        self.errors = 0
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> InferenceWorker:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.scheduler.next_batch(timeout=self.poll_s)
            if not batch:
                if self.scheduler.closed:
                    break
                continue
            try:
                self.process_batch_fn(batch)
            except Exception as exc:  # keep serving the other cameras
                self.errors += 1
                self.last_error = exc
                if self.on_error is not None:
                    try:
                        self.on_error(exc, batch)
                    except Exception:
                        pass
            else:
                self.batches += 1
                self.frames += len(batch)

    def stop(self, timeout: float = 5.0, close_scheduler: bool = True) -> bool:
        """Ask the loop to end and join it; True if the thread ended within ``timeout``.

        A ``process_batch_fn`` call in progress is not interrupted; the loop ends after it.
        """
        self._stop.set()
        if close_scheduler:
            self.scheduler.close()
        else:
            self.scheduler.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread.is_alive()
