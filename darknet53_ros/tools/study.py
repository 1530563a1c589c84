"""The speed/accuracy trade-off study: input size x precision x pruning.

For one model (cfg + weights) and one dataset (``dataset.yaml`` from ``darknet53 synth`` or
the same layout), every grid point is exported to ONNX, optionally quantised to INT8 Q/DQ
(calibrated on the dataset's *train* split, evaluated on its *val* split, so the two sets
are disjoint), evaluated (COCO mAP@0.5 and mAP@0.5:0.95 through the same Detector) and timed
(ONNX Runtime on this CPU: pre + infer + post per 640x480 frame, median and p90). INT8
uses the ONNX Runtime Q/DQ layout by default (``int8_target``), the one this CPU runs fast;
the TensorRT layout shares its calibration and differs only in where outputs are requantised.
Pruned variants are made as ``darknet53 prune`` makes them and fine-tuned as ``darknet53
train`` does (:func:`darknet53_ros.training.trainer.train`) before they are measured. Output:
``study.json``, ``study.md`` (a Markdown table) and ``pareto.png`` (latency vs mAP@0.5, the
Pareto front marked).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
import json
import logging
from pathlib import Path
import time
from typing import Any, Literal

import numpy as np

from darknet53_ros.errors import ConfigError, Darknet53Error
from darknet53_ros.fileio import atomic_path, atomic_write_text
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.dataset_formats import load_split
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.names import read_names
from darknet53_ros.model.onnx_export import export_onnx
from darknet53_ros.model.prune import prune
from darknet53_ros.model.weights import read_weights, write_weights
from darknet53_ros.optimize.quantize import quantize_model
from darknet53_ros.tools.bench import bench_frames
from darknet53_ros.tools.evaluate import evaluate_model
from darknet53_ros.training.options import TrainOptions

_LOG = logging.getLogger(__name__)

DEFAULT_SIZES = ((256, 256), (320, 320), (416, 416), (512, 512), (608, 608), (416, 256))
DEFAULT_PRUNE = (0.0, 0.3, 0.5)


@dataclass
class StudyPoint:
    """One measured grid point."""

    prune_ratio: float
    width: int
    height: int
    precision: str
    params: int
    bflops: float
    map50: float
    map: float
    latency_ms: float
    latency_p90_ms: float
    infer_ms: float
    model: str = ''
    """The ONNX model measured, relative to the study folder."""

    @property
    def label(self) -> str:
        """Short name for plots and tables."""
        return (f'{self.width}x{self.height} {self.precision}'
                f'{f" p{round(self.prune_ratio * 100)}" if self.prune_ratio else ""}')


def pareto_front(points: Sequence[StudyPoint]) -> list[StudyPoint]:
    """Points no other point beats on both latency (lower) and mAP@0.5 (higher)."""
    front = []
    for p in points:
        dominated = any(q.latency_ms <= p.latency_ms and q.map50 >= p.map50
                        and (q.latency_ms < p.latency_ms or q.map50 > p.map50) for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p.latency_ms)


def markdown_table(points: Sequence[StudyPoint], baseline: StudyPoint | None = None) -> str:
    """The study as a Markdown table; speed-up and mAP change relative to ``baseline``."""
    front = {id(p) for p in pareto_front(points)}
    rows = ['| input | precision | pruned | params | BFLOPs | mAP@0.5 | mAP@0.5:0.95 | '
            'latency median / p90 (ms) | speed-up | ΔmAP@0.5 | Pareto |',
            '|---|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|']
    for p in sorted(points, key=lambda p: (p.prune_ratio, p.width * p.height, p.precision)):
        speed = f'{baseline.latency_ms / p.latency_ms:.2f}x' if baseline else ''
        delta = f'{(p.map50 - baseline.map50) * 100:+.1f}' if baseline else ''
        rows.append(
            f'| {p.width}x{p.height} | {p.precision.upper()} | {p.prune_ratio:.0%} | '
            f'{p.params / 1e6:.2f}M | {p.bflops:.2f} | {p.map50:.3f} | {p.map:.3f} | '
            f'{p.latency_ms:.1f} / {p.latency_p90_ms:.1f} | {speed} | {delta} | '
            f'{"★" if id(p) in front else ""} |')
    return '\n'.join(rows) + '\n'


def plot_pareto(points: Sequence[StudyPoint], path: Path) -> None:
    """Latency vs mAP@0.5 scatter, one marker per precision, the Pareto front joined."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {'fp32': 'o', 'int8': 's', 'int8-ort': 'D'}
    for ratio in sorted({p.prune_ratio for p in points}):
        for precision, marker in styles.items():
            group = [p for p in points if p.prune_ratio == ratio and p.precision == precision]
            if group:
                ax.scatter([p.latency_ms for p in group], [p.map50 for p in group],
                           marker=marker, label=f'{precision.upper()}, pruned {ratio:.0%}')
    front = pareto_front(points)
    ax.plot([p.latency_ms for p in front], [p.map50 for p in front], 'k--', lw=1,
            label='Pareto front')
    for p in front:
        ax.annotate(p.label, (p.latency_ms, p.map50), fontsize=7, xytext=(3, 3),
                    textcoords='offset points')
    ax.set_xlabel('latency per 640x480 frame, ms (ONNX Runtime, 2-core CPU)')
    ax.set_ylabel('mAP@0.5')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix='.png') as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


