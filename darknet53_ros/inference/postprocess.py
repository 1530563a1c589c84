"""Postprocessing of the contract's ``boxes``/``scores`` outputs: threshold, NMS, un-letterbox.

Candidates are all (box, class) pairs whose score ``sigmoid(obj) * sigmoid(cls)`` is at least
``conf_threshold`` (like Darknet, one box can yield several classes). Candidate boxes are mapped
back to source pixels (clipped to the image) and suppressed per class: a box is dropped when its
IoU with a higher-scoring kept box of the same class is above ``nms_threshold``; ties in score
keep the lower box index first (the ONNX ``NonMaxSuppression`` order). At most
``max_detections`` detections per image remain, sorted by descending score.

Two NMS implementations give identical results: ``'opencv'`` (``cv2.dnn.NMSBoxesBatched``,
handing the inputs it treats differently from ONNX's ``NonMaxSuppression`` to numpy: scores
``<= 0`` and empty boxes) and ``'numpy'`` (vectorised sweep, no loop over boxes). The default
``'auto'`` takes the faster one for the candidate count (see
:data:`AUTO_OPENCV_MAX_CANDIDATES` and ``benchmarks/bench_nms.py``) and numpy when OpenCV is
missing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.inference.preprocess import LetterboxTransform

#: NMS implementations accepted by :func:`nms` and :func:`postprocess`.
NMS_METHODS = ('auto', 'opencv', 'numpy')

# Above this many same-class box pairs the numpy NMS loops over kept boxes instead.
_PAIR_LIMIT = 2_000_000
# 'auto' NMS: OpenCV up to this many candidates, numpy above (benchmarks/bench_nms.py: OpenCV's
# batched NMS compares every candidate with every kept box of any class, so it loses badly on
# many candidates of many classes, while it wins 2-4x on the few hundred of real-time use).
AUTO_OPENCV_MAX_CANDIDATES = 512
_HAVE_OPENCV: bool | None = None


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image as parallel arrays (cheap: no per-object Python objects).

    Attributes:
        boxes: ``[n, 4]`` float32 ``(x1, y1, x2, y2)`` in source pixels, clipped to the image.
        scores: ``[n]`` float32, descending.
        class_ids: ``[n]`` int64 class indices.
        names: class names used by :attr:`labels` (``None``: labels are the indices).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: Sequence[str] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def labels(self) -> list[str]:
        """Class name per detection (the index as text when no name is known)."""
        names = self.names or ()
        count = len(names)
        return [names[i] if 0 <= i < count else str(i) for i in self.class_ids.tolist()]

    @classmethod
    def empty(cls, names: Sequence[str] | None = None) -> Detections:
        """Return an image's detections with no objects."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), names)


def check_nms_method(method: str) -> str:
    """Return ``method`` if it is one of :data:`NMS_METHODS`, else raise :class:`ConfigError`."""
    if method not in NMS_METHODS:
        raise ConfigError(f'nms_method: {method!r}, expected one of {", ".join(NMS_METHODS)}')
    return method


def _have_opencv() -> bool:
    global _HAVE_OPENCV
    if _HAVE_OPENCV is None:
        try:
            import cv2  # noqa: F401
            _HAVE_OPENCV = True
        except ImportError:
            _HAVE_OPENCV = False
    return _HAVE_OPENCV


def _have_opencv_nms() -> bool:
    """OpenCV with ``cv2.dnn.NMSBoxesBatched`` (4.7+; Ubuntu 22.04's python3-opencv is 4.5.4,
    Debian 12's 4.6.0)."""
    if not _have_opencv():
        return False
    import cv2

    return hasattr(cv2.dnn, 'NMSBoxesBatched')


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None = None,
        iou_threshold: float = 0.45, max_det: int | None = None,
        method: str = 'auto') -> np.ndarray:
    """Greedy (class-aware when ``class_ids`` is given) non-maximum suppression.

    Args:
        boxes: ``[n, 4]`` ``(x1, y1, x2, y2)`` with ``x1 <= x2``, ``y1 <= y2``.
        scores: ``[n]`` scores (no threshold is applied here).
        class_ids: ``[n]`` integer classes; ``None`` suppresses across classes.
        iou_threshold: a box is suppressed when its IoU with a kept box is above this.
        max_det: keep at most this many (the highest-scoring) boxes.
        method: ``'opencv'``, ``'numpy'`` or ``'auto'``: OpenCV when importable and there are
            at most :data:`AUTO_OPENCV_MAX_CANDIDATES` boxes, else numpy (the faster of the two
            in each regime; both give identical results).

    Returns:
        Indices into ``boxes`` of the kept boxes, by descending score (ties: lower index).
    """
    if check_nms_method(method) == 'auto':
        use_opencv = len(scores) <= AUTO_OPENCV_MAX_CANDIDATES and _have_opencv_nms()
        method = 'opencv' if use_opencv else 'numpy'
    if method == 'opencv':
        return nms_opencv(boxes, scores, class_ids, iou_threshold, max_det)
    return nms_numpy(boxes, scores, class_ids, iou_threshold, max_det)


