"""Per-stage latency (``darknet53 bench``) of the pipeline against an OpenCV DNN baseline.

For every model (FP32 / INT8 Q/DQ ONNX, any input size) and batch size, the stages
``preprocess``, ``infer`` and ``postprocess`` are timed separately on 640x480 synthetic robot
camera frames; figures are medians / p90 / p99 in milliseconds per batch and frames per
second. In the same run the baseline users would otherwise write is measured on the same
model: OpenCV DNN with ``cv2.dnn.blobFromImage`` (plain resize) and ``cv2.dnn.NMSBoxes``;
the bare ``InferenceSession.run`` is timed too, so the pipeline's inference overhead is a
ratio against it. Figures are printed, never asserted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import json
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.fileio import atomic_path, atomic_write_text
from darknet53_ros.inference.detector import Detector
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.onnx_export import export_onnx
from darknet53_ros.model.weights import random_weights, read_weights
from darknet53_ros.optimize.quantize import quantize_model
from darknet53_ros.tools.demo import demo_model_files
from darknet53_ros.training.synthetic import generate_scene


@dataclass
class Timing:
    """Latency samples of one stage, in milliseconds."""

    samples: list[float] = field(default_factory=list)

    def stat(self, q: float) -> float:
        """The ``q`` percentile (50 = median)."""
        return float(np.percentile(self.samples, q)) if self.samples else float('nan')

    @property
    def median(self) -> float:
        """Median in ms."""
        return self.stat(50)


def time_call(fn: Callable[[], Any], iterations: int, warmup: int) -> tuple[Timing, Any]:
    """Call ``fn`` ``warmup`` + ``iterations`` times; returns the timing and last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    timing = Timing()
    for _ in range(iterations):
        start = time.perf_counter()
        result = fn()
        timing.samples.append((time.perf_counter() - start) * 1e3)
    return timing, result


@dataclass
class BenchRow:
    """One model x batch measurement."""

    model: str
    precision: str
    width: int
    height: int
    batch: int
    stages: dict[str, Timing]
    baseline: dict[str, Timing] | None = None

    def total(self, stages: dict[str, Timing]) -> float:
        """Median per batch of pre + infer + post, in ms."""
        return sum(stages[s].median for s in ('preprocess', 'infer', 'postprocess'))

    def fps(self, stages: dict[str, Timing]) -> float:
        """Frames per second from the stage medians."""
        return 1e3 * self.batch / self.total(stages)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with median/p90/p99 per stage."""
        def pack(stages: dict[str, Timing]) -> dict[str, Any]:
            return {name: {'median': t.median, 'p90': t.stat(90), 'p99': t.stat(99)}
                    for name, t in stages.items()}
        out = {'model': self.model, 'precision': self.precision, 'width': self.width,
               'height': self.height, 'batch': self.batch, 'stages_ms': pack(self.stages),
               'fps': self.fps(self.stages)}
        if self.baseline:
            out['baseline_ms'] = pack(self.baseline)
            out['baseline_fps'] = self.fps(self.baseline)
        return out


def bench_frames(count: int, seed: int = 99, width: int = 640, height: int = 480
                 ) -> list[np.ndarray]:
    """Synthetic 640x480 robot-camera frames."""
    return [generate_scene(seed, i, width, height)[0] for i in range(count)]


def precision_of(model: Path) -> str:
    """``'fp32'``, or for a Q/DQ model ``'int8'`` (TensorRT layout) / ``'int8-ort'``."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    if not any(n.op_type == 'QuantizeLinear' for n in proto.graph.node):
        return 'fp32'
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        target = json.loads(meta.get('quantization', '{}')).get('target')
    except (ValueError, AttributeError):
        target = None
    return 'int8-ort' if target == 'onnxruntime' else 'int8'


