"""Paired, interleaved timing: the one helper every comparison in ``darknet53 bench`` and
``benchmarks/`` uses.

Each round calls every function once, in declaration order on even rounds and in reverse on
odd rounds (ABBA for two), so that cache warmth, frequency boosts and the load of a shared
machine fall on all candidates alike; the first ``warmup`` rounds are discarded. A comparison
is the distribution of per-round ratios (median, p10, p90), never a ratio of separately
measured medians. The machine's load average is recorded before and after.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
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
                  warmup: int = 3) -> Paired:
    """Time every function once per round, alternating the order each round (ABBA).

    Returns the samples of the ``rounds`` timed rounds (after ``warmup`` discarded ones) and
    each function's last result in ``results``.

    Raises:
        ConfigError: no functions, ``rounds < 1`` or ``warmup < 0``.
    """
    if not functions or rounds < 1 or warmup < 0:
        raise ConfigError('paired timing needs functions, rounds >= 1 and warmup >= 0')
    names = list(functions)
    timings = {name: Timing() for name in names}
    results: dict[str, Any] = {}
    load_before = load_average()
    clock = time.perf_counter
    for index in range(warmup + rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            start = clock()
            results[name] = functions[name]()
            elapsed = (clock() - start) * 1e3
            if index >= warmup:
                timings[name].samples.append(elapsed)
    return Paired(timings, load_before, load_average(), results)
