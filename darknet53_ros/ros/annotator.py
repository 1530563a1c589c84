"""Annotated images off the inference thread: :class:`Annotator`.

Drawing a 1080p frame, building its ``sensor_msgs/Image`` and publishing it cost about 8 ms
of CPU; done on the inference thread they cut the detection rate by up to 2.9x as soon as a
viewer subscribed (issue 21). Here the inference thread only checks the rate limit and hands
over references (no copy): the frame as decoded, its detections in source pixels and the
header. One annotator thread keeps the **newest** hand-over per camera (an older one still
waiting is dropped and counted ``superseded``), draws on a copy scaled by
``annotated_scale`` (never above the decoded size: a reduced-scale JPEG decode is not
upscaled), and publishes:

- ``NAME/detections/image`` (``sensor_msgs/Image``, ``bgr8``) while it has subscribers;
- ``NAME/detections/image/compressed`` (``sensor_msgs/CompressedImage``, JPEG quality
  :data:`JPEG_QUALITY`, image_transport's naming) while it has subscribers.

At most ``annotated_max_rate`` images per second and camera are handed over (0: every
detected frame), on the node's frame clock. A slow viewer or a busy CPU drops annotated frames,
never detections. Outputs that take serialized messages (``Outputs.serialized``: the rclpy
node, whose publishers accept ``bytes``) get CDR written by :mod:`darknet53_ros.io.cdr`
(one copy of the pixels) instead of message objects.

Without :meth:`Annotator.start` (offline replay, tests), :meth:`Annotator.offer` annotates in
the calling thread.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import threading
from typing import Any

import numpy as np

from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.cdr import write_compressed_image, write_image
from darknet53_ros.io.draw import draw_detections
from darknet53_ros.io.encodings import bgr_to_compressed_fields
from darknet53_ros.io.frame_decoder import BufferPool, DecodedFrame
from darknet53_ros.io.messages import MessageTypes, compressed_image_msg, image_msg
from darknet53_ros.ros.cameras import CameraSpec

__all__ = ['JPEG_QUALITY', 'Annotator', 'RateLimiter']

JPEG_QUALITY = 80
"""JPEG quality of the ``.../compressed`` annotated image."""


class RateLimiter:
    """At most ``rate`` events per second per key (0: unlimited), keeping the cadence: an
    event within one period of its slot keeps the schedule (so camera jitter does not halve
    the rate), a late one restarts it."""

    def __init__(self, rate: float = 0.0) -> None:
        """Allow ``rate`` events per second and key."""
        self.rate = float(rate)
        self._next: dict[Any, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: Any, now: float) -> bool:
        """Whether an event of ``key`` at ``now`` (seconds) is allowed; records it if so."""
        if self.rate <= 0:
            return True
        period = 1.0 / self.rate
        with self._lock:
            due = self._next.get(key)
            if due is not None and now < due and due - now <= period:
                return False
            on_time = due is not None and now - due < period
            self._next[key] = due + period if on_time and due is not None else now + period
            return True


@dataclass(frozen=True)
class _Job:
    camera: CameraSpec
    header: Any
    frame: DecodedFrame
    det: Detections
    stamp_ns: int
    image: bool
    compressed: bool


class Annotator:
    """Draws and publishes annotated images (see the module doc).

    Args:
        outputs: the node core's :class:`~darknet53_ros.ros.node_core.Outputs`.
        types: message classes (for outputs that take message objects).
        max_rate: most annotated images per second and camera (0: no limit).
        scale: output size relative to the source frame, in (0, 1].
        on_error: ``(camera name, exception)`` for a failed annotation (counted by the core).
    """

    def __init__(self, outputs: Any, types: MessageTypes, max_rate: float = 0.0,
                 scale: float = 1.0,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Create the annotator (not started: :meth:`offer` annotates inline)."""
        self.outputs = outputs
        self.types = types
        self.limiter = RateLimiter(max_rate)
        self.scale = float(scale)
        self.on_error = on_error
        self.published: dict[str, int] = {}
        self.superseded: dict[str, int] = {}
        self._pending: dict[str, _Job] = {}
        self._pools: dict[str, BufferPool] = {}
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def max_rate(self) -> float:
        """Most annotated images per second and camera (0: no limit)."""
        return self.limiter.rate

    @max_rate.setter
    def max_rate(self, rate: float) -> None:
        self.limiter.rate = float(rate)

    def wanted(self, camera: CameraSpec) -> tuple[bool, bool]:
        """``(image, compressed)``: which annotated topics of ``camera`` have subscribers."""
        wants_compressed = getattr(self.outputs, 'wants_annotated_compressed', None)
        compressed = bool(wants_compressed(camera)) if wants_compressed is not None else False
        return bool(self.outputs.wants_annotated(camera)), compressed

    def offer(self, camera: CameraSpec, header: Any, frame: DecodedFrame, det: Detections,
              stamp_ns: int, now: float) -> bool:
        """Hand over a detected frame (called by the inference thread; cheap). Returns
        whether it was taken: someone listens and the rate limit allows it."""
        image, compressed = self.wanted(camera)
        if not (image or compressed) or not self.limiter.allow(camera.name, now):
            return False
        job = _Job(camera, header, frame, det, stamp_ns, image, compressed)
        with self._cond:
            if self._thread is not None:
                if camera.name in self._pending:
                    self.superseded[camera.name] = self.superseded.get(camera.name, 0) + 1
                self._pending[camera.name] = job
                self._cond.notify()
                return True
        self._run_job(job)
        return True

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> Annotator:
        """Start the annotator thread (idempotent); returns self."""
        with self._cond:
            if self._thread is None:
                self._stop = False
                self._thread = threading.Thread(target=self._loop, name='darknet53-annotate',
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread after its current image (waiting ones are dropped); True when it
        ended within ``timeout``."""
        with self._cond:
            thread, self._stop = self._thread, True
            self._pending.clear()
            self._cond.notify_all()
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        with self._cond:
            self._thread = None
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                name = next(iter(self._pending))
                job = self._pending.pop(name)
            self._run_job(job)
            del job

    def _run_job(self, job: _Job) -> None:
        try:
            self._annotate(job)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(job.camera.name, exc)

    # -- drawing and publishing ----------------------------------------------------------------
    def _canvas(self, job: _Job) -> tuple[np.ndarray, np.ndarray]:
        """The scaled copy to draw on, and the boxes in its pixels."""
        import cv2

        frame = job.frame
        image = frame.image
        height, width = image.shape[:2]
        out_w = min(width, max(1, int(round(frame.source_width * self.scale))))
        out_h = min(height, max(1, int(round(frame.source_height * self.scale))))
        pool = self._pools.setdefault(job.camera.name, BufferPool(2))
        shape = (out_h, out_w, 3)
        canvas = pool.get(shape)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if (out_w, out_h) == (width, height):
            np.copyto(canvas, image)
        else:
            cv2.resize(image, (out_w, out_h), dst=canvas, interpolation=cv2.INTER_AREA)
        fx, fy = out_w / frame.source_width, out_h / frame.source_height
        boxes = np.asarray(job.det.boxes, np.float32).reshape(-1, 4) * \
            np.array([fx, fy, fx, fy], np.float32)
        return canvas, boxes

    def _annotate(self, job: _Job) -> None:
        canvas, boxes = self._canvas(job)
        det = job.det
        draw_detections(canvas, boxes, det.scores, det.class_ids, det.names, copy=False)
        serialized = bool(getattr(self.outputs, 'serialized', False))
        if job.image:
            if serialized:
                height, width = canvas.shape[:2]
                msg: Any = write_image(job.header, height, width, 'bgr8', width * 3, canvas)
            else:
                msg = image_msg(self.types, job.header, canvas)
            self.outputs.annotated(job.camera, msg, job.stamp_ns)
        if job.compressed:
            if serialized:
                fields = bgr_to_compressed_fields(canvas, 'jpeg', JPEG_QUALITY)
                msg = write_compressed_image(job.header, fields['format'], fields['data'])
            else:
                msg = compressed_image_msg(self.types, job.header, canvas, 'jpeg', JPEG_QUALITY)
            self.outputs.annotated_compressed(job.camera, msg, job.stamp_ns)
        name = job.camera.name
        self.published[name] = self.published.get(name, 0) + 1
