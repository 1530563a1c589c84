"""Tests for darknet53_ros.tools.timing (order, warm-up, paired ratios; no timing asserted)."""
from __future__ import annotations

import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.tools.timing import Timing, paired_timing


def test_rounds_alternate_order_and_discard_warmup():
    calls: list[str] = []
    paired = paired_timing({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b'),
                            'c': lambda: calls.append('c') or 7}, rounds=3, warmup=1)
    assert ''.join(calls) == 'abc' 'cba' 'abc' 'cba'
    assert all(len(t.samples) == 3 for t in paired.timings.values())
    assert paired.results['c'] == 7 and 'load average' in paired.load_text()


def test_ratio_is_per_round():
    paired = paired_timing({'a': lambda: None, 'b': lambda: None}, rounds=4, warmup=0)
    paired.timings['a'].samples = [1.0, 2.0, 4.0, 8.0]
    paired.timings['b'].samples = [2.0, 4.0, 8.0, 16.0]
    ratio = paired.ratio('b', 'a')
    assert (ratio.median, ratio.p10, ratio.p90) == (2.0, 2.0, 2.0)  # medians would say 2 too
    assert paired.ratio(('a', 'b'), 'a').median == 3.0
    assert str(ratio).startswith('2.00x')


def test_timing_statistics():
    timing = Timing([1.0, 2.0, 3.0, 4.0, 100.0])
    assert timing.median == 3.0 and timing.stat(99) > 90


@pytest.mark.parametrize('functions, rounds, warmup', [({}, 1, 0), ({'a': int}, 0, 0),
                                                       ({'a': int}, 1, -1)])
def test_bad_arguments(functions, rounds, warmup):
    with pytest.raises(ConfigError):
        paired_timing(functions, rounds, warmup)