def time_points(points: Sequence[StudyPoint], models: Sequence[Path], iterations: int = 30,
                per_round: int = 6, warmup: int = 2) -> None:
    """Time every model round-robin and store median/p90 latency and infer time in ``points``.

    One 640x480 frame, pre + infer + post per sample. The models are timed in turns of
    ``per_round`` runs (``iterations`` in all), so a slow spell of a shared machine lands on
    every point alike instead of on whichever points happened to run then. Only the model
    being timed is loaded (idle ONNX Runtime sessions would spin their threads against it).
    """
    frames = bench_frames(1)
    totals: list[list[float]] = [[] for _ in models]
    infers: list[list[float]] = [[] for _ in models]
    rounds = max(1, -(-iterations // per_round))
    for index in range(rounds):
        order = range(len(models)) if index % 2 == 0 else reversed(range(len(models)))
        for k in order:
            with Detector.from_model(models[k]) as detector:
                for _ in range(warmup):
                    detector.detect_batch(frames)
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    tensor, transforms = detector.preprocess(frames)
                    t1 = time.perf_counter()
                    boxes, scores = detector.infer(tensor)
                    t2 = time.perf_counter()
                    detector.postprocess(boxes, scores, transforms)
                    t3 = time.perf_counter()
                    totals[k].append((t3 - t0) * 1e3)
                    infers[k].append((t2 - t1) * 1e3)
    for point, total, infer in zip(points, totals, infers):
        point.latency_ms = float(np.median(total))
        point.latency_p90_ms = float(np.percentile(total, 90))
        point.infer_ms = float(np.median(infer))


def _write_outputs(out: Path, payload: dict[str, Any], points: Sequence[StudyPoint]) -> None:
    baseline = next((p for p in points if not p.prune_ratio and p.precision == 'fp32'
                     and (p.width, p.height) == (416, 416)), points[0] if points else None)
    payload['points'] = [asdict(p) for p in points]
    atomic_write_text(out / 'study.json', json.dumps(payload, indent=1))
    atomic_write_text(out / 'study.md', markdown_table(points, baseline))
    plot_pareto(points, out / 'pareto.png')


def retime_study(out: Path, iterations: int = 30) -> list[StudyPoint]:
    """Re-time the models of an existing study folder (no re-evaluation); rewrite its outputs."""
    path = out / 'study.json'
    try:
        payload = json.loads(path.read_text())
        points = [StudyPoint(**p) for p in payload['points']]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f'{path}: not a study result ({exc})') from None
    models = [out / p.model for p in points]
    missing = [str(m) for p, m in zip(points, models) if not p.model or not m.is_file()]
    if missing:
        raise ConfigError(f'{out}: study models missing (run the study again): '
                          f'{", ".join(missing[:3])}')
    started = time.perf_counter()
    time_points(points, models, iterations)
    payload['timing_seconds'] = round(time.perf_counter() - started, 1)
    payload['timing_iterations'] = iterations
    _write_outputs(out, payload, points)
    return points


def finetune_model(cfg: Path, weights: Path, data: Path, epochs: int, out: Path,
                   template: TrainOptions | None = None) -> Path:
    """Fine-tune ``cfg`` from ``weights`` on ``data`` for ``epochs`` (``darknet53 train``'s
    defaults, or ``template``'s options) into ``out``; returns ``out``."""
    from darknet53_ros.training.trainer import train  # imports PyTorch

    base = template if template is not None else TrainOptions(cfg, data, out, epochs=epochs)
    opts = replace(base, cfg=cfg, data=data, weights=weights, output=out)
    try:
        result = train(opts, log=_LOG.info)
    except Darknet53Error as exc:
        raise ConfigError(f'fine-tuning {cfg} failed: {exc}') from exc
    _LOG.info('wrote %s and %s (%.0f s)', result.weights, result.cfg, result.seconds)
    return out


def _calibration_images(data: Path, count: int) -> list[Path]:
    images = [s.image for s in load_split(data, 'train').samples[:count]]
    if not images:
        raise ConfigError(f'{data}: the train split has no images for INT8 calibration')
    return images


def run_study(cfg: Path, weights: Path, data: Path, out: Path,
              sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
              prune_ratios: Sequence[float] = DEFAULT_PRUNE, int8: bool = True,
              finetune_epochs: int = 3, finetune_options: TrainOptions | None = None,
              calib_count: int = 64, iterations: int = 20, eval_limit: int | None = None,
              int8_target: Literal['onnxruntime', 'tensorrt'] = 'onnxruntime',
              finetune: Callable[..., Path] = finetune_model) -> list[StudyPoint]:
    """Run the grid; writes study.json, study.md and pareto.png into ``out``.

    Pruned variants are fine-tuned with ``finetune(cfg, weights, data, epochs, out,
    finetune_options)`` (default :func:`finetune_model`; ``finetune_options`` is a
    :class:`~darknet53_ros.training.options.TrainOptions` template).
    """
    out.mkdir(parents=True, exist_ok=True)
    work = out / 'models'
    work.mkdir(exist_ok=True)
    names_file = cfg.with_suffix('.names')
    names = read_names(names_file) if names_file.exists() else None
    calib = _calibration_images(data, calib_count) if int8 else []
    points: list[StudyPoint] = []
    models: list[Path] = []
    started = time.perf_counter()
    base_network = load_cfg(cfg)
    base_weights = read_weights(weights, base_network)
    for ratio in prune_ratios:
        if ratio:
            pruned = prune(base_network, base_weights, ratio)
            stem = work / f'pruned{round(ratio * 100)}'
            variant_cfg = stem.with_suffix('.cfg')
            atomic_write_text(variant_cfg, pruned.cfg_text)
            pruned_weights = stem.with_suffix('.pruned.weights')
            write_weights(pruned_weights, pruned.network, pruned.weights)
            variant_weights = (finetune(variant_cfg, pruned_weights, data, finetune_epochs,
                                        stem.with_suffix('.weights'), finetune_options)
                               if finetune_epochs > 0 else pruned_weights)
        else:
            variant_cfg, variant_weights = cfg, weights
        for width, height in sizes:
            network = load_cfg(variant_cfg, width, height)
            model = work / f'{variant_cfg.stem}-{width}x{height}.onnx'
            export_onnx(network, read_weights(variant_weights, network), model, names=names)
            variants = [('fp32', model)]
            if int8:
                int8_model = model.with_suffix('.int8.onnx')
                quantize_model(model, calib, int8_model, progress=False, target=int8_target,
                               report_path=int8_model.with_suffix('.calib.json'))
                variants.append(('int8', int8_model))
            for precision, path in variants:
                result = evaluate_model(path, data, split='val', limit=eval_limit)
                point = StudyPoint(ratio, width, height, precision, network.num_params,
                                   network.bflops, result.map50, result.map, 0.0, 0.0, 0.0,
                                   str(path.relative_to(out)))
                points.append(point)
                models.append(path)
                _LOG.info('%s: mAP@0.5 %.3f', point.label, point.map50)
    evaluated = time.perf_counter()
    time_points(points, models, iterations)
    payload: dict[str, Any] = {'cfg': str(cfg), 'weights': str(weights), 'data': str(data),
                               'seconds': round(time.perf_counter() - started, 1),
                               'timing_seconds': round(time.perf_counter() - evaluated, 1),
                               'timing_iterations': iterations}
    _write_outputs(out, payload, points)
    return points
