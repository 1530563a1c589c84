"""IoU matrices and gated assignment against independent references."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.tracking.assignment import match, solver
from darknet53_ros.tracking.geometry import iou_matrix, xywh_to_xyxy, xyxy_to_xywh


def _iou_reference(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, 40, (n, 2))], axis=1)


def test_iou_matrix_matches_pairwise_reference() -> None:
    rng = np.random.default_rng(0)
    for n, m in ((0, 3), (3, 0), (1, 1), (7, 5)):
        a, b = _boxes(rng, n), _boxes(rng, m)
        got = iou_matrix(a, b)
        assert got.shape == (n, m)
        for i, j in itertools.product(range(n), range(m)):
            assert got[i, j] == pytest.approx(_iou_reference(list(a[i]), list(b[j])))


def test_iou_matrix_hypothesis() -> None:
    hypothesis = pytest.importorskip('hypothesis')
    st = pytest.importorskip('hypothesis.strategies')

    coord = st.floats(-1e3, 1e3, allow_nan=False)
    box = st.tuples(coord, coord, st.floats(0, 500), st.floats(0, 500)).map(
        lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.lists(box, max_size=5), st.lists(box, max_size=5))
    def check(a: list, b: list) -> None:
        got = iou_matrix(np.array(a).reshape(-1, 4), np.array(b).reshape(-1, 4))
        assert ((got >= 0) & (got <= 1 + 1e-12)).all()
        for i, j in itertools.product(range(len(a)), range(len(b))):
            assert got[i, j] == pytest.approx(_iou_reference(a[i], b[j]), abs=1e-9)

    check()


def test_box_conversions_round_trip() -> None:
    boxes = _boxes(np.random.default_rng(1), 6)
    assert np.allclose(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)


def _brute_force(cost: np.ndarray, limit: float) -> float:
    """Best total of (cost - limit) over matchings of admissible pairs (exhaustive)."""
    n, m = cost.shape
    best = 0.0
    cols = list(range(m)) + [None] * n
    for perm in set(itertools.permutations(cols, n)):
        total = sum(cost[i, j] - limit for i, j in enumerate(perm)
                    if j is not None and cost[i, j] < limit)
        best = min(best, total)
    return best


@pytest.mark.parametrize('seed', range(30))
def test_match_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    cost = rng.uniform(0, 1, (n, m))
    cost[rng.random((n, m)) < 0.3] = np.inf
    rows, cols = match(cost, 0.7)
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert (cost[rows, cols] < 0.7).all()
    assert float(np.sum(cost[rows, cols] - 0.7)) == pytest.approx(_brute_force(cost, 0.7))


def test_lap_and_scipy_agree() -> None:
    pytest.importorskip('lap')
    pytest.importorskip('scipy')
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, m = int(rng.integers(0, 30)), int(rng.integers(0, 30))
        cost = 1.0 - iou_matrix(_boxes(rng, n), _boxes(rng, m))
        a = match(cost, 0.8, solver('lap'))
        b = match(cost, 0.8, solver('scipy'))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_solver_names() -> None:
    with pytest.raises(ConfigError):
        solver('hungarian')
    assert callable(solver('auto'))
