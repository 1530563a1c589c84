"""COCO-style detection evaluation (mAP@0.5 and mAP@0.5:0.95 with pycocotools).

Models are evaluated through the same :class:`darknet53_ros.inference.detector.Detector`
pipeline as inference (letterbox, backend, thresholding, per-class NMS, mapping back to source
pixels), so an ONNX FP32 model, its INT8 Q/DQ version and a TensorRT engine are measured
identically. The confidence threshold used for evaluation (0.001 by default, the usual mAP
setting: low enough that the precision-recall curve reaches high recall) is reported with the
figures.

The metrics (COCO conventions) are :mod:`darknet53_ros.training.metrics`; datasets of every
layout are read by :mod:`darknet53_ros.io.dataset_formats` and their ground truth is
:func:`darknet53_ros.io.coco.coco_ground_truth`, the same function training validation uses.

Calibration leakage: an INT8 model must not be evaluated on its calibration images. Given the
quantisation report (``--calib-report``), or when one is found beside a quantised model, the
pixel digests (:func:`darknet53_ros.optimize.calibration.image_digest`) of the evaluation images
are compared with the report's calibration digests; an overlap is an error unless allowed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import atomic_path
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.dataset import load_image
from darknet53_ros.io.dataset_formats import load_split
from darknet53_ros.optimize.calibration import image_digest
from darknet53_ros.progress import progress_bar
from darknet53_ros.training.metrics import (
    EvalResult,
    evaluate_detections,
    ground_truth_for_split,
)

_LOG = logging.getLogger(__name__)

DEFAULT_CONF = 0.001
"""Evaluation confidence threshold (COCO mAP convention)."""

DEFAULT_IOU = 0.6
"""NMS IoU threshold used for evaluation."""


def plot_pr_curve(result: EvalResult, path: str | os.PathLike[str], title: str = '') -> None:
    """Save the precision-recall curves at IoU 0.5 (per class and mean) as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    valid = []
    for k, name in enumerate(result.names):
        p = result.precision[:, k]
        if np.all(p < 0):
            continue
        valid.append(np.clip(p, 0, None))
        ax.plot(result.recall_points, np.clip(p, 0, None), lw=1,
                label=f'{name} AP50 {result.ap50.get(name, float("nan")):.3f}')
    if valid:
        ax.plot(result.recall_points, np.mean(valid, axis=0), 'k-', lw=2.5,
                label=f'all classes mAP@0.5 {result.map50:.3f}')
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower left', fontsize=8)
    ax.set_title(title or 'precision-recall, IoU 0.5')
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# calibration overlap


def load_calibration_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """``digest -> key`` of the calibration images listed in a quantisation report."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f'{path}: cannot read calibration report: {exc}') from None
    calib = data.get('calibration') if isinstance(data, dict) else None
    images = calib.get('images') if isinstance(calib, dict) else None
    if not isinstance(images, list):
        raise ConfigError(f'{path}: no calibration.images list (not a quantisation report?)')
    digests = {}
    for item in images:
        if isinstance(item, dict) and isinstance(item.get('sha256'), str):
            digests[item['sha256']] = str(item.get('key', '?'))
    return digests


def find_calibration_report(model: str | os.PathLike[str]) -> Path | None:
    """A quantisation report beside ``model`` (``<model>.json``, ``<stem>.report.json``,
    ``<stem>.calib.json``, ``<stem>_report.json``, ``<stem>.quant.json``), if any."""
    model = Path(model)
    stem = model.with_suffix('')
    for candidate in (Path(f'{model}.json'), model.with_suffix('.json'),
                      Path(f'{stem}.report.json'), Path(f'{stem}.calib.json'),
                      Path(f'{stem}_report.json'), Path(f'{stem}.quant.json')):
        if candidate.is_file():
            try:
                load_calibration_digests(candidate)
            except ConfigError:
                continue
            return candidate
    return None


def model_is_quantized(model: str | os.PathLike[str], metadata: Mapping[str, Any]) -> bool:
    """Whether the model's metadata says it was quantised (INT8 Q/DQ)."""
    if 'quantization' in metadata:
        return True
    path = Path(model)
    if path.suffix == '.onnx':
        try:
            import onnx

            props = onnx.load(str(path), load_external_data=False).metadata_props
            if any(p.key == 'quantization' for p in props):
                return True
        except Exception:
            return False
    return False


# ------------------------------------------------------------------------------------------
# model evaluation


