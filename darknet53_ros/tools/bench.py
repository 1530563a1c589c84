"""Per-stage latency (``darknet53 bench``) of the pipeline against an OpenCV DNN baseline.

For every model (FP32 / INT8 Q/DQ ONNX, any input size) and batch size, the stages
``preprocess``, ``infer`` and ``postprocess`` are timed on 640x480 synthetic robot camera
frames together with the baseline users would otherwise write on the same model (OpenCV DNN:
the letterbox canvas through ``cv2.dnn.blobFromImage``, ``forward``, per-class
``NMSBoxesBatched`` on the letterboxed boxes mapped back, results applied; see
:mod:`darknet53_ros.tools.baselines`) and the bare ``InferenceSession.run``: all in the same
rounds (:func:`darknet53_ros.tools.timing.paired_timing`), so every ratio is the median (p10,
p90) of per-round ratios. Each pipeline runs as a block in its own order (pre-process, infer,
post-process, as in use: every stage starts with the caches and thread pools its predecessor
left), and the blocks (ours, the bare run, the baseline) alternate round by round, each after
a short idle gap (a camera frame arriving at an idle node; without it the OpenCV baseline ran
against ONNX Runtime's still-spinning workers in every other round, and its end-to-end ratio
moved by +-16 % between runs). Figures are printed, never asserted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
import json
from pathlib import Path
import tempfile
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.fileio import atomic_path, atomic_write_text
from darknet53_ros.inference.detector import Detector
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.weights import random_weights, read_weights
from darknet53_ros.optimize.quantize import quantize_model
from darknet53_ros.tools import baselines
from darknet53_ros.tools.demo import demo_model_files
from darknet53_ros.tools.timing import Paired, Ratio, Timing, paired_timing
from darknet53_ros.training.synthetic import generate_scene

_OURS = ('preprocess', 'postprocess')
_BASE = ('base_preprocess', 'base_postprocess')


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
    ratios: dict[str, Ratio] = field(default_factory=dict)
    load: str = ''
    agree: bool | None = None

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
            out['baseline_detections_agree'] = self.agree
        out['ratios'] = {k: {'median': r.median, 'p10': r.p10, 'p90': r.p90}
                         for k, r in self.ratios.items()}
        out['load'] = self.load
        return out


#: Idle seconds before every timed block of :func:`bench_model` (see the module docstring).
BLOCK_GAP_S = 0.005


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
                     conf: float, nms: float) -> dict[str, Callable[[], Any]] | None:
    """What users write with OpenCV DNN, as stage callables (``None``: OpenCV cannot load
    the model): letterbox blobs, forward, per-class NMS per image with results applied."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(model))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    except cv2.error:
        return None
    state: dict[str, Any] = {}

    def pre() -> np.ndarray:
        blobs, transforms = zip(*(baselines.opencv_pre(f, width, height) for f in frames))
        state['transforms'] = transforms
        state['blob'] = np.concatenate(blobs)
        return state['blob']

    def infer() -> list[np.ndarray]:
        net.setInput(state['blob'])
        state['outputs'] = [np.asarray(out) for out in net.forward(['boxes', 'scores'])]
        return state['outputs']

    def post() -> list[baselines.Found]:
        boxes, scores = state['outputs']
        return [baselines.opencv_post(b, s, t, conf, nms)
                for b, s, t in zip(boxes, scores, state['transforms'])]

    try:
        pre()
        infer()
    except cv2.error:
        return None
    return {'base_preprocess': pre, 'base_infer': infer, 'base_postprocess': post}


def _ratios(paired: Paired, baseline: bool) -> dict[str, Ratio]:
    out = {}
    if 'bare_run' in paired.timings:
        out['infer_vs_bare_run'] = paired.ratio('infer', 'bare_run')
    if baseline:
        out['preprocess'] = paired.ratio('base_preprocess', 'preprocess')
        out['postprocess'] = paired.ratio('base_postprocess', 'postprocess')
        out['pre+post'] = paired.ratio(_BASE, _OURS)
        out['end_to_end'] = paired.ratio(_BASE + ('base_infer',), _OURS + ('infer',))
    return out