def nms_opencv(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None = None,
               iou_threshold: float = 0.45, max_det: int | None = None) -> np.ndarray:
    """:func:`nms` through ``cv2.dnn.NMSBoxesBatched`` (``cv2.dnn.NMSBoxes`` without classes)."""
    import cv2

    if len(scores) == 0:
        return np.zeros(0, np.intp)
    scores = np.asarray(scores, np.float32)
    xywh = np.empty((len(boxes), 4), np.float32)
    xywh[:, :2] = boxes[:, :2]
    np.subtract(boxes[:, 2:], boxes[:, :2], out=xywh[:, 2:])
    # Where OpenCV differs from ONNX's NonMaxSuppression, numpy takes over: OpenCV keeps only
    # scores > 0, and counts two empty boxes (zero width or height, e.g. clipped at the image
    # border) as overlapping fully wherever they are, so it would drop all but one per class.
    if scores.min() <= 0 or xywh[:, 2:].min() <= 0 or \
            class_ids is not None and not _have_opencv_nms():  # OpenCV < 4.7: identical
        return nms_numpy(boxes, scores, class_ids, iou_threshold, max_det)
    # Python lists convert to std::vector<Rect2d> faster than numpy arrays do (measured).
    rects = xywh.tolist()
    dnn: Any = cv2.dnn  # its stubs want sequences; numpy arrays are accepted
    if class_ids is None:
        kept = dnn.NMSBoxes(rects, scores, 0.0, float(iou_threshold))
    else:
        kept = dnn.NMSBoxesBatched(rects, scores, np.asarray(class_ids, np.int32), 0.0,
                                   float(iou_threshold))
    keep = np.asarray(kept, np.intp).reshape(-1)
    return keep if max_det is None else keep[:max_det]


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None = None,
              iou_threshold: float = 0.45, max_det: int | None = None) -> np.ndarray:
    """:func:`nms` in vectorised NumPy (no Python loop over boxes or classes).

    A sweep over boxes sorted by (class, x1) yields every same-class pair that overlaps in x;
    the pairs whose IoU is above the threshold are suppression edges from the higher-ranked
    box (score, then index) to the lower. The greedy result is the unique fixed point of
    ``keep[j] = not any(keep[i] for edges i -> j)``: iterating from all-kept reaches it after
    (longest suppression chain + 1) rounds, usually 2-4. Huge pair counts fall back to a loop
    over kept boxes.
    """
    count = len(scores)
    if count == 0:
        return np.zeros(0, np.intp)
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind='stable')  # rank order: score, then lower index
    # Sweep keys: class-separated x1, so that a box's overlap range stays within its class.
    key = boxes[:, 0].astype(np.float64)
    if class_ids is not None:
        span = float(boxes[:, 2].max() - min(boxes[:, 0].min(), 0.0)) + 1.0
        key += np.asarray(class_ids, np.float64) * span
    sweep = np.argsort(key, kind='stable')
    sorted_key = key[sweep]
    end_key = sorted_key + (boxes[sweep, 2] - boxes[sweep, 0])
    later = np.searchsorted(sorted_key, end_key, 'left') - np.arange(1, count + 1)
    np.maximum(later, 0, out=later)
    pairs = int(later.sum())
    if pairs > _PAIR_LIMIT:
        classes = None if class_ids is None else np.asarray(class_ids)[order]
        keep = order[_greedy_loop(np.take(boxes, order, axis=0), classes, iou_threshold,
                                  max_det)]
    else:
        keep = _greedy_pairs(boxes, scores, sweep, later, pairs, iou_threshold)
        keep = keep[np.argsort(-scores[keep], kind='stable')]
    return keep if max_det is None else keep[:max_det]


def _greedy_pairs(boxes: np.ndarray, scores: np.ndarray, sweep: np.ndarray,
                  later: np.ndarray, pairs: int, threshold: float) -> np.ndarray:
    """Greedy NMS given, per box ``sweep[p]``, its ``later[p]`` overlap partners after it."""
    count = len(boxes)
    if pairs == 0:
        return np.arange(count)
    first = np.repeat(np.arange(count), later)
    run_start = np.repeat(np.cumsum(later) - later, later)
    second = first + 1 + (np.arange(pairs) - run_start)
    first, second = sweep[first], sweep[second]
    a, b = np.take(boxes, first, axis=0), np.take(boxes, second, axis=0)
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    np.maximum(width, 0, out=width)
    np.maximum(height, 0, out=height)
    inter = width * height
    areas = _areas(boxes)
    with np.errstate(divide='ignore', invalid='ignore'):
        edges = inter / (areas[first] + areas[second] - inter) > threshold
    first, second = first[edges], second[edges]
    # Orient each edge from the higher-ranked box (higher score, then lower index).
    s1, s2 = scores[first], scores[second]
    swap = (s2 > s1) | ((s2 == s1) & (second < first))
    source = np.where(swap, second, first)
    target = np.where(swap, first, second)
    keep = np.ones(count, bool)
    while True:
        new = np.ones(count, bool)
        new[target[keep[source]]] = False
        if np.array_equal(new, keep):
            return np.flatnonzero(keep)
        keep = new


