"""Darknet ``.names`` files: one class name per line."""
from __future__ import annotations

from pathlib import Path

from darknet53_ros.errors import DarknetError


def read_names(path: str | Path) -> list[str]:
    """Read a Darknet ``.names`` file (one class name per line, blank lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except OSError as exc:
        raise DarknetError(f'{path}: cannot read class names: {exc}') from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DarknetError(f'{path}: no class names found')
    return names