def _opencv_baseline(model: Path, frames: list[np.ndarray], width: int, height: int,
                     conf: float, nms: float, iterations: int, warmup: int
                     ) -> dict[str, Timing] | None:
    """What users write with OpenCV DNN: blobFromImages, forward, NMSBoxes per image."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(model))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    except cv2.error:
        return None

    def pre() -> np.ndarray:
        return cv2.dnn.blobFromImages(frames, 1 / 255.0, (width, height), swapRB=True,
                                      crop=False)

    blob = pre()

    def infer() -> list[np.ndarray]:
        net.setInput(blob)
        return [np.asarray(out) for out in net.forward(['boxes', 'scores'])]

    def post(outputs: list[np.ndarray]) -> list[Any]:
        boxes, scores = outputs
        results = []
        for image, b, s in zip(frames, boxes, scores):
            class_ids = s.argmax(axis=1)
            confs = s.max(axis=1)
            keep = confs >= conf
            xywh = b[keep].copy()
            xywh[:, 2:] -= xywh[:, :2]
            sx, sy = image.shape[1] / width, image.shape[0] / height
            xywh *= np.array([sx, sy, sx, sy], np.float32)
            idx = cv2.dnn.NMSBoxes(xywh.tolist(), confs[keep].tolist(), conf, nms)
            results.append((xywh[np.asarray(idx, int).ravel()], class_ids[keep]))
        return results

    try:
        t_pre, _ = time_call(pre, iterations, warmup)
        t_inf, outputs = time_call(infer, iterations, warmup)
    except cv2.error:
        return None
    t_post, _ = time_call(lambda: post(outputs), iterations, warmup)
    return {'preprocess': t_pre, 'infer': t_inf, 'postprocess': t_post}


def bench_model(model: Path, batch: int, frames: list[np.ndarray], iterations: int = 20,
                warmup: int = 3, baseline: bool = True, threads: int = 0) -> BenchRow:
    """Time the pipeline stages (and the baseline) for one model and batch size."""
    frames = frames[:batch]
    if len(frames) < batch:
        raise ConfigError(f'need {batch} frames, got {len(frames)}')
    options: dict[str, Any] = {'intra_op_threads': threads} if threads else {}
    with Detector.from_model(model, **options) as detector:
        t_pre, (tensor, transforms) = time_call(lambda: detector.preprocess(frames),
                                                iterations, warmup)
        t_inf, (boxes, scores) = time_call(lambda: detector.infer(tensor), iterations, warmup)
        t_post, _ = time_call(lambda: detector.postprocess(boxes, scores, transforms),
                              iterations, warmup)
        stages = {'preprocess': t_pre, 'infer': t_inf, 'postprocess': t_post}
        session = getattr(detector.backend, 'session', None)  # ONNX Runtime backend only
        if session is not None:
            feed = {session.get_inputs()[0].name: tensor}
            stages['bare_run'], _ = time_call(lambda: session.run(None, feed), iterations,
                                              warmup)
        width, height = detector.width, detector.height
        conf, nms = detector.config.conf_threshold, detector.config.nms_threshold
    base = (_opencv_baseline(model, frames, width, height, conf, nms, iterations, warmup)
            if baseline else None)
    return BenchRow(model.name, precision_of(model), width, height, batch, stages, base)


def format_rows(rows: Sequence[BenchRow]) -> str:
    """The results table and the ratios against the baseline."""
    lines = ['ms per batch, median / p90 / p99 (640x480 frames)',
             f'{"model":<24}{"prec":<9}{"size":>9}{"B":>3}  {"preprocess":>20}'
             f'{"infer":>22}{"postprocess":>20}{"fps":>8}']
    for row in rows:
        cells = ''.join(
            f'{row.stages[s].median:8.2f}/{row.stages[s].stat(90):.2f}/'
            f'{row.stages[s].stat(99):.2f}'.rjust(w)
            for s, w in (('preprocess', 20), ('infer', 22), ('postprocess', 20)))
        lines.append(f'{row.model[:23]:<24}{row.precision:<9}'
                     f'{f"{row.width}x{row.height}":>9}{row.batch:>3}  {cells}'
                     f'{row.fps(row.stages):8.1f}')
    lines.append('')
    lines.append('ratios (baseline = OpenCV DNN blobFromImage + forward + NMSBoxes, same model)')
    for row in rows:
        pp = (row.stages['preprocess'].median + row.stages['postprocess'].median) / row.batch
        text = (f'{row.model[:23]:<24}{row.precision:<9}{f"{row.width}x{row.height}":>9}'
                f'{row.batch:>3}  pre+post {pp:.2f} ms/frame')
        if row.baseline:
            base_pp = (row.baseline['preprocess'].median
                       + row.baseline['postprocess'].median) / row.batch
            text += (f', baseline {base_pp:.2f} ms/frame: {base_pp / pp:.2f}x faster; '
                     f'end-to-end {row.total(row.baseline) / row.total(row.stages):.2f}x')
        if 'bare_run' in row.stages:
            overhead = row.stages['infer'].median / row.stages['bare_run'].median - 1.0
            text += f'; infer overhead vs bare session.run {overhead:+.1%}'
        lines.append(text)
    by_key = {(r.precision, r.width, r.height, r.batch): r for r in rows}
    for (precision, w, h, b), row in sorted(by_key.items()):
        if not precision.startswith('int8'):
            continue
        ref = by_key.get(('fp32', w, h, b))
        if ref:
            lines.append(f'{precision.upper()} vs FP32 at {w}x{h} batch {b}: inference '
                         'speed-up '
                         f'{ref.stages["infer"].median / row.stages["infer"].median:.2f}x')
    return '\n'.join(lines)


def plot_rows(rows: Sequence[BenchRow], path: Path) -> None:
    """Latency (median ms per frame) against input size, one line per precision/batch."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple[str, int], list[BenchRow]] = {}
    for row in rows:
        groups.setdefault((row.precision, row.batch), []).append(row)
    for (precision, batch), group in sorted(groups.items()):
        group.sort(key=lambda r: r.width * r.height)
        ax.plot([f'{r.width}x{r.height}' for r in group],
                [r.total(r.stages) / r.batch for r in group], marker='o',
                label=f'{precision}, batch {batch}')
        if group[0].baseline:
            ax.plot([f'{r.width}x{r.height}' for r in group],
                    [r.total(r.baseline) / r.batch for r in group if r.baseline],
                    marker='x', linestyle='--', label=f'OpenCV DNN, batch {batch}')
    ax.set_xlabel('input size')
    ax.set_ylabel('ms per frame (pre + infer + post)')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix='.png') as tmp:
        fig.savefig(tmp, dpi=100, format='png')
    plt.close(fig)


