"""COCO detection metrics (pycocotools, no PyTorch): ground truth of a dataset split and
mAP@0.5 / mAP@0.5:0.95 of detections, for :mod:`darknet53_ros.tools.evaluate` and training
validation.

Boxes are compared in source-image pixels with COCO's conventions: ``[x, y, w, h]`` boxes,
IoU thresholds 0.50:0.05:0.95, 101 recall points, at most 100 detections per image, area
range ``all``. Ground truth comes from the split's COCO ``annotations.json``, or is built from
its Darknet label files.
"""
from __future__ import annotations

from collections.abc import Mapping
import contextlib
from dataclasses import dataclass, field
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.io.dataset import load_image, read_labels

__all__ = ['IOU_THRESHOLDS', 'EvalResult', 'evaluate_detections', 'ground_truth_for_split']

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
# ground truth


def ground_truth_for_split(split: Any) -> dict[str, Any]:
    """COCO ground truth of a :class:`~darknet53_ros.io.dataset.SplitData`, restricted to its
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
