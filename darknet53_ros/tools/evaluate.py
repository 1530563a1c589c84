"""COCO-style detection evaluation (mAP@0.5 and mAP@0.5:0.95 with pycocotools).

Models are evaluated through the same :class:`darknet53_ros.inference.detector.Detector` pipeline
as
inference (letterbox, backend, thresholding, per-class NMS, mapping back to source pixels), so
an ONNX FP32 model, its INT8 Q/DQ version and a TensorRT engine are measured identically. The
confidence threshold used for evaluation (0.001 by default, the usual mAP setting: low enough
that the precision-recall curve reaches high recall) is reported with the figures.

Boxes are compared in source-image pixels with COCO's conventions: ``[x, y, w, h]`` boxes,
IoU thresholds 0.50:0.05:0.95, 101 recall points, at most 100 detections per image, area
range ``all``. Ground truth comes from the split's COCO ``annotations.json``, or is built from
its Darknet label files.

Calibration leakage: an INT8 model must not be evaluated on its calibration images. Given the
quantisation report (``--calib-report``), or when one is found beside a quantised model, the
pixel digests (:func:`darknet53_ros.optimize.calibration.image_digest`) of the evaluation images
are compared with the report's calibration digests; an overlap is an error unless allowed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError

_LOG = logging.getLogger(__name__)

DEFAULT_CONF = 0.001
"""Evaluation confidence threshold (COCO mAP convention)."""

DEFAULT_IOU = 0.6
"""NMS IoU threshold used for evaluation."""

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
"""COCO's IoU thresholds."""


@dataclass
class EvalResult:
    """Evaluation figures.

    ``precision`` is COCO's ``[101 recall points, classes]`` interpolated precision at IoU 0.5
    (``-1`` where a class has no ground truth); ``ap50`` / ``ap`` are per class.
    """

    map50: float
    map: float
    map75: float
    ap50: dict[str, float]
    ap: dict[str, float]
    recall_points: np.ndarray
    precision: np.ndarray
    images: int
    ground_truths: int
    detections: int
    names: list[str]
    stats: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures (without the curves)."""
        return {
            'map50': self.map50, 'map': self.map, 'map75': self.map75,
            'ap50_per_class': self.ap50, 'ap_per_class': self.ap, 'images': self.images,
            'ground_truths': self.ground_truths, 'detections': self.detections,
            'coco_stats': self.stats, **self.settings,
        }

    def to_json(self) -> dict[str, Any]:
        """Figures plus the precision-recall curves at IoU 0.5."""
        data = self.summary()
        data['pr_curve_iou50'] = {
            'recall': [round(float(r), 4) for r in self.recall_points],
            'precision': {name: [round(float(p), 5) for p in self.precision[:, k]]
                          for k, name in enumerate(self.names)},
        }
        return data


# ------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Sample:
    """One image of a split and its label file."""

    image: Path
    label: Path


@dataclass
class SplitData:
    """A dataset split: samples, class names, and the COCO annotation file if present."""

    name: str
    samples: list[Sample]
    names: list[str]
    annotations: Path | None = None
    category_ids: list[int] | None = None
    root: Path | None = None


def load_split(data: str | os.PathLike[str], split: str = 'train') -> SplitData:
    """Read split ``split`` of a ``dataset.yaml`` (or the folder holding one)."""
    from darknet53_ros.training.synthetic import load_dataset_description

    desc = load_dataset_description(data)
    splits = desc['splits']
    if split not in splits:
        raise DatasetError(f'{data}: no split {split!r} (have: {", ".join(sorted(splits))})')
    entry = splits[split]
    root = Path(desc['root'])
    list_path = Path(entry['list'])
    labels_dir = Path(entry['labels'])
    try:
        lines = list_path.read_text(encoding='utf-8').splitlines()
    except OSError as exc:
        raise DatasetError(f'{list_path}: cannot read image list: {exc}') from None
    samples = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        image = Path(line) if Path(line).is_absolute() else root / line
        samples.append(Sample(image, labels_dir / f'{image.stem}.txt'))
    if not samples:
        raise DatasetError(f'{list_path}: split {split!r} has no images')
    annotations = Path(entry['annotations'])
    category_ids = desc.get('category_ids')
    return SplitData(split, samples, list(desc['names']),
                     annotations if annotations.is_file() else None,
                     list(category_ids) if isinstance(category_ids, list) else None, root)


def read_labels(path: Path, width: int, height: int, classes: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read a Darknet label file (``class cx cy w h`` normalised) as pixel boxes and classes.

    A missing file means no objects.
    """
    if not path.exists():
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    boxes, ids = [], []
    for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except (ValueError, IndexError):
            raise DatasetError(f'{path}:{number}: expected "class cx cy w h", got '
                               f'{line!r}') from None
        if len(parts) != 5 or not 0 <= cls < classes or w <= 0 or h <= 0:
            raise DatasetError(f'{path}:{number}: invalid label {line!r} ({classes} classes)')
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                      (cy + h / 2) * height])
        ids.append(cls)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(ids, np.int64)


