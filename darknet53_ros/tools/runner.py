"""Offline detection over images, folders, videos and rosbag2 recordings.

Sources: one image, a folder of images, a video file, or a rosbag2 (MCAP or SQLite3; its
``sensor_msgs/Image`` and ``CompressedImage`` topics). Outputs in one folder:

* ``detections.json``: COCO results (``image_id``, ``category_id`` = class index + 1,
  ``bbox`` [x, y, w, h] in source pixels, ``score``) and ``images.json`` mapping image ids to
  files / topics, frame indices and stamps;
* annotated images (``annotated/``) or an annotated video (``<stem>_annotated.mp4``);
* for a bag, a new rosbag2 (MCAP) with ``<topic>/detections`` (``vision_msgs/Detection2DArray``
  with the source header) and an annotated image topic;
* ``summary.json``.

A frame that cannot be read or decoded (or is larger than ``max_image_pixels``), and a frame
or message the container declares but that could not be read, is counted, reported with its
source and index, and skipped; the run goes on. The run writes into a hidden folder beside
the output and replaces the output folder whole at the end, so a failed or killed run leaves
the previous output as it was (and its leftovers are removed by the next run); an output
folder that is not empty is only replaced with ``overwrite``. The annotated video is checked
(frame count) before it is kept.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
import json
import logging
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_partials,
    staged_folder,
)
from darknet53_ros.io.bag_writer import BagWriter
from darknet53_ros.io.bags import BagReader
from darknet53_ros.io.draw import draw_detections
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.io.sources import (
    IMAGE_SUFFIXES,
    Frame,
    folder_images,
    iter_bag,
    iter_images,
    iter_video,
    source_kind,
    video_info,
)
from darknet53_ros.progress import progress as progress_iter
from darknet53_ros.tools.bag_sink import ANNOTATED_FORMATS, BagSink

_LOG = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: counts, failures (source, index, reason) and outputs."""

    processed: int = 0
    detections: int = 0
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    per_source: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Number of frames skipped."""
        return len(self.failures)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {'processed': self.processed, 'failed': self.failed,
                'detections': self.detections, 'seconds': round(self.seconds, 3),
                'fps': round(self.processed / self.seconds, 2) if self.seconds else None,
                'per_source': dict(self.per_source), 'outputs': self.outputs,
                'failures': [{'source': s, 'index': i, 'reason': r}
                             for s, i, r in self.failures]}


def _batches(frames: Iterable[Frame], size: int,
             summary: RunSummary) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        if frame.image is None:
            summary.failures.append((frame.source, frame.index, frame.error))
            _LOG.warning('skipped %s [%d]: %s', frame.source, frame.index, frame.error)
            continue
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _CocoSink:
    """Collects COCO results and the image index."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, frame: Frame, det: Any) -> None:
        assert frame.image is not None
        image_id = len(self.images) + 1
        height, width = frame.image.shape[:2]
        entry = {'id': image_id, 'source': frame.source, 'index': frame.index,
                 'width': width, 'height': height}
        if frame.stamp_ns is not None:
            entry['stamp_ns'] = frame.stamp_ns
        self.images.append(entry)
        for box, score, cls in zip(det.boxes.tolist(), det.scores.tolist(),
                                   det.class_ids.tolist()):
            x1, y1, x2, y2 = box
            self.results.append({'image_id': image_id, 'category_id': int(cls) + 1,
                                 'bbox': [round(x1, 2), round(y1, 2), round(x2 - x1, 2),
                                          round(y2 - y1, 2)],
                                 'score': round(float(score), 5)})

    def close(self, out: Path) -> list[str]:
        atomic_write_text(out / 'detections.json', json.dumps(self.results))
        atomic_write_text(out / 'images.json', json.dumps(self.images, indent=1))
        return [str(out / 'detections.json'), str(out / 'images.json')]