def evaluate_model(model: str | os.PathLike[str], data: str | os.PathLike[str],
                   split: str = 'val', conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                   batch: int = 8, backend: str = 'auto', calib_report: str | None = None,
                   allow_overlap: bool = False, max_detections: int = 100,
                   progress: bool = False, limit: int | None = None,
                   warn: Callable[[str], None] | None = None, **backend_options: Any,
                   ) -> EvalResult:
    """Evaluate a model file (``.onnx`` or ``.engine``) on a dataset split through
    :class:`~darknet53_ros.inference.detector.Detector`.

    Raises:
        DatasetError: when evaluation images overlap the calibration set and
            ``allow_overlap`` is false.
    """
    warn = warn or _LOG.warning
    data_split = load_split(data, split)
    if limit is not None:
        data_split.samples = data_split.samples[:limit]
    gt = ground_truth_for_split(data_split)
    detections: dict[str, Any] = {}
    with Detector.from_model(model, backend=backend, conf_threshold=conf, nms_threshold=iou,
                             max_detections=max_detections, **backend_options) as detector:
        metadata = getattr(detector.backend, 'metadata', None) or {}
        report_path = Path(calib_report) if calib_report else None
        quantized = model_is_quantized(model, metadata)
        if report_path is None and quantized:
            report_path = find_calibration_report(model)
            if report_path is None:
                warn(f'{model} is quantised but no calibration report was given or found '
                     'beside it: overlap of evaluation and calibration images NOT checked '
                     '(pass --calib-report)')
        calib = load_calibration_digests(report_path) if report_path else None
        overlap: list[tuple[str, str]] = []
        names = detector.names
        if names is not None and len(names) != len(data_split.names):
            raise ConfigError(f'{model}: {len(names)} classes but {data} has '
                              f'{len(data_split.names)}')
        samples = data_split.samples
        bar = progress_bar(progress, 'eval', len(samples))
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            images = [load_image(s.image) for s in chunk]
            if calib is not None:
                for sample, image in zip(chunk, images):
                    key = calib.get(image_digest(image))
                    if key is not None:
                        overlap.append((str(sample.image), key))
            for sample, det in zip(chunk, detector.detect_batch(images)):
                detections[sample.name] = det
            bar.update(len(chunk))
        bar.close()
    if overlap:
        message = (f'{len(overlap)} of {len(samples)} evaluation images are calibration images '
                   f'of {report_path} (first: {overlap[0][0]} = {overlap[0][1]}); the figures '
                   'would be optimistic')
        if not allow_overlap:
            raise DatasetError(message + '; evaluate on held-out data or pass --allow-overlap')
        warn(message)
    settings = {
        'model': str(model), 'data': str(data), 'split': split, 'conf_threshold': conf,
        'nms_iou_threshold': iou, 'max_detections': max_detections,
        'calibration_report': str(report_path) if report_path else None,
        'calibration_overlap': len(overlap) if calib is not None else None,
        'quantized': quantized,
    }
    return evaluate_detections(gt, detections, settings)


def format_result(result: EvalResult) -> str:
    """Human-readable summary, stating the confidence threshold."""
    s = result.settings
    lines = [
        f'images {result.images}, ground truths {result.ground_truths}, detections '
        f'{result.detections} (conf threshold {s.get("conf_threshold")}, NMS IoU '
        f'{s.get("nms_iou_threshold")}, max {s.get("max_detections")} per image)',
        f'mAP@0.5      {result.map50:.4f}',
        f'mAP@0.5:0.95 {result.map:.4f}',
        f'mAP@0.75     {result.map75:.4f}',
        'per class AP@0.5 / AP@0.5:0.95:',
    ]
    width = max((len(n) for n in result.names), default=5)
    for name in result.names:
        lines.append(f'  {name:<{width}}  {result.ap50[name]:.4f}  {result.ap[name]:.4f}')
    return '\n'.join(lines)


def per_class_table(result: EvalResult) -> list[tuple[str, float, float]]:
    """``(name, AP50, AP)`` rows."""
    return [(n, result.ap50[n], result.ap[n]) for n in result.names]


__all__: Sequence[str] = (
    'DEFAULT_CONF', 'DEFAULT_IOU', 'evaluate_model', 'find_calibration_report',
    'format_result', 'load_calibration_digests', 'model_is_quantized', 'per_class_table',
    'plot_pr_curve')