def load_image(path: Path) -> np.ndarray:
    """Read a BGR image; an unreadable file raises :class:`DatasetError`."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f'{path}: cannot read image')
    return image



# ------------------------------------------------------------------------------------------
# ground truth


def ground_truth_for_split(split: Any) -> dict[str, Any]:
    """COCO ground truth of a :class:`darknet53_ros.training.trainer.SplitData`, restricted to its
    images.

    Uses the split's ``annotations.json`` when present, else its Darknet label files.
    Categories are ordered as the class names (category of class ``i`` at position ``i``).
    """
    names = list(split.names)
    if split.annotations is not None:
        try:
            coco = json.loads(Path(split.annotations).read_text(encoding='utf-8'))
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f'{split.annotations}: cannot read COCO annotations: {exc}') \
                from None
        by_name = {img['file_name']: img for img in coco.get('images', [])}
        wanted = [s.image.name for s in split.samples]
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise DatasetError(f'{split.annotations}: {len(missing)} images of the split list '
                               f'are not annotated (first: {missing[0]})')
        ids = {by_name[n]['id'] for n in wanted}
        cat_ids = split.category_ids or [c['id'] for c in sorted(
            coco.get('categories', []), key=lambda c: c['id'])][:len(names)] or \
            list(range(1, len(names) + 1))
        if len(cat_ids) != len(names):
            raise DatasetError(f'{split.annotations}: {len(cat_ids)} categories for '
                               f'{len(names)} class names')
        anns = [dict(a) for a in coco.get('annotations', []) if a['image_id'] in ids]
        for a in anns:
            a.setdefault('iscrowd', 0)
            a.setdefault('area', float(a['bbox'][2] * a['bbox'][3]))
        return {'images': [by_name[n] for n in wanted], 'annotations': anns,
                'categories': [{'id': int(c), 'name': n} for c, n in zip(cat_ids, names)]}
    images, anns = [], []
    for k, sample in enumerate(split.samples, 1):
        image = load_image(sample.image)
        h, w = image.shape[:2]
        images.append({'id': k, 'file_name': sample.image.name, 'width': w, 'height': h})
        boxes, classes = read_labels(sample.label, w, h, len(names))
        for box, cls in zip(boxes, classes):
            bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({'id': len(anns) + 1, 'image_id': k, 'category_id': int(cls) + 1,
                         'bbox': [float(box[0]), float(box[1]), bw, bh], 'area': bw * bh,
                         'iscrowd': 0})
    return {'images': images, 'annotations': anns,
            'categories': [{'id': i + 1, 'name': n} for i, n in enumerate(names)]}


# ------------------------------------------------------------------------------------------
# metrics


def _detections_to_coco(gt: Mapping[str, Any], detections: Mapping[str, Any],
                        ) -> list[dict[str, Any]]:
    image_ids = {img['file_name']: img['id'] for img in gt['images']}
    cat_ids = [c['id'] for c in gt['categories']]
    results = []
    for name, det in detections.items():
        if name not in image_ids:
            raise DatasetError(f'detections for {name!r}, which is not in the ground truth')
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
        for box, score, cls in zip(boxes, np.asarray(det.scores).reshape(-1),
                                   np.asarray(det.class_ids).reshape(-1)):
            if not 0 <= int(cls) < len(cat_ids):
                raise ConfigError(f"{name}: class id {int(cls)} outside the dataset's "
                                  f'{len(cat_ids)} classes')
            results.append({'image_id': image_ids[name], 'category_id': cat_ids[int(cls)],
                            'bbox': [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                     float(box[3] - box[1])], 'score': float(score)})
    return results


def evaluate_detections(gt: Mapping[str, Any], detections: Mapping[str, Any],
                        settings: Mapping[str, Any] | None = None) -> EvalResult:
    """COCO bbox evaluation of ``detections`` (file name -> object with ``boxes`` x1y1x2y2,
    ``scores`` and 0-based ``class_ids``) against COCO ground truth ``gt``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = [c['name'] for c in gt['categories']]
    results = _detections_to_coco(gt, detections)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = {'images': list(gt['images']), 'annotations': list(gt['annotations']),
                           'categories': list(gt['categories'])}
        for k, ann in enumerate(coco_gt.dataset['annotations'], 1):
            ann.setdefault('id', k)
        coco_gt.createIndex()
        recall_points = np.linspace(0.0, 1.0, 101)
        k_count = len(names)
        if not results or not gt['annotations']:
            precision = np.full((101, k_count), -1.0 if not gt['annotations'] else 0.0)
            return EvalResult(0.0, 0.0, 0.0, dict.fromkeys(names, 0.0),
                              dict.fromkeys(names, 0.0), recall_points, precision,
                              len(gt['images']), len(gt['annotations']), 0, names,
                              [0.0] * 12, dict(settings or {}))
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, 'bbox')
        ev.params.imgIds = [img['id'] for img in gt['images']]
        ev.params.catIds = [c['id'] for c in gt['categories']]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval['precision']  # [T, R, K, A, M]
    area_all = 0
    max_dets = len(ev.params.maxDets) - 1

    def class_ap(t_slice: slice) -> dict[str, float]:
        out = {}
        for k, name in enumerate(names):
            p = prec[t_slice, :, k, area_all, max_dets]
            p = p[p > -1]
            out[name] = float(p.mean()) if p.size else float('nan')
        return out

    stats = [float(s) for s in ev.stats]
    return EvalResult(
        map50=max(stats[1], 0.0), map=max(stats[0], 0.0), map75=max(stats[2], 0.0),
        ap50=class_ap(slice(0, 1)), ap=class_ap(slice(None)), recall_points=recall_points,
        precision=prec[0, :, :, area_all, max_dets].copy(), images=len(gt['images']),
        ground_truths=len(gt['annotations']), detections=len(results), names=names,
        stats=stats, settings=dict(settings or {}))


def plot_pr_curve(result: EvalResult, path: str | os.PathLike[str], title: str = '') -> None:
    """Save the precision-recall curves at IoU 0.5 (per class and mean) as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from darknet53_ros.fileio import atomic_path

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
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.optimize.calibration import image_digest

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
        from tqdm import tqdm

        bar = tqdm(total=len(samples), desc='eval', disable=not progress, leave=False)
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            images = [load_image(s.image) for s in chunk]
            if calib is not None:
                for sample, image in zip(chunk, images):
                    key = calib.get(image_digest(image))
                    if key is not None:
                        overlap.append((str(sample.image), key))
            for sample, det in zip(chunk, detector.detect_batch(images)):
                detections[sample.image.name] = det
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
    'DEFAULT_CONF', 'DEFAULT_IOU', 'EvalResult', 'evaluate_detections', 'evaluate_model',
    'format_result', 'ground_truth_for_split', 'plot_pr_curve', 'load_calibration_digests',
    'find_calibration_report')
