"""Hypothesis for the property tests, or stand-ins that skip them where it is not installed.

A robot's ``python3`` holds what ``package.xml``'s rosdep keys install, and hypothesis has no
key there: ``colcon test`` on a robot must still collect and pass every other test. Test
modules import ``given``, ``settings``, ``st`` and ``HealthCheck`` from here instead of from
hypothesis; without hypothesis, ``@given`` marks the test skipped with the reason and the
strategy expressions built at import time (``st.integers(0, 9).map(f)``, ``@st.composite``)
evaluate to inert placeholders.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

REASON = 'hypothesis not installed (property tests need it: pip install hypothesis)'

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:
    HAVE_HYPOTHESIS = False

    class _Inert:
        """Absorbs attribute access and calls: a strategy, ``HealthCheck.too_slow``, ..."""

        def __getattr__(self, name: str) -> _Inert:
            if name.startswith('__'):
                raise AttributeError(name)
            return self

        def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
            return self

        def __iter__(self) -> Any:
            return iter(())

    class _Strategies(_Inert):
        @staticmethod
        def composite(fn: Callable[..., Any]) -> Callable[..., _Inert]:
            return _Inert()

    st = _Strategies()  # type: ignore[assignment]
    HealthCheck = _Inert()  # type: ignore[assignment,misc]

    def given(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:  # type: ignore[no-redef]
        def decorate(fn: Callable[..., Any]) -> Any:
            return pytest.mark.skip(reason=REASON)(fn)

        return decorate

    class settings:  # type: ignore[no-redef]  # noqa: N801 - hypothesis' name
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
            return fn

        @staticmethod
        def register_profile(*args: Any, **kwargs: Any) -> None:
            pass

        @staticmethod
        def load_profile(*args: Any, **kwargs: Any) -> None:
            pass


__all__ = ['HAVE_HYPOTHESIS', 'REASON', 'HealthCheck', 'given', 'settings', 'st']