def bench_model(model: Path, batch: int, frames: list[np.ndarray], iterations: int = 20,
                warmup: int = 3, baseline: bool = True, threads: int = 0) -> BenchRow:
    """Time the pipeline stages, the baseline and the bare session in the same rounds."""
    frames = frames[:batch]
    if len(frames) < batch:
        raise ConfigError(f'need {batch} frames, got {len(frames)}')
    options: dict[str, Any] = {'intra_op_threads': threads} if threads else {}
    with Detector.from_model(model, **options) as detector:
        tensor, transforms = detector.preprocess(frames)
        tensor = tensor.copy()
        boxes, scores = detector.infer(tensor)
        functions: dict[str, Callable[[], Any]] = {
            'preprocess': lambda: detector.preprocess(frames),
            'infer': lambda: detector.infer(tensor),
            'postprocess': lambda: detector.postprocess(boxes, scores, transforms)}
        session = getattr(detector.backend, 'session', None)  # ONNX Runtime backend only
        if session is not None:
            feed = {session.get_inputs()[0].name: tensor}
            functions['bare_run'] = lambda: session.run(None, feed)
        conf, nms = detector.config.conf_threshold, detector.config.nms_threshold
        base = (_opencv_baseline(model, frames, detector.width, detector.height, conf, nms)
                if baseline else None)
        blocks: list[tuple[str, ...]] = [('preprocess', 'infer', 'postprocess')]
        if 'bare_run' in functions:
            blocks.append(('bare_run',))
        if base is not None:
            blocks.append(('base_preprocess', 'base_infer', 'base_postprocess'))
        paired = paired_timing({**functions, **(base or {})}, iterations, warmup, blocks,
                               BLOCK_GAP_S)
        agree = None
        if base is not None:
            ours = [baselines.Found(d.boxes, d.scores, d.class_ids)
                    for d in paired.results['postprocess']]
            agree = all(baselines.same_detections(a, b, box_tol=2.0, score_tol=1e-2)
                        for a, b in zip(ours, paired.results['base_postprocess']))
        width, height = detector.width, detector.height
    stages = {k: paired.timings[k] for k in functions}
    base_stages = ({k[5:]: paired.timings[k] for k in base} if base else None)
    return BenchRow(model.name, precision_of(model), width, height, batch, stages, base_stages,
                    _ratios(paired, base is not None), paired.load_text(), agree)


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
    lines.append('paired ratios, median (p10, p90) of per-round ratios; baseline = OpenCV DNN '
                 '(letterbox blobFromImage + forward + per-class NMSBoxesBatched), same model')
    for row in rows:
        pp = (row.stages['preprocess'].median + row.stages['postprocess'].median) / row.batch
        text = (f'{row.model[:23]:<24}{row.precision:<9}{f"{row.width}x{row.height}":>9}'
                f'{row.batch:>3}  pre+post {pp:.2f} ms/frame')
        for key, label in (('preprocess', 'preprocess'), ('postprocess', 'postprocess'),
                           ('pre+post', 'pre+post'), ('end_to_end', 'end-to-end')):
            if key in row.ratios:
                text += f'\n    ours vs baseline {label}: {row.ratios[key]} faster'
        if row.agree is not None:
            text += f'\n    baseline detections agree with ours: {"yes" if row.agree else "NO"}'
        if 'infer_vs_bare_run' in row.ratios:
            text += f'\n    infer / bare session.run: {row.ratios["infer_vs_bare_run"]}'
        if 'int8_vs_fp32' in row.ratios:
            text += (f'\n    {row.precision.upper()} inference vs FP32 (paired): '
                     f'{row.ratios["int8_vs_fp32"]} faster')
        lines.append(text)
    if rows and rows[-1].load:
        lines.append(rows[-1].load + ' (a shared machine: compare ratios, not absolute times)')
    return '\n'.join(lines)


def compare_int8(models: Sequence[Path], batch: int, iterations: int, warmup: int,
                 threads: int = 0) -> dict[str, Ratio]:
    """FP32 / INT8 inference speed-up of Q/DQ variants (model name -> ratio), paired: every
    model's bare ``session.run`` in the same rounds. ``models[0]`` is the FP32 model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    sessions = {m.name: ort.InferenceSession(str(m), options,
                                             providers=['CPUExecutionProvider'])
                for m in models}
    first = sessions[models[0].name]
    _, c, h, w = first.get_inputs()[0].shape
    tensor = np.random.default_rng(0).random((batch, c, h, w), np.float32)
    feed = {first.get_inputs()[0].name: tensor}
    functions: dict[str, Callable[[], Any]] = {
        name: partial(session.run, None, feed) for name, session in sessions.items()}
    paired = paired_timing(functions, iterations, warmup)
    return {m.name: paired.ratio(models[0].name, m.name) for m in models[1:]}


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
    save_png(fig, path)


def save_png(fig: Any, path: Path) -> None:
    """Lay out, write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

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
    from darknet53_ros.model.onnx_export import export_onnx  # onnx: no rosdep key

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
        if int8:
            _pair_int8(rows, every[len(models):], batches, iterations, warmup, threads)
    return rows


def _pair_int8(rows: list[BenchRow], exported: list[Path], batches: Sequence[int],
               iterations: int, warmup: int, threads: int) -> None:
    """Add the paired INT8/FP32 ratio to the INT8 rows (exported as FP32, then its variants)."""
    for start in range(0, len(exported), 3):
        group = exported[start:start + 3]
        for batch in batches:
            ratios = compare_int8(group, batch, iterations, warmup, threads)
            for row in rows:
                if row.batch == batch and row.model in ratios:
                    row.ratios['int8_vs_fp32'] = ratios[row.model]
