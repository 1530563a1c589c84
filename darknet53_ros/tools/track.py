"""``darknet53 track``: detect and track offline; MOTChallenge result files, bags with ids.

Sources:

* a MOTChallenge sequence folder (``seqinfo.ini``, ``img1/``), or a folder of them: one result
  file ``<output>/<sequence>.txt`` each (``frame,id,x,y,w,h,conf,-1,-1,-1``); frame times are
  ``(frame - 1) / frameRate``. With ``detections='det'`` the sequence's own ``det/det.txt``
  (MOTChallenge public detections) is tracked instead of running a model;
* a video: ``<output>/<stem>.txt`` (times from the frame rate) plus what ``detect`` writes;
* a rosbag2: what ``detect`` writes, with ``Detection2D.id`` filled with the track ids in the
  new bag's ``<topic>/detections``, plus one result file per image topic
  (``<topic with / as _>.txt``); times are the header stamps.

The detections each sequence was tracked on can be saved (``save_detections``) as
``<output>/det/<sequence>.txt``: MOTChallenge ``det.txt`` rows with the class index + 1 in
column 8 (``frame,-1,x,y,w,h,conf,class,-1,-1``); :func:`read_detections` reads them back,
so several trackers can be compared on identical detections.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.fileio import atomic_write_text, staged_folder
from darknet53_ros.io.mot import (
    SeqInfo,
    find_sequences,
    is_sequence,
    read_mot_file,
    write_results,
)
from darknet53_ros.io.sources import read_image, source_kind
from darknet53_ros.progress import progress as progress_iter
from darknet53_ros.tools.runner import OfflineRunner
from darknet53_ros.tracking.cameras import CameraTrackers
from darknet53_ros.tracking.tracker import Tracker, TrackerConfig

__all__ = ['FrameDetections', 'TrackSummary', 'format_detections', 'read_detections',
           'run_track', 'track_frames']


@dataclass
class FrameDetections:
    """One frame's detections: 1-based frame number, time (s), boxes [n, 4] x1 y1 x2 y2
    (0-based pixel edges), scores [n], class indices [n]."""

    frame: int
    stamp: float
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


@dataclass
class TrackSummary:
    """What a ``track`` run wrote: result files, frames, tracks, failures."""

    results: list[str] = field(default_factory=list)
    frames: int = 0
    tracks: int = 0
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Human-readable summary."""
        lines = [f'tracked {self.frames} frames: {self.tracks} tracks in '
                 f'{len(self.results)} result file(s)']
        if self.failed:
            lines.append(f'skipped {len(self.failed)} frames')
            lines += [f'  {src} [{i}]: {why}' for src, i, why in self.failed[:10]]
        lines += [f'wrote {p}' for p in self.results + self.outputs]
        return '\n'.join(lines)


def track_frames(frames: Sequence[FrameDetections], config: TrackerConfig | None = None,
                 tracker: Tracker | None = None) -> list[tuple[int, int, float, float, float,
                                                               float, float]]:
    """Track ``frames`` in order; returns result rows ``(frame, id, x1, y1, x2, y2, score)``
    of the tracked detections (see :func:`darknet53_ros.io.mot.write_results`)."""
    tracker = tracker or Tracker(config)
    rows = []
    for item in frames:
        ids = tracker.update(item.boxes, item.scores, item.class_ids, item.stamp)
        for ident, box, score in zip(ids.tolist(), tracker.filtered_boxes.tolist(),
                                     item.scores.tolist()):
            if ident > 0:
                rows.append((item.frame, int(ident), *box, float(score)))
    return rows


def format_detections(frames: Sequence[FrameDetections]) -> str:
    """``det.txt`` text with classes (module docstring)."""
    return ''.join(
        f'{f.frame},-1,{x1 + 1:.2f},{y1 + 1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.5f},{c + 1},'
        '-1,-1\n' for f in frames
        for (x1, y1, x2, y2), s, c in zip(f.boxes.tolist(), f.scores.tolist(),
                                          f.class_ids.tolist()))


def read_detections(path: str | os.PathLike[str], info: SeqInfo) -> list[FrameDetections]:
    """Detections of every frame of ``info`` from a ``det.txt`` (class from column 8 when it
    is > 0, else 0); frames without rows are empty."""
    rows = read_mot_file(path)
    out = []
    for frame in range(1, info.length + 1):
        data = rows.get(frame, np.zeros((0, 10)))
        xywh = data[:, 2:6]
        boxes = np.concatenate([xywh[:, :2] - 1, xywh[:, :2] - 1 + xywh[:, 2:]], axis=1)
        classes = (np.maximum(data[:, 7], 1) - 1).astype(np.int64) if data.shape[1] > 7 \
            else np.zeros(len(data), np.int64)
        out.append(FrameDetections(frame, (frame - 1) / info.frame_rate, boxes,
                                   data[:, 6].astype(np.float64), classes))
    return out


