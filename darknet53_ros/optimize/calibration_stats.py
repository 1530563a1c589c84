"""Activation range statistics for INT8 calibration.

Calibration images run through ONNX Runtime with the tensors to quantise added as graph
outputs (:func:`collect_histograms`); every tensor gets a streaming :class:`Histogram` of
``|x|``, from which one of three methods picks the clipping threshold ``amax``: ``minmax``
(max ``|x|``), ``percentile`` (of ``|x|``) or ``entropy`` (TensorRT's KL divergence method over
a 2048-bin histogram of ``|x|``, 128 quantised bins).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from typing import Any, Literal

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.progress import progress_bar

METHODS = ('entropy', 'percentile', 'minmax')
HIST_BINS = 2048
"""Histogram bins over ``[0, max |x|]`` used by the percentile and entropy methods."""
QUANT_BINS = 128
"""Quantised levels of ``|x|`` that the entropy method compares against (TensorRT's 128)."""

Method = Literal['entropy', 'percentile', 'minmax']


class Histogram:
    """Streaming histogram of ``|x|`` over ``[0, limit]`` with a fixed number of bins.

    When a batch exceeds ``limit`` the range doubles (adjacent bins merge) until it fits, so
    counts stay exact up to the bin width. ``amax`` is the exact running maximum of ``|x|``.
    """

    def __init__(self, bins: int = HIST_BINS) -> None:
        if bins < QUANT_BINS or bins % 2:
            raise ConfigError(f'histogram bins {bins}: need an even number >= {QUANT_BINS}')
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.limit = 0.0
        self.amax = 0.0

    @property
    def bin_width(self) -> float:
        """Width of one bin (0 before any non-zero value)."""
        return self.limit / self.bins

    def update(self, values: np.ndarray) -> None:
        """Add the absolute values of ``values`` (any shape, finite floats)."""
        data = np.abs(np.asarray(values, np.float32).ravel())
        if data.size == 0:
            return
        top = float(data.max())
        if not np.isfinite(top):
            raise ModelError('calibration produced a non-finite activation (inf/nan)')
        self.amax = max(self.amax, top)
        if self.limit == 0.0:
            if top == 0.0:
                self.counts[0] += data.size
                return
            self.limit = top
        while top > self.limit:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(self.bins // 2, np.int64)])
            self.limit *= 2.0
        index = np.minimum((data * np.float32(self.bins / self.limit)).astype(np.int64),
                           self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    def amax_for(self, method: str, percentile: float = 99.99) -> float:
        """The clipping threshold for ``method`` (one of :data:`METHODS`)."""
        if method == 'minmax':
            return self.amax
        if self.limit == 0.0:
            return 0.0
        if method == 'percentile':
            return percentile_threshold(self.counts, self.bin_width, percentile)
        if method == 'entropy':
            return min(entropy_threshold(self.counts, self.bin_width), self.amax)
        raise ConfigError(f'calibration method {method!r}: expected one of {METHODS}')


def minmax_threshold(values: np.ndarray) -> float:
    """The min-max threshold: ``max |x|``."""
    data = np.asarray(values)
    return float(np.abs(data).max()) if data.size else 0.0


def percentile_threshold(counts: np.ndarray, bin_width: float, percentile: float) -> float:
    """The ``percentile`` of ``|x|`` from a histogram over ``[0, len(counts) * bin_width]``.

    Returns the upper edge of the first bin whose cumulative share reaches ``percentile``.
    """
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f'percentile {percentile}: must be in (0, 100]')
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    cdf = np.cumsum(counts) / total
    index = int(np.searchsorted(cdf, percentile / 100.0 - 1e-12))
    return float(min(index + 1, len(counts)) * bin_width)


def entropy_threshold(counts: np.ndarray, bin_width: float, quant_bins: int = QUANT_BINS,
                      start: int | None = None) -> float:
    """TensorRT-style entropy calibration: the threshold minimising KL(P || Q).

    For every candidate ``i`` (bins kept, from ``quant_bins`` up to the last non-empty bin),
    ``P`` is the histogram clipped to ``i`` bins with the outliers added to the last kept bin,
    and ``Q`` is the first ``i`` bins merged into ``quant_bins`` levels and spread back
    uniformly over the non-empty bins of each level (a bin where ``P > 0`` but ``Q = 0`` costs
    as if ``Q = 1e-12``). Returns the upper edge of the best ``i``. All candidates are
    evaluated at once from prefix sums (``O(candidates * quant_bins)``).
    """
    hist = np.asarray(counts, np.float64)
    total = hist.sum()
    if total <= 0:
        return 0.0
    last = int(np.flatnonzero(hist)[-1]) + 1
    if last <= quant_bins:
        return float(last * bin_width)
    first = quant_bins if start is None else min(max(start, quant_bins), last)
    zero = np.zeros(1)
    csum = np.concatenate([zero, np.cumsum(hist)])
    nonzero = np.concatenate([zero, np.cumsum(hist > 0)])
    hlogh = np.concatenate([zero, np.cumsum(hist * np.log(np.where(hist > 0, hist, 1.0)))])
    cand = np.arange(first, last + 1)
    edges = (np.arange(quant_bins + 1)[None, :] * cand[:, None]) // quant_bins
    sums = csum[edges[:, 1:]] - csum[edges[:, :-1]]
    filled = nonzero[edges[:, 1:]] - nonzero[edges[:, :-1]]
    per_bin = np.divide(sums, filled, out=np.zeros_like(sums), where=filled > 0)
    h_last = hist[cand - 1]
    inner = sums.copy()  # mass of bins 0 .. i-2 per level (the last bin is handled apart)
    inner[:, -1] -= h_last
    log_per = np.log(np.where(inner > 0, per_bin, 1.0))
    q_total = csum[cand]
    valid = q_total > 0  # all kept bins empty: Q is undefined, the candidate is skipped
    q_total = np.where(valid, q_total, 1.0)
    # sum_j p_j log p_j and sum_j p_j log q_j over j < i - 1, with p_j = h_j / total
    own = (hlogh[cand - 1] - csum[cand - 1] * np.log(total)) / total
    cross = (np.sum(np.where(inner > 0, inner * log_per, 0.0), axis=1)
             - csum[cand - 1] * np.log(q_total)) / total
    p_last = (h_last + total - csum[cand]) / total
    q_last = np.where(h_last > 0, per_bin[:, -1] / q_total, 1e-12)
    safe_p = np.where(p_last > 0, p_last, 1.0)
    tail = np.where(p_last > 0, p_last * (np.log(safe_p) - np.log(q_last)), 0.0)
    kl = np.where(valid, own - cross + tail, np.inf)
    return float(cand[int(np.argmin(kl))] * bin_width)


# --------------------------------------------------------------------------------------------
# Calibration run (ONNX Runtime)


def cpu_session(model: Any, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for an in-memory ``onnx.ModelProto`` (quiet logging)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=['CPUExecutionProvider'])


def collect_histograms(model: Any, tensors: Sequence[str], samples: Iterable[np.ndarray],
                       batch_size: int = 1, progress: bool = True) -> dict[str, Histogram]:
    """Run ``samples`` through ``model`` on ONNX Runtime; histogram every tensor in ``tensors``.

    ``samples`` are preprocessed ``[3, H, W]`` float32 arrays, consumed lazily.
    """
    import onnx
    from onnx import TensorProto, helper

    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    existing = {o.name for o in calib.graph.output}
    for name in tensors:
        if name not in existing:
            calib.graph.output.append(helper.make_empty_tensor_value_info(name))
            calib.graph.output[-1].type.tensor_type.elem_type = TensorProto.FLOAT
    session = cpu_session(calib)
    input_name = session.get_inputs()[0].name
    hists = {name: Histogram() for name in tensors}
    total = len(samples) if isinstance(samples, Sized) else None
    bar = progress_bar(progress, 'calibrating', total, 'img')
    batch: list[np.ndarray] = []

    def flush() -> None:
        # The feed stays referenced while the outputs are read: ONNX Runtime 1.19 (the last
        # release for Python 3.8) returns a graph input fetched as an output (the first layer's
        # input is histogrammed) as an alias of the feed's buffer without keeping the feed
        # alive, so a temporary feed left that histogram reading freed memory (NaN, or a
        # too-large input scale).
        feed = np.stack(batch)
        values = session.run(list(tensors), {input_name: feed})
        for name, value in zip(tensors, values):
            hists[name].update(value)
        del values, feed
        bar.update(len(batch))
        batch.clear()

    try:
        for sample in samples:
            batch.append(sample)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    finally:
        bar.close()
    return hists