def _iou_rows(box: np.ndarray, area: np.float32, others: np.ndarray,
              areas: np.ndarray) -> np.ndarray:
    """IoU of one box with ``others`` (as ONNX's reference: intersection / union)."""
    width = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    height = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    np.maximum(width, 0, out=width)
    np.maximum(height, 0, out=height)
    inter = width * height
    with np.errstate(divide='ignore', invalid='ignore'):
        return inter / (area + areas - inter)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _greedy_loop(boxes: np.ndarray, classes: np.ndarray | None, threshold: float,
                 max_det: int | None) -> np.ndarray:
    """Greedy NMS over score-sorted boxes, one kept box per iteration."""
    areas = _areas(boxes)
    remaining = np.arange(len(boxes))
    keep: list[int] = []
    while remaining.size and (max_det is None or len(keep) < max_det):
        first = int(remaining[0])
        keep.append(first)
        rest = remaining[1:]
        drop = _iou_rows(boxes[first], areas[first], boxes[rest], areas[rest]) > threshold
        if classes is not None:
            drop &= classes[rest] == classes[first]
        remaining = rest[~drop]
    return np.asarray(keep, np.intp)


def select_candidates(boxes: np.ndarray, scores: np.ndarray, conf_threshold: float,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (box, class) pairs of one image with ``score >= conf_threshold``.

    Args:
        boxes: ``[N, 4]`` boxes; scores: ``[N, C]`` class scores.

    Returns:
        ``(boxes [k, 4], scores [k], class_ids [k])``, in (box, class) order.
    """
    threshold = np.float32(conf_threshold)
    if _have_opencv() and scores.dtype == np.float32 and scores.shape[0] > 0:
        import cv2

        # Row maxima first (cv2.reduce reads the [N, C] tensor ~3x faster than numpy's max or
        # comparing every score), then only the few rows above the threshold are compared.
        best = cv2.reduce(np.ascontiguousarray(scores), 1, cv2.REDUCE_MAX).reshape(-1)
        rows = np.flatnonzero(best >= threshold)
        sub = np.take(scores, rows, axis=0)
        pair_rows, classes = np.nonzero(sub >= threshold)
        rows = rows[pair_rows]
        return np.take(boxes, rows, axis=0), sub[pair_rows, classes], classes
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    pairs = np.flatnonzero(flat >= threshold)
    rows = pairs // num_classes
    return np.take(boxes, rows, axis=0), flat[pairs], pairs - rows * num_classes


def check_thresholds(conf_threshold: float, nms_threshold: float,
                     max_detections: int | None) -> None:
    """Raise :class:`ConfigError` naming the field when a threshold is out of range."""
    for field, value in (('conf_threshold', conf_threshold), ('nms_threshold', nms_threshold)):
        if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
            raise ConfigError(f'{field}: {value!r} is outside [0, 1]')
    if max_detections is not None and int(max_detections) < 1:
        raise ConfigError(f'max_detections: {max_detections!r} must be at least 1')


def postprocess(boxes: np.ndarray, scores: np.ndarray,
                transforms: Sequence[LetterboxTransform], conf_threshold: float = 0.25,
                nms_threshold: float = 0.45, max_detections: int | None = 100,
                names: Sequence[str] | None = None, nms_method: str = 'auto',
                class_agnostic: bool = False) -> list[Detections]:
    """Turn the model's ``boxes [B, N, 4]`` / ``scores [B, N, C]`` into detections per image.

    Only the first ``len(transforms)`` batch entries are used (fixed-batch engines may run
    padded batches). Boxes come back in source pixels through each image's transform.
    """
    check_thresholds(conf_threshold, nms_threshold, max_detections)
    check_nms_method(nms_method)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 3 \
            or scores.shape[:2] != boxes.shape[:2]:
        raise ModelError(f'outputs boxes {boxes.shape} / scores {scores.shape}: expected '
                         '[B, N, 4] and [B, N, C]')
    if len(transforms) > boxes.shape[0]:
        raise ModelError(f'outputs: batch {boxes.shape[0]} < {len(transforms)} images')
    results = []
    for index, transform in enumerate(transforms):
        cand_boxes, cand_scores, cand_classes = select_candidates(
            boxes[index], scores[index], conf_threshold)
        if len(cand_scores) == 0:
            results.append(Detections.empty(names))
            continue
        cand_boxes = transform.to_source(cand_boxes)
        keep = nms(cand_boxes, cand_scores, None if class_agnostic else cand_classes,
                   nms_threshold, max_detections, nms_method)
        results.append(Detections(np.take(cand_boxes, keep, axis=0), cand_scores[keep],
                                  cand_classes[keep].astype(np.int64), names))
    return results
