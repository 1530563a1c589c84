"""``darknet53 bench --cameras 1,2,4,8``: the shared batched node core against one pipeline per
camera, driven by synthetic cameras.

For each camera count ``N`` two designs run for ``duration`` seconds on the same model, each in
a fresh process (so CPU time and peak RSS are its own): **shared**, one
:class:`~darknet53_ros.ros.node_core.NodeCore` with ``N`` cameras, one ``Detector`` batching up
to ``N`` frames; **per-camera**, ``N`` cores with one camera and one ``Detector`` each (the
design of the other ROS detection nodes). A feeder thread offers every camera a 640x480
``bgr8`` ``sensor_msgs/Image`` stamped with the wall clock at ``rate`` Hz. Reported per design
and ``N``: delivered detection messages per second per camera, stamp-to-publish latency p50 /
p99, frames dropped (superseded or stale) as a share of those offered, CPU seconds, detections
per CPU second and peak RSS.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
import multiprocessing
from pathlib import Path
import resource
import threading
import time
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.io.messages import MessageTypes, header_msg, image_msg
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import NodeParams
from darknet53_ros.tools.bench import save_png

DESIGNS = ('shared', 'per-camera')


@dataclass(frozen=True)
class CameraRun:
    """One design at one camera count."""

    design: str
    cameras: int
    rate_hz: float
    duration_s: float
    delivered_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    dropped_pct: float
    cpu_s: float
    detections_per_cpu_s: float
    rss_mib: float


class _Collect(Outputs):
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.count = 0
        self._lock = threading.Lock()

    def detections(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        with self._lock:
            self.count += 1
            self.latencies.append((stamp_ns - stamp) * 1e-6)


def _run(design: str, count: int, model: str, rate: float, duration: float) -> CameraRun:
    """One measurement (in a child process)."""
    types = MessageTypes.from_rosbags('humble')
    names = [f'cam{i}' for i in range(count)]
    groups = [names] if design == 'shared' else [[n] for n in names]
    outputs = _Collect()
    cores = []
    for group in groups:
        params = NodeParams.from_dict({'model': model, 'cameras': group,
                                       'max_batch': len(group), 'publish_annotated': False})
        detector, path = load_detector(params, share_dir=False)
        core = NodeCore(params, detector, types, outputs, model_path=path).start()
        cores.append((core, group))
    rng = np.random.default_rng(0)
    frames = [np.ascontiguousarray(np.repeat(np.repeat(
        rng.integers(0, 256, (60, 80, 3), np.uint8), 8, 0), 8, 1)) for _ in names]
    offered = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < duration:
        for core, group in cores:
            for name in group:
                msg = image_msg(types, header_msg(types, time.time_ns(), name),
                                frames[names.index(name)])
                core.submit(name, msg)
                offered += 1
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - start
    for core, _ in cores:
        core.shutdown()
    cpu = time.process_time() - cpu0
    lat = np.asarray(outputs.latencies or [float('nan')])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return CameraRun(design, count, rate, round(elapsed, 2), outputs.count / elapsed / count,
                     float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                     100.0 * (offered - outputs.count) / max(offered, 1), cpu,
                     outputs.count / cpu if cpu > 0 else float('nan'), rss)


def bench_cameras(model: str | Path, counts: Sequence[int], rate: float = 15.0,
                  duration: float = 5.0) -> list[CameraRun]:
    """Both designs at every camera count, each in a fresh process (see the module text).

    Raises:
        ConfigError: a count below 1, or a non-positive rate or duration.
    """
    if not counts or min(counts) < 1 or rate <= 0 or duration <= 0:
        raise ConfigError('--cameras counts must be >= 1, --rate and --duration > 0')
    context = multiprocessing.get_context('spawn')
    runs = []
    for count in counts:
        for design in DESIGNS:
            with context.Pool(1) as pool:
                runs.append(pool.apply(_run, (design, count, str(model), rate, duration)))
    return runs


def format_cameras(runs: Sequence[CameraRun]) -> str:
    """The side-by-side table."""
    lines = [f'{"cams":>4} {"design":<11}{"det/s/cam":>10}{"p50 ms":>9}{"p99 ms":>9}'
             f'{"dropped":>9}{"CPU s":>8}{"det/CPU-s":>10}{"RSS MiB":>9}']
    for r in runs:
        lines.append(f'{r.cameras:>4} {r.design:<11}{r.delivered_hz:10.2f}'
                     f'{r.latency_p50_ms:9.1f}{r.latency_p99_ms:9.1f}{r.dropped_pct:8.1f}%'
                     f'{r.cpu_s:8.1f}{r.detections_per_cpu_s:10.1f}{r.rss_mib:9.0f}')
    return '\n'.join(lines)


def plot_cameras(runs: Sequence[CameraRun], path: Path) -> None:
    """Delivered detections/s per camera (from zero up to the camera rate), p50 latency and
    detections per CPU-second against the camera count."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = (('delivered_hz', 'delivered detections/s per camera'),
              ('latency_p50_ms', 'stamp-to-publish latency p50 (ms)'),
              ('detections_per_cpu_s', 'detections per CPU-second'))
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.6))
    for design, marker in zip(DESIGNS, 'os'):
        mine = [r for r in runs if r.design == design]
        for ax, (field, _) in zip(axes, panels):
            ax.plot([r.cameras for r in mine], [getattr(r, field) for r in mine],
                    marker=marker, label=design)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xlabel('cameras')
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)  # a 1 % gap must not look like a cliff
        ax.grid(True, alpha=0.3)
        ax.legend()
    if runs:
        axes[0].set_ylim(0, max(r.rate_hz for r in runs) * 1.1)
    fig.tight_layout()
    save_png(fig, path)


def runs_as_dicts(runs: Sequence[CameraRun]) -> list[dict[str, Any]]:
    """JSON-ready rows."""
    return [asdict(r) for r in runs]