def write_json(rows: Sequence[BenchRow], path: Path) -> None:
    """Write the measurements as JSON (atomically)."""
    atomic_write_text(path, json.dumps([r.as_dict() for r in rows], indent=1))


def quantized_variants(model: Path, folder: Path) -> list[Path]:
    """Both Q/DQ layouts of ``model`` (TensorRT, ONNX Runtime) in ``folder``, calibrated on
    synthetic frames (not the benchmark's)."""
    calib = bench_frames(16, seed=7)
    out = []
    for target in ('tensorrt', 'onnxruntime'):
        path = folder / f'{model.stem}.int8-{target}.onnx'
        quantize_model(model, calib, path, target=target, progress=False)
        out.append(path)
    return out


def exported_models(folder: Path, sizes: Sequence[tuple[int, int]], cfg: Path | None = None,
                    weights: Path | None = None, int8: bool = False) -> list[Path]:
    """Export ``cfg`` (default: the bundled demo model; random weights when ``weights`` is
    None with a ``cfg``) at every size into ``folder``; with ``int8`` also both Q/DQ
    variants of each."""
    if not sizes:
        return []
    if cfg is None:
        cfg, weights, _ = demo_model_files()
    models = []
    for width, height in sizes:
        network = load_cfg(cfg, width, height)
        array = read_weights(weights, network) if weights else random_weights(network)
        path = folder / f'{cfg.stem}-{width}x{height}.onnx'
        export_onnx(network, array, path)
        models.append(path)
        if int8:
            models += quantized_variants(path, folder)
    return models


def run_bench(models: Sequence[Path], batches: Sequence[int],
              sizes: Sequence[tuple[int, int]] = (), cfg: Path | None = None,
              weights: Path | None = None, int8: bool = False,
              iterations: int = 20, warmup: int = 3, baseline: bool = True, threads: int = 0,
              log: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Time every model (``models`` as they are, plus ``cfg`` exported at ``sizes``, see
    :func:`exported_models`) at every batch size; ``log`` hears of each finished timing.

    Raises:
        ConfigError: a batch size or ``iterations`` below 1, or nothing to time.
    """
    if not batches or min(batches) < 1 or iterations < 1:
        raise ConfigError('--batches and --iterations must be >= 1')
    frames = bench_frames(max(batches))
    rows = []
    with tempfile.TemporaryDirectory(prefix='darknet53-bench-') as tmp:
        every = list(models) + exported_models(Path(tmp), sizes, cfg, weights, int8)
        if not every:
            raise ConfigError('nothing to time: give --model, or --cfg / the demo model with '
                              '--sizes')
        for model in every:
            for batch in batches:
                rows.append(bench_model(model, batch, frames, iterations, warmup, baseline,
                                        threads))
                if log is not None:
                    log(f'timed {model.name} batch {batch}')
    return rows
