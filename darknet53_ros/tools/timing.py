"""Paired, interleaved timing: the one helper every comparison in ``darknet53 bench`` and
``benchmarks/`` uses.

Each round calls every function once, in declaration order on even rounds and in reverse on
odd rounds (ABBA for two), so that cache warmth, frequency boosts and the load of a shared
machine fall on all candidates alike; the first ``warmup`` rounds are discarded. Functions can
be grouped into *blocks* that always run in their own order (a pipeline's pre-process, infer,
post-process): the blocks alternate, so each stage is timed right after the stage that
precedes it in real use (after an inference run, caches and thread pools are cold, which moved
pre-processing from 0.15 to 0.36 ms here), never after a competitor's copy of itself. A comparison
is the distribution of per-round ratios (median, p10, p90), never a ratio of separately
measured medians. The machine's load average is recorded before and after.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import os
import time
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError


@dataclass
class Timing:
    """Latency samples of one function, in milliseconds."""

    samples: list[float] = field(default_factory=list)

    def stat(self, q: float) -> float:
        """The ``q`` percentile (50 = median)."""
        return float(np.percentile(self.samples, q)) if self.samples else float('nan')

    @property
    def median(self) -> float:
        """Median in ms."""
        return self.stat(50)


@dataclass(frozen=True)
class Ratio:
    """Distribution of a per-round ratio: median and the 10th/90th percentiles."""

    median: float
    p10: float
    p90: float

    def __str__(self) -> str:
        return f'{self.median:.2f}x (p10 {self.p10:.2f}, p90 {self.p90:.2f})'


def load_average() -> tuple[float, float, float] | None:
    """``os.getloadavg()``, or ``None`` where the platform has none."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return one, five, fifteen


@dataclass
class Paired:
    """Samples of functions timed round by round (see :func:`paired_timing`)."""

    timings: dict[str, Timing]
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def per_round(self, *names: str) -> np.ndarray:
        """Per-round sum of the named functions' times (ms)."""
        return np.sum([self.timings[n].samples for n in names], axis=0)

    def ratio(self, slower: str | tuple[str, ...], faster: str | tuple[str, ...]) -> Ratio:
        """Per-round ``time(slower) / time(faster)`` (how many times faster ``faster`` is);
        each side may be a tuple of names whose times add up within the round."""
        num = self.per_round(*((slower,) if isinstance(slower, str) else slower))
        den = self.per_round(*((faster,) if isinstance(faster, str) else faster))
        values = num / den
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        return Ratio(float(p50), float(p10), float(p90))

    def load_text(self) -> str:
        """The load averages before and after, for the report."""
        def fmt(load: tuple[float, float, float] | None) -> str:
            return 'n/a' if load is None else '/'.join(f'{v:.2f}' for v in load)
        return (f'load average (1/5/15 min) before {fmt(self.load_before)}, after '
                f'{fmt(self.load_after)}, {os.cpu_count()} CPUs')


def paired_timing(functions: Mapping[str, Callable[[], Any]], rounds: int,
                  warmup: int = 3, blocks: Sequence[Sequence[str]] | None = None,
                  gap: float = 0.0) -> Paired:
    """Time every function once per round, alternating the order each round (ABBA).

    ``blocks`` (default: one block per function) groups the names into blocks whose members
    always run in the given order; the order of the blocks alternates round by round. ``gap``
    seconds of idle (untimed) precede every block, so that no block starts while the thread
    pool of the one before is still busy (ONNX Runtime's workers spin after a run). Returns
    the samples of the ``rounds`` timed rounds (after ``warmup`` discarded ones) and each
    function's last result in ``results``.

    Raises:
        ConfigError: no functions, ``rounds < 1``, ``warmup < 0``, ``gap < 0``, or ``blocks``
            that do not name every function exactly once.
    """
    if not functions or rounds < 1 or warmup < 0 or not gap >= 0:
        raise ConfigError('paired timing needs functions, rounds >= 1, warmup >= 0 and '
                          'gap >= 0')
    names = list(functions)
    groups = [list(block) for block in blocks] if blocks is not None else [[n] for n in names]
    if sorted(n for block in groups for n in block) != sorted(names) or not all(groups):
        raise ConfigError(f'paired timing blocks {groups} must name each of {names} once')
    timings = {name: Timing() for name in names}
    results: dict[str, Any] = {}
    load_before = load_average()
    clock = time.perf_counter
    for index in range(warmup + rounds):
        for block in (groups if index % 2 == 0 else groups[::-1]):
            if gap:
                time.sleep(gap)
            for name in block:
                start = clock()
                results[name] = functions[name]()
                elapsed = (clock() - start) * 1e3
                if index >= warmup:
                    timings[name].samples.append(elapsed)
    return Paired(timings, load_before, load_average(), results)
