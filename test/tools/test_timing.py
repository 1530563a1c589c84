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


def test_blocks_keep_their_order_and_alternate():
    calls: list[str] = []
    functions = {n: (lambda n=n: calls.append(n)) for n in 'abcde'}
    paired_timing(functions, rounds=2, warmup=0, blocks=[('a', 'b', 'c'), ('d',), ('e',)])
    assert ''.join(calls) == 'abcde' 'edabc'


@pytest.mark.parametrize('blocks', [[('a',)], [('a', 'b'), ('b',)], [('a', 'b'), ()],
                                    [('a', 'b', 'c')]])
def test_blocks_must_name_every_function_once(blocks):
    with pytest.raises(ConfigError, match='blocks'):
        paired_timing({'a': int, 'b': int}, rounds=1, warmup=0, blocks=blocks)


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


@pytest.mark.parametrize('functions, rounds, warmup, gap', [
    ({}, 1, 0, 0.0), ({'a': int}, 0, 0, 0.0), ({'a': int}, 1, -1, 0.0), ({'a': int}, 1, 0, -1.0),
    ({'a': int}, 1, 0, float('nan'))])
def test_bad_arguments(functions, rounds, warmup, gap):
    with pytest.raises(ConfigError):
        paired_timing(functions, rounds, warmup, gap=gap)


def test_gap_sleeps_before_every_block_untimed(monkeypatch):
    from darknet53_ros.tools import timing

    sleeps: list[float] = []
    monkeypatch.setattr(timing.time, 'sleep', sleeps.append)
    paired = paired_timing({'a': int, 'b': int, 'c': int}, rounds=2, warmup=1,
                           blocks=[('a', 'b'), ('c',)], gap=0.25)
    assert sleeps == [0.25] * 6 and len(paired.timings['a'].samples) == 2
