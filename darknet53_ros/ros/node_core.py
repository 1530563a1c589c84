"""The ROS 2 detector node's behaviour as plain Python objects (no rclpy): :class:`NodeCore`.

``darknet53_ros/ros/node.py`` is thin rclpy glue around :class:`NodeCore`, and
``darknet53 replay`` feeds rosbag2 messages through the same core offline, so one code path
is tested without ROS. Parameters live in :mod:`darknet53_ros.ros.params`, cameras in
:mod:`darknet53_ros.ros.cameras`, model loading in :mod:`darknet53_ros.ros.model_files` and
status building in :mod:`darknet53_ros.ros.diagnostics`.

- **Processing** (:meth:`NodeCore.process_batch`): the :class:`~darknet53_ros.ros.scheduler.
  FrameScheduler` keeps the newest frame per camera; ``decode_threads`` threads
  (:class:`~darknet53_ros.ros.decode_pool.DecodePool`; 0: the inference thread) decode it with
  :class:`~darknet53_ros.io.frame_decoder.FrameDecoder` (JPEG at reduced scale when the network
  allows); one :class:`~darknet53_ros.ros.scheduler.InferenceWorker` thread runs the newest
  decoded frame of up to ``max_batch`` cameras through the shared
  :class:`~darknet53_ros.inference.detector.Detector` as one batch and emits a
  ``Detection2DArray`` per camera (always; boxes in source pixels; the source header), then
  hands the frame to the :class:`~darknet53_ros.ros.annotator.Annotator` thread when someone
  listens.
- **Accounting**: bad frames (corrupt data, unsupported encoding) and failed batches are
  dropped and counted per camera and reason, logged once per camera and reason and then at
  most once per ``log_throttle_period``; the core keeps running.
- **Diagnostics** (:meth:`NodeCore.diagnostics_msg`): per camera input and output rate,
  stamp-to-publish latency and drops by reason; for the detector backend, precision, engine
  file, batching and inference time.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.frame_decoder import DecodedFrame, FrameDecoder
from darknet53_ros.io.messages import (
    MessageTypes,
    as_header,
    detections_to_msg,
    diagnostic_array_msg,
    header_msg,
    label_info_msg,
)
from darknet53_ros.ros.annotator import Annotator
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.decode_pool import DecodePool, merge_stats
from darknet53_ros.ros.diagnostics import (
    NO_HARDWARE_ID,
    WARN,
    CameraStats,
    ThrottledLog,
    camera_status,
    detector_level,
    hardware_id,
    keep_above,
)
from darknet53_ros.ros.model_files import DEMO_WARNING, is_bundled_demo
from darknet53_ros.ros.params import NODE_NAME, PACKAGE, NodeParams
from darknet53_ros.ros.scheduler import FrameScheduler, InferenceWorker, QueuedFrame
from darknet53_ros.tracking.cameras import CameraTrackers

__all__ = ['IMAGE_DECODER', 'NodeCore', 'Outputs']

IMAGE_DECODER = 'darknet53_ros.io.encodings'
"""The module that decodes every image message (reported in diagnostics)."""


class Outputs:
    """Where the core's messages go; the node, the replay and tests override these."""

    serialized = False
    """True when :meth:`annotated` and :meth:`annotated_compressed` take serialized CDR
    ``bytes`` (rclpy publishers do) instead of message objects."""

    def detections(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        """Publish a ``vision_msgs/Detection2DArray`` (``stamp_ns``: publish time)."""

    def wants_annotated(self, camera: CameraSpec) -> bool:
        """Whether an annotated image of ``camera`` is wanted now (e.g. has subscribers)."""
        return False

    def annotated(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        """Publish an annotated ``sensor_msgs/Image``."""

    def wants_annotated_compressed(self, camera: CameraSpec) -> bool:
        """Whether a JPEG annotated image of ``camera`` is wanted now (``.../compressed``)."""
        return False

    def annotated_compressed(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        """Publish an annotated ``sensor_msgs/CompressedImage`` (JPEG)."""


def _stamp_ns(header: Any) -> int | None:
    stamp = getattr(header, 'stamp', None)
    if stamp is None:
        return None
    try:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        return None


class NodeCore:
    """The detector node without ROS: scheduler, worker, decoding, messages, diagnostics.

    Args:
        params: validated :class:`~darknet53_ros.ros.params.NodeParams`.
        detector: a :class:`~darknet53_ros.inference.detector.Detector` (owned: closed by
            :meth:`shutdown`).
        types: :class:`~darknet53_ros.io.messages.MessageTypes` (rclpy or rosbags).
        outputs: where messages go (:class:`Outputs`).
        logger: ``warning``/``error``/``info`` taking one string (default: ``logging``).
        clock: monotonic seconds for log throttling (and the default ``frame_clock``).
        now_ns: the ROS clock in ns (node clock, or bag time offline): publish time for
            stamp-to-publish latency and diagnostics headers.
        frame_clock: seconds for frame timing: arrival, queue wait and ``max_frame_age``,
            rates (default ``clock``). The node passes its ROS clock, so with
            ``use_sim_time`` every figure (latency, age, rates) is in simulated time.
        model_path: the model file (reported in diagnostics; default: the backend's).
        node_name: prefix of the diagnostic status names.
    """

    def __init__(self, params: NodeParams, detector: Detector, types: MessageTypes,
                 outputs: Outputs | None = None, logger: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 now_ns: Callable[[], int] = time.time_ns,
                 model_path: str | os.PathLike[str] | None = None,
                 node_name: str = NODE_NAME,
                 frame_clock: Callable[[], float] | None = None) -> None:
        """Build the scheduler (the worker starts with :meth:`start`)."""
        self.params = params
        self.detector = detector
        self.types = types
        self.outputs = outputs or Outputs()
        self.logger = logger or logging.getLogger(f'{PACKAGE}.node')
        self.clock = frame_clock or clock
        self.now_ns = now_ns
        self.model_path = str(model_path if model_path is not None
                              else detector.backend.model_path)
        self.node_name = node_name.strip('/') or NODE_NAME
        self.demo_model = is_bundled_demo(self.model_path)
        if self.demo_model:
            self.logger.warning(DEMO_WARNING)
        verification = getattr(detector.backend, 'verification', None)  # TensorRT engines
        if verification is not None:
            level, message = verification
            log = self.logger.warning if level == 'warning' else self.logger.info
            log(f'{self.model_path}: {message}')
        self.cameras: dict[str, CameraSpec] = {c.name: c for c in params.cameras}
        self.scheduler = FrameScheduler(list(self.cameras), params.max_batch,
                                        params.max_frame_age, clock=self.clock)
        self.decoder = FrameDecoder(detector.width, detector.height, detector.config.letterbox,
                                    params.decode_reduced, params.max_image_pixels)
        self.decode_pool = DecodePool(
            self.scheduler, self._decode, params.decode_threads, self._on_decode_error,
            eager=[c.name for c in params.cameras if not c.compressed],
        ) if params.decode_threads else None
        self.annotator = Annotator(  # annotated images: drawn and published off this thread
            self.outputs, types, params.annotated_max_rate, params.annotated_scale,
            lambda cam, exc: self._drop(cam, 'publish_error', exc, key=(cam, 'annotated')))
        self.throttle = ThrottledLog(self.logger, params.log_throttle_period, clock)
        self._stats = {name: CameraStats() for name in self.cameras}
        self._lock = threading.Lock()
        self._batches = 0
        self._frames = 0
        self._inference_s: deque[float] = deque(maxlen=100)
        self._worker: InferenceWorker | None = None
        self._closed = False
        self._started_at = self.clock()
        self._last_report_at = self._started_at
        self._backend_info: dict[str, Any] | None = None
        self.trackers: CameraTrackers | None = CameraTrackers()
        """Per-camera track ids (``tracking``); a new core (configure) starts them afresh."""
        self.backend_info()  # read now, while the backend is open

    # -- input ---------------------------------------------------------------------------------
    def submit(self, camera: str, msg: Any) -> bool:
        """Offer an image message of ``camera`` (from a subscription callback; rclpy, rosbags
        or :mod:`~darknet53_ros.io.cdr` messages); never waits for inference or decodes.
        Returns False when shutting down."""
        header = getattr(msg, 'header', None)
        stamp = _stamp_ns(header)
        return self.scheduler.submit(camera, msg, None if stamp is None else stamp * 1e-9,
                                     header)

    # -- processing ----------------------------------------------------------------------------
    def _drop(self, camera: str, reason: str, exc: BaseException, key: Any = None) -> None:
        text = f'{type(exc).__name__}: {exc}'
        with self._lock:
            stats = self._stats[camera]
            stats.dropped[reason] += 1
            stats.last_error = text
        spec = self.cameras[camera]
        what = {'bad_image': 'dropped a frame it cannot decode',
                'inference_error': 'dropped a frame: inference failed',
                'publish_error': 'could not publish'}[reason]
        self.throttle(key or (camera, reason),
                      f'camera {camera} ({spec.input_topic}): {what}: {text}',
                      'error' if reason == 'inference_error' else 'warning')

    def _decode(self, queued: QueuedFrame) -> DecodedFrame | None:
        """Decode one frame (None: dropped as ``bad_image``, counted and logged)."""
        try:
            decoded = self.decoder.decode(queued.frame, queued.camera)
            image = decoded.image
            if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
                raise ValueError(f'decoded to {type(image).__name__} '
                                 f'{getattr(image, "shape", "")}')
        except Exception as exc:
            self._drop(queued.camera, 'bad_image', exc)
            return None
        return decoded

    def _on_decode_error(self, camera: str, exc: BaseException) -> None:
        self.throttle(('decode', camera), f'decode thread: unexpected {type(exc).__name__}: '
                      f'{exc}', 'error')

    def process_batch(self, batch: Sequence[QueuedFrame]) -> int:
        """Decode (frames not decoded yet), detect (one batch for all cameras) and emit;
        returns frames published.

        Never raises for bad frames or a failing backend: those frames are dropped, counted
        and logged (throttled).
        """
        frames: list[QueuedFrame] = []
        decoded_frames: list[DecodedFrame] = []
        for queued in batch:
            decoded = queued.frame if isinstance(queued.frame, DecodedFrame) \
                else self._decode(queued)
            if decoded is not None:
                frames.append(queued)
                decoded_frames.append(decoded)
        if not frames:
            return 0
        images = [d.image for d in decoded_frames]
        start = time.perf_counter()
        try:
            results = self.detector.detect_batch(images)
            if len(results) != len(images):
                raise RuntimeError(f'{len(results)} results for {len(images)} images')
        except Exception as exc:
            for queued in frames:
                self._drop(queued.camera, 'inference_error', exc, key=('inference', 'batch'))
            return 0
        elapsed = time.perf_counter() - start
        with self._lock:
            self._batches += 1
            self._frames += len(frames)
            self._inference_s.append(elapsed)
        params = self.params
        names = self.detector.names
        published = 0
        for queued, decoded, det in zip(frames, decoded_frames, results):
            camera = self.cameras[queued.camera]
            try:
                published += self._emit(camera, queued, decoded, det, names, params)
            except Exception as exc:
                self._drop(queued.camera, 'publish_error', exc)
        return published

    def _emit(self, camera: CameraSpec, queued: QueuedFrame, decoded: DecodedFrame, det: Any,
              names: Sequence[str] | None, params: NodeParams) -> int:
        header = as_header(self.types, queued.header, self.now_ns)
        if camera.frame_id:  # NAME.frame_id overrides the driver's
            header = header_msg(self.types, _stamp_ns(header) or 0, camera.frame_id)
        det = keep_above(decoded.to_source(det), camera.threshold(params.conf_threshold))
        ids = None
        if self.trackers is not None and camera.tracking:
            stamp_ns = _stamp_ns(header)
            ids = self.trackers.assign(camera.name, det.boxes, det.scores, det.class_ids,
                                       stamp_ns if stamp_ns else self.now_ns())
        msg = detections_to_msg(self.types, header, det.boxes, det.scores, det.class_ids,
                                names, params.class_id_format, ids=ids)
        now = self.now_ns()
        self.outputs.detections(camera, msg, now)
        stamp = _stamp_ns(header)
        with self._lock:
            stats = self._stats[camera.name]
            stats.published += 1
            stats.output_rate.add(self.clock())
            if stamp is not None and stamp > 0:
                stats.latencies.append((now - stamp) * 1e-9)
        if params.publish_annotated:
            self.annotator.offer(camera, header, decoded, det, now, self.clock())
        return 1

    def process_pending(self) -> int:
        """Process every waiting frame now, in this thread (offline, deterministic mode);
        returns frames published."""
        published, pool = 0, self.decode_pool
        while True:
            if pool is not None:
                pool.drain()
            batch = (self.scheduler if pool is None else pool.output).next_batch(timeout=0)
            if not batch:
                return published
            published += self.process_batch(batch)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> NodeCore:
        """Start the inference thread (again after :meth:`stop`); returns self.

        Raises:
            RuntimeError: the core is shut down (its detector is closed).
        """
        if self._closed:
            raise RuntimeError('the node core is shut down; create a new one')
        if self._worker is None:
            self.scheduler.reopen()
            source = self.scheduler
            if self.decode_pool is not None:
                source = self.decode_pool.start().output
            self._worker = InferenceWorker(source, self.process_batch,
                                           on_error=self._on_worker_error).start()
            self.annotator.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the inference thread after its current batch, keeping the detector loaded
        (a lifecycle ``deactivate``); waiting frames are dropped as ``closed``. :meth:`start`
        resumes. Returns False when the thread did not stop within ``timeout``."""
        worker, self._worker = self._worker, None
        self.scheduler.close()
        if self.decode_pool is not None and not self.decode_pool.stop(timeout):
            self.logger.error(f'decode threads did not stop within {timeout:g} s')
        if worker is not None and not worker.stop(timeout):
            self._worker = worker
            self.logger.error(f'inference thread did not stop within {timeout:g} s')
            return False
        self.annotator.stop(timeout)  # after the worker: it hands frames to the annotator
        return True

    def _on_worker_error(self, exc: BaseException, batch: list[QueuedFrame]) -> None:
        self.throttle(('worker',), f'inference thread: unexpected {type(exc).__name__}: {exc}',
                      'error')

    @property
    def running(self) -> bool:
        """True while the inference thread runs."""
        return self._worker is not None and self._worker.running

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop the worker (after its current batch), then close the detector (frees the
        engine / CUDA context from the thread that is not using it any more). Idempotent.
        Returns False when the worker did not stop in time (the detector is then left open
        rather than freed under a running inference)."""
        if self._closed:
            return True
        if not self.stop(timeout):
            self.logger.error('the backend is left open (inference still running)')
            return False
        self._closed = True
        try:
            self.detector.close()
        except Exception as exc:
            self.logger.error(f'closing the backend failed: {type(exc).__name__}: {exc}')
        return True

    # -- runtime parameters --------------------------------------------------------------------
    def update_parameters(self, changes: Mapping[str, Any], ignore_unknown: bool = True
                          ) -> dict[str, Any]:
        """Apply runtime parameter changes (node and ``NAME.<key>`` camera parameters)
        atomically, all validated first (:meth:`NodeParams.updated`).

        Returns the applied values. Names that are not node parameters are ignored (rclpy's
        own, like ``use_sim_time``) unless ``ignore_unknown`` is false.

        Raises:
            ConfigError: a value is invalid or the parameter is applied at configure only.
        """
        params, applied = self.params.updated(changes, ignore_unknown)
        if params is self.params:
            return applied
        self.detector.config = replace(self.detector.config, **params.detector_options())
        self.params = params
        self.cameras = {c.name: c for c in params.cameras}
        age = params.max_frame_age
        self.scheduler.max_age_s = age if age > 0 else None
        self.throttle.period_s = params.log_throttle_period
        if self.decode_pool is not None:
            self.decode_pool.output.max_age_s = self.scheduler.max_age_s
        self.decoder.max_pixels = params.max_image_pixels
        self.annotator.max_rate = params.annotated_max_rate
        self.annotator.scale = params.annotated_scale
        return applied

    # -- statistics and diagnostics ------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-camera counters: the scheduler's (``received``, ``processed``, rates ...) plus
        ``published``, ``output_hz``, ``latency_s`` (last), ``latency_mean_s``,
        ``latency_max_s``, ``dropped`` (by every reason), ``dropped_total``, ``last_error``."""
        sched = merge_stats(self.scheduler.stats(), None if self.decode_pool is None
                            else self.decode_pool.output.stats())
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, own in self._stats.items():
                entry = dict(sched[name])
                dropped = {**entry['dropped'], **own.dropped}
                lat = list(own.latencies)
                entry.update(
                    published=own.published, output_hz=own.output_rate.rate(now),
                    dropped=dropped, dropped_total=sum(dropped.values()),
                    latency_s=lat[-1] if lat else None,
                    latency_mean_s=float(np.mean(lat)) if lat else None,
                    latency_max_s=max(lat) if lat else None, last_error=own.last_error)
                out[name] = entry
        return out

    def backend_info(self) -> dict[str, Any]:
        """Backend name, precision, engine file, input size, classes and providers."""
        if self._backend_info is None:
            self._backend_info = self._read_backend_info()
        return dict(self._backend_info)

    def _read_backend_info(self) -> dict[str, Any]:
        info: dict[str, Any] = dict(self.detector.backend.describe())
        info['engine_file'] = info.pop('model_file', str(self.model_path))
        info['input_size'] = f'{self.detector.width}x{self.detector.height}'
        if self.detector.names:
            info['classes'] = len(self.detector.names)
        return info

    def diagnostics(self) -> dict[str, dict[str, Any]]:
        """Diagnostic statuses as plain dicts (see
        :func:`~darknet53_ros.io.messages.diagnostic_array_msg`): one for the detector, one per
        camera. Levels compare with the previous call: WARN when a camera received nothing
        or dropped bad frames since then, ERROR when inference failed since then."""
        now = self.clock()
        stats = self.stats()
        period = max(now - self._last_report_at, 1e-9)
        self._last_report_at = now
        config = self.detector.config
        with self._lock:
            batches, frames = self._batches, self._frames
            inference = list(self._inference_s)
        failed_total = sum(s['dropped']['inference_error'] for s in stats.values())
        detector_status: dict[str, Any] = {
            **self.backend_info(),
            'cameras': len(self.cameras), 'max_batch': self.params.max_batch,
            'batches': batches, 'frames': frames,
            'mean_batch_size': frames / batches if batches else 0.0,
            'inference_ms_mean': 1e3 * float(np.mean(inference)) if inference else 0.0,
            'inference_ms_max': 1e3 * max(inference) if inference else 0.0,
            'conf_threshold': self.params.conf_threshold,
            'nms_threshold': config.nms_threshold,
            'max_frame_age_s': self.params.max_frame_age, 'image_converter': IMAGE_DECODER,
            'inference_thread': 'running' if self.running else 'stopped',
        }
        statuses: dict[str, dict[str, Any]] = {}
        new_failures = 0
        for name, entry in stats.items():
            own = self._stats[name]
            status, delta = camera_status(self.cameras[name], entry, own.reported, period,
                                          self.params.rate_warn_fraction)
            own.reported = {**entry['dropped'], 'received': entry['received']}
            new_failures += delta['inference_error']
            status['conf_threshold'] = self.cameras[name].threshold(self.params.conf_threshold)
            status['hardware_id'] = NO_HARDWARE_ID
            statuses[f'{self.node_name}: {name}'] = status
        summary = (f'{detector_status["backend"]} {detector_status["precision"]}, '
                   f'{len(self.cameras)} camera(s)'
                   + ('' if self._worker is not None else '; inactive (not processing)'))
        level, message = detector_level(
            new_failures, started=self._worker is not None, running=self.running,
            closed=self._closed, summary=summary)
        if self.demo_model:
            level, message = max(level, WARN), f'{message}; {DEMO_WARNING}'
        detector_status.update(level=level, message=message,
                               inference_errors_total=failed_total,
                               hardware_id=hardware_id(detector_status))
        return {f'{self.node_name}: detector': detector_status, **statuses}

    def diagnostics_msg(self, stamp_ns: int | None = None) -> Any:
        """A ``diagnostic_msgs/DiagnosticArray`` of :meth:`diagnostics` (named and identified
        as diagnostic_updater does: ``<node name>: <task>``, a device id or ``none``)."""
        stamp = self.now_ns() if stamp_ns is None else stamp_ns
        return diagnostic_array_msg(self.types, header_msg(self.types, stamp, ''),
                                    self.diagnostics(), NO_HARDWARE_ID)

    def label_info_msg(self, stamp_ns: int | None = None, camera: str | None = None
                       ) -> Any | None:
        """``vision_msgs/LabelInfo`` of ``camera`` (class map, the camera's threshold, its
        ``frame_id`` override; default: the first camera), or None when the message type is
        unavailable or the model has no class names."""
        if self.types.LabelInfo is None or not self.detector.names:
            return None
        spec = self.cameras[camera] if camera is not None else self.params.cameras[0]
        stamp = self.now_ns() if stamp_ns is None else stamp_ns
        return label_info_msg(self.types, header_msg(self.types, stamp, spec.frame_id),
                              self.detector.names, spec.threshold(self.params.conf_threshold))

