"""Tests for darknet53_ros.tools.baselines: the peers do the same work as the pipeline."""
from __future__ import annotations

import numpy as np

from darknet53_ros.inference.postprocess import postprocess
from darknet53_ros.inference.preprocess import preprocess
from darknet53_ros.tools import baselines

from ..conftest import requires

pytestmark = requires('cv2')


def test_pre_matches_ours_within_one_level():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    ours, (transform,) = preprocess(frame, 416, 416)
    for fn in (baselines.numpy_pre, baselines.opencv_pre):
        tensor, theirs = fn(frame, 416, 416)
        assert theirs == transform and tensor.shape == (1, 3, 416, 416)
        assert np.abs(tensor - ours).max() <= 1 / 255 + 1e-6


def test_post_detections_agree_with_ours():
    rng = np.random.default_rng(1)
    # Boxes inside the picture: ones clipped to zero area in the padding make OpenCV's
    # NMSBoxesBatched and the NumPy NMS disagree (a separate finding).
    centre = rng.uniform((40, 100), (376, 316), (500, 2))
    size = rng.uniform(5, 80, (500, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    scores = (rng.random((500, 6)) ** 8).astype(np.float32)
    _, (transform,) = preprocess(np.zeros((480, 640, 3), np.uint8), 416, 416)
    mine = postprocess(boxes[None], scores[None], [transform], 0.25, 0.45, 100)[0]
    assert len(mine) > 5
    ours = baselines.Found(mine.boxes, mine.scores, mine.class_ids)
    for fn in (baselines.numpy_post, baselines.opencv_post):
        assert baselines.same_detections(ours, fn(boxes, scores, transform, 0.25, 0.45))
    shorter = baselines.Found(ours.boxes[1:], ours.scores[1:], ours.class_ids[1:])
    assert not baselines.same_detections(ours, shorter)
    empty = baselines.opencv_post(boxes, scores * 0, transform)
    assert len(empty.scores) == 0


def test_opencv_post_without_batched_nms(monkeypatch):
    """OpenCV before 4.7 (apt's on Humble) has no NMSBoxesBatched: the baseline runs
    NMSBoxes per class, as OpenCV's samples did, with the same detections."""
    import cv2

    rng = np.random.default_rng(4)
    centre = rng.uniform((40, 100), (376, 316), (300, 2))
    size = rng.uniform(5, 80, (300, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    scores = (rng.random((300, 4)) ** 4).astype(np.float32)
    transform = baselines.letterbox_transform(640, 480, 416, 416)
    expected = baselines.numpy_post(boxes, scores, transform)
    monkeypatch.setattr(cv2, 'dnn', type('OldDnn', (), {'NMSBoxes': cv2.dnn.NMSBoxes}))
    assert baselines.same_detections(baselines.opencv_post(boxes, scores, transform), expected)
