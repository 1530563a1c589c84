"""One optional progress bar (tqdm when installed and wanted, silent otherwise)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

_T = TypeVar('_T')


class _NoBar:
    """Stands in for a tqdm bar when progress is off or tqdm is missing."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Ignore a status text."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(enabled: bool = True, desc: str = '', total: int | None = None,
                 unit: str = 'it') -> Any:
    """A tqdm bar (``leave=False``) when ``enabled`` and tqdm is installed, else a no-op bar
    with the same ``update``/``set_postfix_str``/``close`` methods."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(desc=desc, total=total, unit=unit, leave=False)
    return _NoBar()


def progress(items: Iterable[_T], enabled: bool = True, desc: str = '',
             total: int | None = None, unit: str = 'it') -> Iterator[_T]:
    """Iterate over ``items`` with a progress bar when ``enabled`` and tqdm is installed."""
    bar = progress_bar(enabled, desc, total, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
