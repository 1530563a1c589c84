"""Tests for darknet53_ros.optimize.calibration_stats: histograms and the minmax, percentile and
entropy thresholds."""
from __future__ import annotations

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.optimize import calibration_stats as stats

from ..conftest import requires


def test_minmax_is_max_abs() -> None:
    x = np.array([[-3.5, 1.0], [2.0, 0.25]], np.float32)
    assert stats.minmax_threshold(x) == 3.5
    hist = stats.Histogram()
    hist.update(x)
    assert hist.amax_for('minmax') == 3.5


def test_percentile_of_uniform() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-10, 10, 200_000)
    hist = stats.Histogram()
    hist.update(x)
    expected = np.percentile(np.abs(x), 99.0)
    assert hist.amax_for('percentile', 99.0) == pytest.approx(expected, rel=2e-3)
    assert hist.amax_for('percentile', 100.0) == pytest.approx(np.abs(x).max(), rel=1e-3)
    with pytest.raises(ConfigError):
        hist.amax_for('percentile', 0.0)


def _entropy_reference(counts: np.ndarray, width: float, levels: int = 128) -> float:
    """Direct loop implementation of TensorRT's KL threshold search (for comparison)."""
    hist = counts.astype(np.float64)
    last = int(np.nonzero(hist)[0][-1]) + 1
    best, best_i = np.inf, None
    for i in range(levels, last + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        raw = hist[:i]
        qd = np.zeros(i)
        for j in range(levels):
            lo, hi = j * i // levels, (j + 1) * i // levels
            nz = raw[lo:hi] > 0
            if nz.any():
                qd[lo:hi][nz] = raw[lo:hi].sum() / nz.sum()
        if qd.sum() == 0:
            continue
        p, qd = p / p.sum(), qd / qd.sum()
        mask = p > 0
        kl = np.sum(p[mask] * np.log(p[mask] / np.where(qd[mask] > 0, qd[mask], 1e-12)))
        if kl < best:
            best, best_i = kl, i
    return best_i * width


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_entropy_matches_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_t(3 + seed, 50_000))
    x[rng.random(x.size) < 0.2 * seed] = 0.0
    counts, edges = np.histogram(x, bins=512, range=(0, x.max()))
    got = stats.entropy_threshold(counts, edges[1])
    assert got == pytest.approx(_entropy_reference(counts, edges[1]), rel=1e-9)


def test_entropy_clips_heavy_tail_but_not_uniform() -> None:
    rng = np.random.default_rng(0)
    heavy = stats.Histogram()
    heavy.update(rng.standard_cauchy(100_000))
    assert heavy.amax_for('entropy') < 0.2 * heavy.amax
    uniform = stats.Histogram()
    uniform.update(rng.uniform(-1, 1, 100_000))
    assert uniform.amax_for('entropy') > 0.85


def test_histogram_range_doubles_exactly() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 10_000), rng.uniform(0, 3.5, 10_000)
    hist = stats.Histogram(bins=256)
    hist.update(a)
    hist.update(-b)
    assert hist.amax == pytest.approx(max(a.max(), b.max()))
    assert hist.limit >= hist.amax and hist.counts.sum() == 20_000
    ref, _ = np.histogram(np.abs(np.concatenate([a, b])), bins=256, range=(0, hist.limit))
    assert np.abs(ref - hist.counts).sum() <= 4  # only values on bin edges may differ


@requires('onnx')
def test_feed_outlives_the_outputs_it_may_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime 1.19 returns a fetched graph input as an alias of the feed buffer without
    referencing the feed: the feed must stay alive until every histogram is updated."""
    import weakref

    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)])
    feeds: list = []

    class Session:
        def get_inputs(self) -> list:
            return [type('Input', (), {'name': 'x'})()]

        def run(self, names: list, feed: dict) -> list:
            feeds.append(weakref.ref(feed['x']))
            return [np.array(feed['x']) for _ in names]  # copies stand in for the aliases

    checked = []

    def update(self: stats.Histogram, values: np.ndarray) -> None:
        checked.append(feeds[-1]() is not None)

    monkeypatch.setattr(stats, 'cpu_session', lambda model, threads=None: Session())
    monkeypatch.setattr(stats.Histogram, 'update', update)
    samples = [np.ones((1, 2, 2), np.float32) for _ in range(3)]
    stats.collect_histograms(helper.make_model(graph), ['x', 'y'], samples, batch_size=2,
                             progress=False)
    assert checked == [True] * 4
