"""Gated linear assignment: SciPy's ``linear_sum_assignment``, or ``lap``/``lapx`` when
installed (both solve the same problem; tests check they agree).

:func:`match` pairs rows (tracks) with columns (detections) to minimise the summed cost over
the chosen pairs, where only pairs with ``cost < max_cost`` may be chosen and choosing a pair
is worth ``max_cost - cost``: the ``cost_limit`` problem of ByteTrack's ``lap.lapjv`` call.
Rows and columns without an admissible pair are removed first, and a pair that is the only
admissible one of both its row and its column is taken without the solver, so the solver sees
only the contested part (small at any density of objects).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Tuple

import numpy as np

from darknet53_ros.errors import ConfigError

__all__ = ['SOLVERS', 'match', 'solver']

SOLVERS = ('auto', 'lap', 'scipy')
"""``auto``: lap (lapx) when installed, else SciPy."""

Pairs = Tuple[np.ndarray, np.ndarray]
_cache: dict = {}


def _lap_solve(lap: Any) -> Callable[[np.ndarray], Pairs]:
    def solve(cost: np.ndarray) -> Pairs:
        _, rows_to_cols, _ = lap.lapjv(cost, extend_cost=True)
        rows = np.flatnonzero(rows_to_cols >= 0)
        return rows, rows_to_cols[rows].astype(np.intp)
    return solve


def _scipy_solve(cost: np.ndarray) -> Pairs:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.intp), cols.astype(np.intp)


def solver(name: str = 'auto') -> Callable[[np.ndarray], Pairs]:
    """The solver function for ``name`` (see :data:`SOLVERS`).

    Raises:
        ConfigError: unknown name, or the named (or, for ``auto``, any) solver is missing.
    """
    if name not in SOLVERS:
        raise ConfigError(f'assignment solver {name!r}: one of {", ".join(SOLVERS)}')
    if name in _cache:
        return _cache[name]
    found: Callable[[np.ndarray], Pairs] | None = None
    if name in ('auto', 'lap'):
        try:
            found = _lap_solve(importlib.import_module('lap'))
        except ImportError:
            if name == 'lap':
                raise ConfigError('assignment solver lap: pip install lapx') from None
    if found is None:
        try:
            importlib.import_module('scipy.optimize')
        except ImportError:
            raise ConfigError('the tracker needs SciPy (apt install python3-scipy, or pip '
                              'install scipy) or lap (pip install lapx)') from None
        found = _scipy_solve
    _cache[name] = found
    return found


def match(cost: np.ndarray, max_cost: float,
          solve: Callable[[np.ndarray], Pairs] | None = None) -> Pairs:
    """Optimal pairs ``(rows, cols)`` with ``cost < max_cost`` (see module docstring).

    ``cost`` [n, m] may hold ``inf`` for forbidden pairs. Rows come out sorted.
    """
    cost = np.asarray(cost, np.float64)
    empty = np.zeros(0, np.intp)
    if cost.size == 0:
        return empty, empty
    gain = np.where(cost < max_cost, cost - max_cost, 0.0)
    useful = gain < 0
    row_n, col_n = useful.sum(1), useful.sum(0)
    rows, cols = np.nonzero(useful)
    lone = (row_n[rows] == 1) & (col_n[cols] == 1)
    fixed_rows, fixed_cols = rows[lone], cols[lone]
    open_rows, open_cols = row_n > 0, col_n > 0
    open_rows[fixed_rows] = False
    if open_rows.any():
        open_cols[fixed_cols] = False
        rest_rows, rest_cols = np.flatnonzero(open_rows), np.flatnonzero(open_cols)
        sub = gain[np.ix_(rest_rows, rest_cols)]
        r, c = (solve or solver())(sub)
        keep = sub[r, c] < 0
        fixed_rows = np.concatenate([fixed_rows, rest_rows[r[keep]]])
        fixed_cols = np.concatenate([fixed_cols, rest_cols[c[keep]]])
    order = np.argsort(fixed_rows, kind='stable')
    return fixed_rows[order].astype(np.intp), fixed_cols[order].astype(np.intp)
