"""Tests of darknet53_ros.tools.evaluate: hand-computed COCO mAP, ground truth, calibration
overlap."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.errors import DatasetError
from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.dataset import load_image
from darknet53_ros.io.dataset_formats import load_split
from darknet53_ros.tools.evaluate import (
    find_calibration_report,
    load_calibration_digests,
    plot_pr_curve,
)
from darknet53_ros.training.metrics import evaluate_detections, ground_truth_for_split

from ..conftest import requires

pytestmark = requires('pycocotools', reason='COCO evaluation needs the eval extra')


def _xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


GT = {  # file -> [(class, x1y1x2y2)]
    'a.jpg': [(0, [10, 10, 110, 110]), (1, [300, 100, 400, 200])],
    'b.jpg': [(0, [200, 200, 300, 300]), (1, [20, 300, 120, 400])],
    'c.jpg': [(0, [50, 50, 150, 150]), (1, [400, 50, 500, 150])],
}

DETS = {  # file -> [(class, score, x1y1x2y2)]
    'a.jpg': [(0, 0.9, [10, 10, 110, 110]),        # cat TP (IoU 1)
              (1, 0.5, [300, 123, 400, 223])],     # dog IoU 77/123 = 0.626
    'b.jpg': [(0, 0.8, [400, 400, 500, 500]),      # cat FP
              (0, 0.7, [200, 200, 300, 300]),      # cat TP
              (1, 0.4, [20, 300, 120, 400])],      # dog TP (IoU 1)
    'c.jpg': [(0, 0.6, [300, 300, 400, 400])],     # cat FP; the dog of c is missed
}


def _gt() -> dict:
    images, anns = [], []
    for k, (name, objects) in enumerate(GT.items(), 1):
        images.append({'id': k, 'file_name': name, 'width': 640, 'height': 480})
        for cls, box in objects:
            anns.append({'id': len(anns) + 1, 'image_id': k, 'category_id': cls + 1,
                         'bbox': _xywh(box), 'area': (box[2] - box[0]) * (box[3] - box[1]),
                         'iscrowd': 0})
    return {'images': images, 'annotations': anns,
            'categories': [{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'dog'}]}


def _dets() -> dict:
    out = {}
    for name in GT:
        rows = DETS.get(name, [])
        out[name] = Detections(np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
                               np.array([r[1] for r in rows], np.float32),
                               np.array([r[0] for r in rows], np.int64))
    return out


@requires('pycocotools')
def test_map_matches_hand_computation() -> None:
    # COCO AP = mean over 101 recall points r of max precision at recall >= r.
    # cat (3 GT): TP .9, FP .8, TP .7, FP .6 -> precision 1, 1/2, 2/3, 1/2 at recall
    #   1/3, 1/3, 2/3, 2/3; envelope 1 for r <= 1/3 (34 points: 0.00..0.33), 2/3 for
    #   1/3 < r <= 2/3 (33 points: 0.34..0.66), 0 above. TPs are exact, so every IoU
    #   threshold gives AP = (34 + 33 * 2/3) / 101 = 56 / 101.
    cat = 56 / 101
    # dog (3 GT): .5 has IoU 0.626 (TP for t <= 0.6), .4 exact, one GT missed.
    #   t in {.5, .55, .6}: precision 1, 1 at recall 1/3, 2/3 -> 67 points -> 67 / 101.
    #   t >= .65: FP then TP: precision 0, 1/2 at recall 0, 1/3 -> 34 points * 1/2.
    dog50, dog_high = 67 / 101, 17 / 101
    dog = (3 * dog50 + 7 * dog_high) / 10
    result = evaluate_detections(_gt(), _dets(), {'conf_threshold': 0.001})
    assert result.ap50['cat'] == pytest.approx(cat, abs=1e-9)
    assert result.ap50['dog'] == pytest.approx(dog50, abs=1e-9)
    assert result.ap['cat'] == pytest.approx(cat, abs=1e-9)
    assert result.ap['dog'] == pytest.approx(dog, abs=1e-9)
    assert result.map50 == pytest.approx((cat + dog50) / 2, abs=1e-9)
    assert result.map == pytest.approx((cat + dog) / 2, abs=1e-9)
    assert result.map75 == pytest.approx((cat + dog_high) / 2, abs=1e-9)
    assert result.images == 3 and result.ground_truths == 6 and result.detections == 6
    # The PR curve at IoU 0.5: cat's interpolated precision is 1 up to recall 0.33.
    assert result.precision[:34, 0] == pytest.approx(1.0)
    assert result.precision[34:67, 0] == pytest.approx(2 / 3)
    assert result.precision[67:, 0] == pytest.approx(0.0)
    assert result.summary()['conf_threshold'] == 0.001


@requires('pycocotools')
def test_no_detections_gives_zero(tmp_path: Path) -> None:
    empty = {name: Detections.empty() for name in GT}
    result = evaluate_detections(_gt(), empty)
    assert result.map50 == 0.0 and result.map == 0.0
    plot_pr_curve(result, tmp_path / 'pr.png')
    assert (tmp_path / 'pr.png').stat().st_size > 0


@requires('pycocotools')
def test_unknown_image_rejected() -> None:
    with pytest.raises(DatasetError, match='not in the ground truth'):
        evaluate_detections(_gt(), {'zzz.jpg': Detections.empty()})


@requires('pycocotools', 'matplotlib')
def test_perfect_detections_and_pr_plot(tmp_path: Path) -> None:
    dets = {}
    for name, objects in GT.items():
        dets[name] = Detections(np.array([b for _, b in objects], np.float32),
                                np.array([0.9] * len(objects), np.float32),
                                np.array([c for c, _ in objects], np.int64))
    result = evaluate_detections(_gt(), dets)
    assert result.map50 == pytest.approx(1.0) and result.map == pytest.approx(1.0)
    plot_pr_curve(result, tmp_path / 'pr.png')
    data = result.to_json()
    assert len(data['pr_curve_iou50']['recall']) == 101


def _write_split(tmp_path: Path, with_coco: bool) -> Path:
    import cv2

    root = tmp_path / ('coco' if with_coco else 'labels')
    (root / 'val' / 'images').mkdir(parents=True)
    (root / 'val' / 'labels').mkdir()
    images, anns = [], []
    for k, (name, objects) in enumerate(GT.items(), 1):
        cv2.imwrite(str(root / 'val' / 'images' / name), np.full((480, 640, 3), k * 40, np.uint8))
        lines = []
        for cls, b in objects:
            lines.append(f'{cls} {(b[0] + b[2]) / 2 / 640:.6f} {(b[1] + b[3]) / 2 / 480:.6f} '
                         f'{(b[2] - b[0]) / 640:.6f} {(b[3] - b[1]) / 480:.6f}\n')
            anns.append({'id': len(anns) + 1, 'image_id': k, 'category_id': cls + 1,
                         'bbox': _xywh(b), 'area': 1.0, 'iscrowd': 0})
        (root / 'val' / 'labels' / f'{Path(name).stem}.txt').write_text(''.join(lines))
        images.append({'id': k, 'file_name': name, 'width': 640, 'height': 480})
    if with_coco:
        (root / 'val' / 'annotations.json').write_text(json.dumps({
            'images': images, 'annotations': anns,
            'categories': [{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'dog'}]}))
    (root / 'val.txt').write_text(''.join(f'val/images/{n}\n' for n in GT))
    truth = 'annotations: val/annotations.json' if with_coco else 'labels: val/labels'
    (root / 'dataset.yaml').write_text(
        f'names: [cat, dog]\nsplits:\n  val: {{images: val/images, {truth}, list: val.txt}}\n')
    return root


@requires('torch', 'pycocotools')
def test_ground_truth_from_labels_matches_coco(tmp_path: Path) -> None:

    from_coco = ground_truth_for_split(load_split(_write_split(tmp_path, True), 'val'))
    from_labels = ground_truth_for_split(load_split(_write_split(tmp_path, False), 'val'))
    assert [i['file_name'] for i in from_coco['images']] == list(GT)
    assert len(from_coco['annotations']) == len(from_labels['annotations']) == 6
    for a, b in zip(from_coco['annotations'], from_labels['annotations']):
        assert a['category_id'] == b['category_id']
        assert a['bbox'] == pytest.approx(b['bbox'], abs=0.01)
    result = evaluate_detections(from_labels, _dets())
    assert result.map50 == pytest.approx((56 / 101 + 67 / 101) / 2, abs=1e-3)


def _tiny_onnx(path: Path) -> None:
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import random_weights

    network = parse_cfg(yolov3_cfg(2, 64, 64, width_multiplier=0.0625))
    export_onnx(network, random_weights(network, 0), path, names=['cat', 'dog'])


@requires('tqdm')
def test_calibration_overlap_detected(tmp_path: Path) -> None:
    pytest.importorskip('onnxruntime')
    from darknet53_ros.optimize.calibration import image_digest
    from darknet53_ros.tools.evaluate import evaluate_model

    root = _write_split(tmp_path, True)
    model = tmp_path / 'm.onnx'
    _tiny_onnx(model)
    report = tmp_path / 'report.json'
    digest = image_digest(load_image(root / 'val' / 'images' / 'b.jpg'))
    report.write_text(json.dumps({'calibration': {'images': [
        {'key': 'calib/0001.jpg', 'sha256': digest}, {'key': 'x', 'sha256': '0' * 64}]}}))
    assert load_calibration_digests(report) == {digest: 'calib/0001.jpg', '0' * 64: 'x'}
    with pytest.raises(DatasetError, match='calibration images'):
        evaluate_model(model, root, 'val', calib_report=str(report))
    warnings: list[str] = []
    result = evaluate_model(model, root, 'val', calib_report=str(report), allow_overlap=True,
                            warn=warnings.append)
    assert result.settings['calibration_overlap'] == 1 and warnings
    assert result.settings['conf_threshold'] == 0.001
    clean = evaluate_model(model, root, 'val')
    assert clean.settings['calibration_overlap'] is None
    assert find_calibration_report(model) is None