def detect_sequence(detector: Any, info: SeqInfo, batch: int = 1, progress: bool = False,
                    failed: list[tuple[str, int, str]] | None = None,
                    ) -> list[FrameDetections]:
    """Run ``detector`` over a sequence's images; a frame that cannot be read is tracked as
    empty (and listed in ``failed``)."""
    out: list[FrameDetections] = []
    frames = range(1, info.length + 1)

    def flush(pending: list[tuple[int, np.ndarray]]) -> None:
        results = detector.detect_batch([image for _, image in pending])
        for (frame, _), det in zip(pending, results):
            out.append(FrameDetections(frame, (frame - 1) / info.frame_rate,
                                       np.asarray(det.boxes, np.float64).reshape(-1, 4),
                                       np.asarray(det.scores, np.float64).reshape(-1),
                                       np.asarray(det.class_ids).reshape(-1).astype(np.int64)))
        pending.clear()

    pending: list[tuple[int, np.ndarray]] = []
    for frame in progress_iter(frames, progress, info.name, info.length, 'frame'):
        loaded = read_image(info.image_path(frame), frame - 1)
        if loaded.image is None:
            flush(pending)
            if failed is not None:
                failed.append((str(info.image_path(frame)), frame, loaded.error))
            out.append(FrameDetections(frame, (frame - 1) / info.frame_rate,
                                       np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
            continue
        pending.append((frame, loaded.image))
        if len(pending) >= batch:
            flush(pending)
    flush(pending)
    return out


def _topic_file(topic: str) -> str:
    return topic.strip('/').replace('/', '_') or 'topic'


def run_track(source: str | os.PathLike[str], output: str | os.PathLike[str],
              detector: Any = None, config: TrackerConfig | None = None,
              detections: str = 'model', batch: int = 1, progress: bool = True,
              overwrite: bool = False, save_detections: bool = False,
              runner_options: dict[str, Any] | None = None) -> TrackSummary:
    """Detect (or read ``det/det.txt``) and track ``source`` into ``output`` (see module
    docstring); ``output`` is replaced whole at the end.

    Raises:
        ConfigError: no detector where one is needed, bad ``detections``.
        SourceError: the output holds earlier results (without ``overwrite``).
    """
    source, output = Path(source), Path(output)
    if detections not in ('model', 'det'):
        raise ConfigError(f'--detections {detections!r}: model or det')
    if detections == 'model' and detector is None:
        raise ConfigError('track: give --model, or --detections det for MOTChallenge '
                          'sequences with det/det.txt')
    summary = TrackSummary()
    if source.is_dir() and (is_sequence(source) or any(
            is_sequence(p) for p in source.iterdir() if p.is_dir())):
        if output.is_dir() and any(output.iterdir()) and not overwrite:
            raise SourceError(f'--output {output}: not empty (earlier results?); pass '
                              '--overwrite to replace the whole folder')
        with staged_folder(output) as staged:
            for info in find_sequences(source):
                if detections == 'det':
                    frames = read_detections(info.folder / 'det' / 'det.txt', info)
                else:
                    frames = detect_sequence(detector, info, batch, progress, summary.failed)
                rows = track_frames(frames, config)
                write_results(staged / f'{info.folder.name}.txt', rows)
                if save_detections:
                    atomic_write_text(staged / 'det' / f'{info.folder.name}.txt',
                                      format_detections(frames))
                summary.results.append(str(output / f'{info.folder.name}.txt'))
                summary.frames += len(frames)
                summary.tracks += len({r[1] for r in rows})
        return summary
    if detector is None:
        raise ConfigError(f'track {source}: a video or bag needs --model')
    kind = source_kind(source)
    if kind not in ('video', 'bag'):
        raise SourceError(f'{source}: track takes a MOTChallenge sequence (or a folder of '
                          'them), a video or a rosbag2')
    return _track_stream(source, output, detector, config, batch, progress, overwrite,
                         runner_options or {}, summary)


def _track_stream(source: Path, output: Path, detector: Any, config: TrackerConfig | None,
                  batch: int, progress: bool, overwrite: bool, options: dict[str, Any],
                  summary: TrackSummary) -> TrackSummary:
    """Video or bag through the offline runner, with track ids."""
    trackers = CameraTrackers(config)
    rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    frames: dict[str, int] = defaultdict(int)

    def track(frame: Any, det: Any) -> list[str]:
        name = frame.topic or source.stem
        frames[name] += 1
        stamp = frame.stamp_ns if frame.stamp_ns is not None else int(frame.index * 1e9 / 30)
        ids = trackers.assign(name, det.boxes, det.scores, det.class_ids, stamp)
        boxes = trackers.tracker(name).filtered_boxes  # the detections' unless kalman_boxes
        for ident, box, score in zip(ids, boxes.tolist(),
                                     np.asarray(det.scores).tolist()):
            if ident:
                rows[name].append((frames[name], int(ident), *box, float(score)))
        return ids

    runner = OfflineRunner(detector, output, batch=batch, progress=progress,
                           overwrite=overwrite, track=track, **options)
    run = runner.run(source)
    for name in sorted(frames):
        target = output / f'{_topic_file(name) if name.startswith("/") else name}.txt'
        write_results(target, rows[name])
        summary.results.append(str(target))
        summary.tracks += len({r[1] for r in rows[name]})
    summary.frames = run.processed
    summary.failed = list(run.failures)
    summary.outputs = list(run.outputs)
    return summary
