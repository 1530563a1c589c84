"""Decoding off the inference thread: :class:`DecodePool`.

At 2x1080p JPEG, decoding on the inference thread took 54 % of the node's time (issue 21),
and the engine waited for it. With ``decode_threads`` > 0 the node runs two stages:

1. the ingest :class:`~darknet53_ros.ros.scheduler.FrameScheduler` (what the subscriptions
   feed: newest encoded frame per camera) is drained by ``threads`` decode threads, each
   :meth:`~darknet53_ros.ros.scheduler.FrameScheduler.take`-ing one camera's newest frame and
   claiming that camera while it decodes (one camera's frames are decoded in order, one at a
   time);
2. decoded frames go into a second scheduler (:attr:`DecodePool.output`, same newest-frame
   and round-robin batching rules, arrival time kept) that the inference thread batches from.

A compressed camera whose decoded frame still waits for inference is not decoded again (**on
demand**): when inference is the bottleneck no JPEG decode is wasted on a frame that would be
replaced, and the next frame is decoded while the engine runs. **Eager** cameras (raw
``Image`` topics: a zero-copy view or one colour conversion) are decoded as frames arrive,
so the engine always takes the newest frame: held back on demand, a raw frame waited one
more inference period (4x640x480 raw: latency p50 84-89 ms against 52-63 ms of decoding on
the inference thread, issue 21). A replaced encoded frame is dropped ``superseded`` when its
camera's decoded frame was waiting (inference busy), else ``decode_superseded`` (every
decode thread busy); a replaced decoded frame is ``superseded``.

Memory stays bounded: per camera at most one encoded frame waiting, one in decoding, one
decoded waiting and one in inference. OpenCV releases the GIL while it decodes and converts,
so decode threads run beside inference (ONNX Runtime and TensorRT release it too).

:func:`merge_stats` combines both stages' counters into the node's per-camera view.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
import threading
from typing import Any

from darknet53_ros.ros.scheduler import FrameScheduler, QueuedFrame

__all__ = ['DecodePool', 'merge_stats']


class DecodePool:
    """``threads`` threads moving frames from ``ingest`` to :attr:`output`, decoded.

    Args:
        ingest: the scheduler the subscriptions feed.
        decode: ``QueuedFrame -> decoded frame`` or None (dropped; the callable counts and
            logs it). Exceptions are passed to ``on_error`` and the frame is dropped.
        threads: number of decode threads (at most one per camera is ever busy).
        on_error: ``(camera, exception)`` for an unexpected decode failure.
        eager: cameras decoded as soon as a frame arrives, also while their decoded frame
            still waits (cheap decodes: raw frames); the others are decoded on demand.
    """

    def __init__(self, ingest: FrameScheduler, decode: Callable[[QueuedFrame], Any],
                 threads: int,
                 on_error: Callable[[str, BaseException], None] | None = None,
                 eager: Collection[str] = ()) -> None:
        """Create the pool and its output scheduler (threads start with :meth:`start`)."""
        self.ingest = ingest
        self.decode = decode
        self.threads = max(1, min(int(threads), len(ingest.cameras)))
        self.on_error = on_error
        self.eager = frozenset(eager)
        self.output = _OutputStage(ingest, ingest.cameras, ingest.max_batch, ingest.max_age_s,
                                   clock=ingest.clock)
        ingest.supersede_reason = lambda camera: (
            'superseded' if camera in self._held() else 'decode_superseded')
        self._workers: list[threading.Thread] = []

    def start(self) -> DecodePool:
        """Start the decode threads (reopening both schedulers); returns self."""
        if not self._workers:
            self.ingest.reopen()
            self.output.reopen()
            self._workers = [threading.Thread(target=self._run, name=f'darknet53-decode-{i}',
                                              daemon=True) for i in range(self.threads)]
            for worker in self._workers:
                worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the ingest scheduler and join the threads (each ends after its current
        frame); True when all ended within ``timeout``. The output scheduler is left to the
        inference worker."""
        self.ingest.close()
        workers, self._workers = self._workers, []
        alive = []
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout)
            if worker.is_alive():
                alive.append(worker)
        self._workers = alive
        return not alive

    @property
    def running(self) -> bool:
        """True while a decode thread runs."""
        return any(worker.is_alive() for worker in self._workers)

    def drain(self) -> int:
        """Decode every waiting frame now, in the calling thread (offline, deterministic
        mode); returns how many were taken."""
        taken = 0
        while True:
            queued = self.ingest.take(timeout=0, busy=self._held)
            if queued is None:
                return taken
            self._handle(queued)
            taken += 1

    def _held(self) -> set[str]:
        """Cameras not decoded now: on-demand cameras whose decoded frame still waits."""
        return self.output.waiting() - self.eager

    def _run(self) -> None:
        ingest = self.ingest
        while True:
            queued = ingest.take(timeout=0.1, busy=self._held)
            if queued is None:
                if ingest.closed:
                    return
                continue
            self._handle(queued)
            del queued

    def _handle(self, queued: QueuedFrame) -> None:
        try:
            decoded = self.decode(queued)
            if decoded is not None:
                self.output.submit(queued.camera, decoded, queued.stamp_s, queued.header,
                                   arrival_s=queued.arrival_s)
        except Exception as exc:  # keep decoding the other frames
            if self.on_error is not None:
                try:
                    self.on_error(queued.camera, exc)
                except Exception:
                    pass
        finally:
            self.ingest.release(queued.camera)


class _OutputStage(FrameScheduler):
    """The decoded frames' scheduler: taking a batch wakes the decode threads (the cameras
    taken may be decoded again)."""

    def __init__(self, ingest: FrameScheduler, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ingest = ingest

    def waiting(self) -> set[str]:
        """Cameras with a decoded frame waiting (read without the lock: a stale answer only
        delays or advances one decode)."""
        return {name for name, state in self._state.items() if state.pending is not None}

    def next_batch(self, timeout: float | None = None) -> list[QueuedFrame]:
        batch = super().next_batch(timeout)
        if batch:
            self.ingest.wake()
        return batch


def merge_stats(ingest: Mapping[str, Mapping[str, Any]],
                output: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Per-camera scheduler counters of the node: arrivals and the publisher estimate from
    ``ingest``; with a decode stage (``output``), what reached inference from ``output`` and
    the drops of both stages."""
    merged: dict[str, dict[str, Any]] = {}
    for name, entry in ingest.items():
        out = dict(entry)
        if output is not None:
            second = output[name]
            dropped = {reason: entry['dropped'].get(reason, 0) + second['dropped'].get(reason, 0)
                       for reason in entry['dropped']}
            out.update(processed=second['processed'], processed_hz=second['processed_hz'],
                       last_wait_s=second['last_wait_s'], max_wait_s=second['max_wait_s'],
                       pending=entry['pending'] or second['pending'], dropped=dropped,
                       dropped_total=sum(dropped.values()))
        merged[name] = out
    return merged
