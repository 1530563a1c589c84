"""Tests for darknet53_ros.inference.postprocess; ONNX's reference NonMaxSuppression is the NMS
oracle."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.inference import postprocess as pp
from darknet53_ros.inference.postprocess import (
    Detections,
    nms,
    nms_numpy,
    nms_opencv,
    postprocess,
    select_candidates,
)
from darknet53_ros.inference.preprocess import LetterboxTransform, letterbox_transform

from ..conftest import optional_module, requires

pytestmark = requires('onnx')
onnx = optional_module('onnx')
if onnx is not None:
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

METHODS = ['numpy', 'opencv', 'auto']


def _reference_session() -> ReferenceEvaluator:
    node = helper.make_node('NonMaxSuppression',
                            ['boxes', 'scores', 'max_out', 'iou', 'score_thr'], ['selected'],
                            center_point_box=0)
    graph = helper.make_graph(
        [node], 'nms',
        [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info('scores', TensorProto.FLOAT, [1, None, None]),
         helper.make_tensor_value_info('max_out', TensorProto.INT64, [1]),
         helper.make_tensor_value_info('iou', TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info('score_thr', TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info('selected', TensorProto.INT64, [None, 3])])
    return ReferenceEvaluator(helper.make_model(graph,
                                                opset_imports=[helper.make_opsetid('', 11)]))


REFERENCE = _reference_session()


def reference_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None,
                  threshold: float) -> set[int]:
    """Kept candidate indices from onnx.reference's NonMaxSuppression (one class per box)."""
    count = len(scores)
    if count == 0:
        return set()
    classes = np.zeros(count, np.int64) if classes is None else classes
    num_classes = int(classes.max()) + 1
    table = np.full((1, num_classes, count), -1.0, np.float32)  # -1: not this box's class
    table[0, classes, np.arange(count)] = scores
    yxyx = boxes[:, [1, 0, 3, 2]][None].astype(np.float32)
    (selected,) = REFERENCE.run(None, {
        'boxes': yxyx, 'scores': table, 'max_out': np.array([count], np.int64),
        'iou': np.array([threshold], np.float32),
        'score_thr': np.array([-0.5], np.float32)})
    return {int(i) for i in selected[:, 2]}


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU in float64 (for invariants)."""
    b = boxes.astype(np.float64)
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.nan_to_num(inter / (area[:, None] + area[None, :] - inter))


@st.composite
def nms_inputs(draw: st.DrawFn, max_boxes: int = 60) -> tuple[np.ndarray, ...]:
    """Boxes on a coarse grid (many overlaps, duplicates and exact score ties; some of zero
    width or height, as boxes clipped at the image border become)."""
    count = draw(st.integers(0, max_boxes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    corner = rng.integers(0, 16, (count, 2)) * 2.5
    size = rng.integers(0, 24, (count, 2)) * 2.5
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
    scores = rng.choice(np.array([0.3, 0.5, 0.55, 0.7, 0.9, 1.0], np.float32), count)
    classes = rng.integers(0, draw(st.integers(1, 4)), count)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0]))
    return boxes, scores, classes, threshold


def expected_order(indices: set[int], scores: np.ndarray) -> list[int]:
    return sorted(indices, key=lambda i: (-scores[i], i))


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('class_aware', [True, False])
@settings(max_examples=100, deadline=None)
@given(data=nms_inputs())
def test_nms_matches_onnx_reference(method: str, class_aware: bool,
                                    data: tuple[np.ndarray, ...]) -> None:
    boxes, scores, classes, threshold = data
    classes = classes if class_aware else None
    kept = nms(boxes, scores, classes, threshold, method=method)
    assert kept.tolist() == expected_order(reference_nms(boxes, scores, classes, threshold),
                                           scores)


@settings(max_examples=40, deadline=None)
@given(data=nms_inputs())
def test_numpy_loop_fallback_matches_reference(data: tuple[np.ndarray, ...]) -> None:
    boxes, scores, classes, threshold = data
    saved = pp._PAIR_LIMIT
    pp._PAIR_LIMIT = -1  # force the loop over kept boxes
    try:
        kept = nms_numpy(boxes, scores, classes, threshold)
    finally:
        pp._PAIR_LIMIT = saved
    assert kept.tolist() == expected_order(reference_nms(boxes, scores, classes, threshold),
                                           scores)


@pytest.mark.parametrize('method', ['numpy', 'opencv'])
@settings(max_examples=60, deadline=None)
@given(data=nms_inputs(), max_det=st.integers(1, 10))
def test_nms_invariants(method: str, data: tuple[np.ndarray, ...], max_det: int) -> None:
    boxes, scores, classes, threshold = data
    kept = nms(boxes, scores, classes, threshold, method=method)
    # Output is a subset of the input, without repeats, sorted by descending score.
    assert len(set(kept.tolist())) == len(kept) and np.all((kept >= 0) & (kept < len(boxes)))
    assert np.all(np.diff(scores[kept]) <= 0)
    # No two kept boxes of the same class overlap above the threshold.
    overlap = iou_matrix(boxes[kept]) > threshold + 1e-6
    same = classes[kept][:, None] == classes[kept][None, :]
    np.fill_diagonal(overlap, False)
    assert not np.any(overlap & same)
    # Idempotent, and max_det keeps the best prefix.
    again = nms(boxes[kept], scores[kept], classes[kept], threshold, method=method)
    assert again.tolist() == list(range(len(kept)))
    limited = nms(boxes, scores, classes, threshold, max_det=max_det, method=method)
    assert limited.tolist() == kept[:max_det].tolist()


def test_nms_empty_and_zero_scores() -> None:
    empty = np.zeros((0, 4), np.float32)
    for method in METHODS:
        assert nms(empty, np.zeros(0, np.float32), method=method).shape == (0,)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    zeros = np.zeros(2, np.float32)
    assert nms_opencv(boxes, zeros, np.zeros(2, int), 0.5).tolist() == [0]
    with pytest.raises(ConfigError, match='nms_method'):
        nms(boxes, zeros, method='fast')


@pytest.mark.parametrize('opencv', [True, False])
def test_select_candidates_takes_every_pair_above_threshold(
        opencv: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pp, '_HAVE_OPENCV', opencv)
    rng = np.random.default_rng(0)
    boxes = rng.random((50, 4), dtype=np.float32)
    scores = rng.random((50, 7), dtype=np.float32)
    scores[3, 2] = 0.8  # exactly at the threshold: kept (score >= threshold)
    cand_boxes, cand_scores, cand_classes = select_candidates(boxes, scores, 0.8)
    expected = [(i, c) for i in range(50) for c in range(7) if scores[i, c] >= np.float32(0.8)]
    rows = [i for i, _ in expected]
    assert list(zip(rows, cand_classes.tolist())) == expected
    np.testing.assert_array_equal(cand_boxes, boxes[rows])
    np.testing.assert_array_equal(cand_scores, [scores[i, c] for i, c in expected])


@pytest.mark.parametrize('opencv', [True, False])
def test_postprocess_maps_to_source_pixels(opencv: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pp, '_HAVE_OPENCV', opencv)
    transform = letterbox_transform(640, 480, 416, 416)  # scale 0.65, pad_y 52
    boxes = np.array([[[65, 117, 130, 182],       # -> (100, 100, 200, 200)
                       [66, 118, 130, 182],       # same object, lower score: suppressed
                       [65, 117, 130, 182],       # same box, other class: kept
                       [-10, 30, 20, 70],         # clipped to (0, 0, 30.77, 27.69)
                       [200, 200, 300, 300]]], np.float32)
    scores = np.zeros((1, 5, 3), np.float32)
    scores[0, 0, 1], scores[0, 1, 1], scores[0, 2, 2], scores[0, 3, 0] = 0.9, 0.8, 0.6, 0.3
    scores[0, 4, 0] = 0.2  # below the threshold
    for method in METHODS:
        (det,) = postprocess(boxes, scores, [transform], 0.25, 0.45, 100, ['a', 'b', 'c'],
                             nms_method=method)
        assert isinstance(det, Detections) and len(det) == 3
        np.testing.assert_allclose(det.boxes, [[100, 100, 200, 200], [100, 100, 200, 200],
                                               [0, 0, 20 / 0.65, 18 / 0.65]], rtol=1e-5)
        np.testing.assert_allclose(det.scores, [0.9, 0.6, 0.3])
        assert det.class_ids.tolist() == [1, 2, 0] and det.labels == ['b', 'c', 'a']
        assert det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int64
    (agnostic,) = postprocess(boxes, scores, [transform], class_agnostic=True)
    assert agnostic.class_ids.tolist() == [1, 0]
    (top,) = postprocess(boxes, scores, [transform], max_detections=1)
    assert top.class_ids.tolist() == [1] and top.labels == ['1']


def test_postprocess_batches_and_padded_batches() -> None:
    boxes = np.tile(np.array([[[0, 0, 10, 10]]], np.float32), (3, 1, 1))
    scores = np.array([[[0.9]], [[0.1]], [[0.7]]], np.float32)
    identity = LetterboxTransform(1.0, 1.0, 0.0, 0.0, 100, 100)
    results = postprocess(boxes, scores, [identity, identity])  # third entry: padding
    assert [len(r) for r in results] == [1, 0]
    assert results[1].boxes.shape == (0, 4) and results[1].labels == []
    with pytest.raises(ModelError, match='batch 3 < 4'):
        postprocess(boxes, scores, [identity] * 4)
    with pytest.raises(ModelError, match='expected'):
        postprocess(boxes[:, :, :2], scores, [identity])


@pytest.mark.parametrize('kwargs, field', [
    ({'conf_threshold': 1.5}, 'conf_threshold'),
    ({'conf_threshold': float('nan')}, 'conf_threshold'),
    ({'nms_threshold': -0.1}, 'nms_threshold'),
    ({'max_detections': 0}, 'max_detections'),
    ({'nms_method': 'gpu'}, 'nms_method'),
])
def test_postprocess_validates_parameters(kwargs: dict, field: str) -> None:
    boxes, scores = np.zeros((1, 1, 4), np.float32), np.zeros((1, 1, 1), np.float32)
    with pytest.raises(ConfigError, match=field):
        postprocess(boxes, scores, [LetterboxTransform(1, 1, 0, 0, 1, 1)], **kwargs)


def test_detections_empty_and_labels() -> None:
    det = Detections.empty(['x'])
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.labels == []
    det = Detections(np.zeros((2, 4), np.float32), np.ones(2, np.float32),
                     np.array([0, 5]), ['x'])
    assert det.labels == ['x', '5']


def test_opencv_without_batched_nms_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV < 4.7 (Ubuntu 22.04's python3-opencv 4.5.4) has no cv2.dnn.NMSBoxesBatched: auto
    and explicit 'opencv' NMS give numpy's (identical) result instead of failing every batch."""
    import types

    cv2 = pytest.importorskip('cv2')
    rng = np.random.default_rng(3)
    xy = rng.random((40, 2), dtype=np.float32) * 50
    boxes = np.concatenate([xy, xy + 5 + rng.random((40, 2), dtype=np.float32) * 20], 1)
    scores = rng.random(40, dtype=np.float32) + 0.01
    classes = rng.integers(0, 3, 40)
    expected = nms(boxes, scores, classes, 0.4, method='numpy')
    old_dnn = types.SimpleNamespace(NMSBoxes=cv2.dnn.NMSBoxes)
    monkeypatch.setattr(cv2, 'dnn', old_dnn)
    for method in METHODS:
        np.testing.assert_array_equal(nms(boxes, scores, classes, 0.4, method=method), expected)