class _ImageSink:
    """Annotated JPEG per frame under ``annotated/``."""

    def __init__(self, out: Path, limit: int | None = None) -> None:
        self.folder = out / 'annotated'
        self.limit = limit
        self.count = 0
        self.used: set[str] = set()

    def _unique(self, frame: Frame) -> str:
        """``x`` for ``x.jpg``; ``x_png`` for a later ``x.png``, then ``_2`` ... (issue 13.5)."""
        path = Path(frame.source)
        stem = (path.stem if frame.topic is None
                else frame.topic.strip('/').replace('/', '_') + f'_{frame.index:06d}')
        candidates = [stem, f'{stem}_{path.suffix.lstrip(".").lower()}']
        candidates += [f'{stem}_{n}' for n in range(2, len(self.used) + 3)]
        name = next(c for c in candidates if c not in self.used)
        self.used.add(name)
        return name

    def add(self, frame: Frame, annotated: np.ndarray) -> None:
        import cv2

        if self.limit is not None and self.count >= self.limit:
            return
        ok, data = cv2.imencode('.jpg', annotated, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            atomic_write_bytes(self.folder / f'{self._unique(frame)}.jpg', data.tobytes())
            self.count += 1

    def close(self, out: Path) -> list[str]:
        return [str(self.folder)] if self.count else []


class _VideoSink:
    """Annotated video, written to a temporary file and renamed on success."""

    def __init__(self, out: Path, source: Path, fps: float) -> None:
        self.path = out / f'{source.stem}_annotated.mp4'
        self.fps = fps if fps > 0 else 25.0
        self.writer: Any = None
        self.context: Any = None
        self.tmp: Path | None = None
        self.written = 0

    def add(self, frame: Frame, annotated: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.context = atomic_path(self.path, suffix='.tmp.mp4')
            self.tmp = self.context.__enter__()
            height, width = annotated.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*'mp4v')
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (width, height))
            if not self.writer.isOpened():
                self.context.__exit__(SourceError, SourceError('no writer'), None)
                self.writer = None
                raise SourceError(f'{self.path}: OpenCV cannot write mp4v video here; '
                                  'use --no-annotate')
        self.writer.write(annotated)
        self.written += 1

    def _check(self) -> None:
        """cv2.VideoWriter.write fails silently (full disk): count what the file holds."""
        import cv2

        capture = cv2.VideoCapture(str(self.tmp))
        held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
        capture.release()
        if held != self.written:
            raise SourceError(f'{self.path}: the annotated video holds {held} of the '
                              f'{self.written} frames written (disk full?); not kept')

    def close(self, out: Path, ok: bool = True) -> list[str]:
        if self.writer is None:
            return []
        self.writer.release()
        try:
            if ok:
                self._check()
        except SourceError as exc:
            self.context.__exit__(SourceError, exc, None)
            raise
        if ok:
            self.context.__exit__(None, None, None)
            return [str(self.path)]
        self.context.__exit__(SourceError, SourceError('aborted'), None)
        return []


def _open_bag_sink(out: Path, source: Path, names: Sequence[str] | None,
                   annotated: str) -> BagSink:
    """A new MCAP bag ``<out>/<source stem>_detections`` for a bag source's outputs."""
    writer = BagWriter(out / f'{source.stem}_detections', types=MessageTypes.from_rosbags(),
                       overwrite=True)
    writer.open()
    return BagSink(writer, annotated, names)


