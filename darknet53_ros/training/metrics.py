"""COCO detection metrics (pycocotools, no PyTorch): ground truth of a dataset split and
mAP@0.5 / mAP@0.5:0.95 of detections, for :mod:`darknet53_ros.tools.evaluate` and training
validation.

Boxes are compared in source-image pixels with COCO's conventions: ``[x, y, w, h]`` boxes,
IoU thresholds 0.50:0.05:0.95, 101 recall points, at most 100 detections per image, area
range ``all``. Ground truth is :func:`darknet53_ros.io.coco.coco_ground_truth`, the same for
every dataset layout.
"""
from __future__ import annotations

from collections.abc import Mapping
import contextlib
from dataclasses import dataclass, field
import io
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.io.coco import coco_ground_truth
from darknet53_ros.io.dataset import SplitData

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


def ground_truth_for_split(split: SplitData) -> dict[str, Any]:
    """COCO ground truth of a split of any layout: the one function behind ``eval``,
    training validation and ``dataset convert --to coco``
    (:func:`darknet53_ros.io.coco.coco_ground_truth`)."""
    return coco_ground_truth(split)


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