class OfflineRunner:
    """Runs a :class:`~darknet53_ros.inference.detector.Detector` over a source into an output
    folder."""

    def __init__(self, detector: Any, output: str | os.PathLike, batch: int = 1,
                 annotate: bool = True, annotated_format: str = 'compressed',
                 save_images: int | None = None, progress: bool = True,
                 overwrite: bool = False,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 track: Callable[[Frame, Any], Sequence[str]] | None = None) -> None:
        if batch < 1:
            raise SourceError(f'--batch must be >= 1, got {batch}')
        if annotated_format not in ANNOTATED_FORMATS:
            raise SourceError(f'--annotated must be one of {", ".join(ANNOTATED_FORMATS)}')
        self.detector = detector
        self.output = Path(output)
        self.batch = batch
        self.annotate = annotate
        self.annotated_format = annotated_format
        self.save_images = save_images
        self.progress = progress
        self.overwrite = overwrite
        self.max_pixels = max_image_pixels
        self.track = track
        """Called with each frame and its detections, returns their ``Detection2D.id`` strings
        (``darknet53 track``: track ids); the ids go into the bag's detections."""

    def run(self, source: str | os.PathLike, topics: Sequence[str] | None = None
            ) -> RunSummary:
        """Process ``source``; returns the summary (also written as ``summary.json``)."""
        source = Path(source)
        kind = source_kind(source)
        if topics and kind != 'bag':
            raise SourceError(f'--topics applies to rosbag2 sources, not to {source}')
        final = self._check_output(source)
        summary = RunSummary()
        start = time.perf_counter()
        with staged_folder(final) as self.output:
            try:
                if kind == 'bag':
                    self._run_bag(source, topics, summary)
                else:
                    self._run_files(source, kind, summary)
                summary.seconds = time.perf_counter() - start
                summary.outputs.append(str(self.output / 'summary.json'))
                summary.outputs = [str(final / Path(p).relative_to(self.output))
                                   for p in summary.outputs]
                atomic_write_text(self.output / 'summary.json',
                                  json.dumps(summary.as_dict(), indent=1))
            finally:
                self.output = final
        return summary

    def _check_output(self, source: Path) -> Path:
        """The output folder, refused when it holds earlier results (without overwrite) or
        the source; leftovers of killed runs are removed."""
        out = self.output
        try:
            source.resolve().relative_to(out.resolve())
        except ValueError:
            pass
        else:
            raise ConfigError(f'--output {out}: holds the source {source}; choose another folder')
        if out.is_dir():
            remove_stale_partials(out)
            if any(out.iterdir()) and not self.overwrite:
                raise SourceError(f'--output {out}: not empty (earlier results?); pass '
                                  '--overwrite to replace the whole folder')
        return out

    def _annotated(self, frame: Frame, det: Any) -> np.ndarray:
        assert frame.image is not None
        return draw_detections(frame.image, det.boxes, det.scores, det.class_ids, det.names)

    def _frames_with_progress(self, frames: Iterable[Frame], total: int | None,
                              desc: str) -> Iterable[Frame]:
        return progress_iter(frames, self.progress, desc, total, 'frame')

    def _process(self, frames: Iterable[Frame], summary: RunSummary,
                 sink: Any) -> None:
        for batch in _batches(frames, self.batch, summary):
            detections = self.detector.detect_batch([f.image for f in batch])
            for frame, det in zip(batch, detections):
                summary.processed += 1
                summary.detections += len(det)
                summary.per_source[frame.topic or 'files'] += 1
                sink(frame, det)

    def _run_files(self, source: Path, kind: str, summary: RunSummary) -> None:
        coco = _CocoSink()
        video = None
        images = _ImageSink(self.output, self.save_images) if self.annotate else None
        if kind == 'video':
            fps, total = video_info(source)
            frames: Iterable[Frame] = iter_video(source)
            video = _VideoSink(self.output, source, fps) if self.annotate else None
            images = None
        else:
            paths = [source] if kind == 'image' else folder_images(source)
            if not paths:
                raise SourceError(f'{source}: no image files '
                                  f'({", ".join(sorted(IMAGE_SUFFIXES))})')
            total = len(paths)
            frames = iter_images(paths, self.max_pixels)

        def sink(frame: Frame, det: Any) -> None:
            coco.add(frame, det)
            if self.track is not None:
                self.track(frame, det)
            target = video if video is not None else images
            if target is not None:
                target.add(frame, self._annotated(frame, det))

        ok = False
        try:
            self._process(self._frames_with_progress(frames, total or None, source.name),
                          summary, sink)
            ok = True
        finally:
            if video is not None:
                summary.outputs += video.close(self.output, ok)
        summary.outputs += coco.close(self.output)
        if images is not None:
            summary.outputs += images.close(self.output)

    def _run_bag(self, source: Path, topics: Sequence[str] | None,
                 summary: RunSummary) -> None:
        with BagReader(source) as reader:
            available = [t.name for t in reader.image_topics()]
            chosen = list(topics) if topics else available
            missing = sorted(set(chosen) - set(available))
            if missing:
                raise SourceError(f'rosbag2 {source}: no image topic {", ".join(missing)} '
                                  f'(image topics: {", ".join(available) or "none"})')
            if not chosen:
                raise SourceError(f'rosbag2 {source}: no sensor_msgs/Image or '
                                  'CompressedImage topics')
            total = sum(reader.topics[t].count for t in chosen) or None
            coco = _CocoSink()
            images = (_ImageSink(self.output, self.save_images)
                      if self.save_images else None)
            bag = _open_bag_sink(self.output, source, getattr(self.detector, 'names', None),
                                 self.annotated_format if self.annotate else 'none')

            def sink(frame: Frame, det: Any) -> None:
                coco.add(frame, det)
                ids = self.track(frame, det) if self.track is not None else None
                want = self.annotate and (bag.annotated_format != 'none' or images is not None)
                annotated = self._annotated(frame, det) if want else None
                bag.add_frame(frame, det, annotated, ids)
                if images is not None and annotated is not None:
                    images.add(frame, annotated)

            ok = False
            try:
                frames = self._frames_with_progress(
                    iter_bag(reader, chosen, self.max_pixels), total, source.name)
                self._process(frames, summary, sink)
                ok = True
            finally:
                summary.outputs += bag.close(ok)
            summary.outputs += coco.close(self.output)
            if images is not None:
                summary.outputs += images.close(self.output)


def format_summary(summary: RunSummary) -> str:
    """Human-readable end-of-run summary."""
    lines = [f'processed {summary.processed} frames in {summary.seconds:.1f} s'
             f' ({summary.processed / summary.seconds:.1f} fps)' if summary.seconds else
             f'processed {summary.processed} frames',
             f'detections: {summary.detections}']
    if len(summary.per_source) > 1 or 'files' not in summary.per_source:
        lines += [f'  {name}: {count} frames' for name, count in sorted(
            summary.per_source.items())]
    if summary.failures:
        reasons = Counter(reason.split(':')[0] for _, _, reason in summary.failures)
        lines.append(f'skipped {summary.failed} frames: ' + ', '.join(
            f'{count} x {reason}' for reason, count in reasons.most_common()))
        for source, index, reason in summary.failures[:10]:
            lines.append(f'  {source} [{index}]: {reason}')
        if summary.failed > 10:
            lines.append(f'  ... {summary.failed - 10} more in summary.json')
    lines += [f'wrote {path}' for path in summary.outputs]
    return '\n'.join(lines)
