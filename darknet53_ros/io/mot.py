"""MOTChallenge files: sequence folders (``seqinfo.ini``, ``img1/``, ``gt/gt.txt``) and result
files (``frame,id,x,y,w,h,conf,-1,-1,-1``).

Coordinates follow MOTChallenge: frames are numbered from 1 and ``x, y`` (box top-left) are
1-based pixel coordinates, so a box with 0-based pixel-edge corners ``x1, y1`` is written as
``x1 + 1, y1 + 1``. Ground truth and results written by this package use the same convention,
and so do the official MOT16/17/20 files: results of ``darknet53 track`` on a MOTChallenge
sequence are evaluated against its official ground truth as they are.
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Iterable, Sequence, Tuple

import numpy as np

from darknet53_ros.errors import DatasetError
from darknet53_ros.fileio import atomic_write_text

__all__ = ['SeqInfo', 'find_sequences', 'format_results', 'is_sequence', 'read_mot_file',
           'read_seqinfo', 'write_results']

ResultRow = Tuple[int, int, float, float, float, float, float]
"""``(frame (1-based), track id, x1, y1, x2, y2 (0-based pixel edges), confidence)``."""


@dataclass(frozen=True)
class SeqInfo:
    """A MOTChallenge sequence folder's ``seqinfo.ini`` (``[Sequence]``)."""

    folder: Path
    name: str
    frame_rate: float
    length: int
    width: int
    height: int
    image_dir: str = 'img1'
    image_ext: str = '.jpg'

    def image_path(self, frame: int) -> Path:
        """The image of 1-based ``frame`` (``img1/000001.jpg``)."""
        return self.folder / self.image_dir / f'{frame:06d}{self.image_ext}'

    def stamp_ns(self, frame: int) -> int:
        """Time of 1-based ``frame`` from the sequence start, in ns (``frameRate``)."""
        return int(round((frame - 1) * 1e9 / self.frame_rate))


def is_sequence(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a ``seqinfo.ini``."""
    return (Path(folder) / 'seqinfo.ini').is_file()


def read_seqinfo(folder: str | os.PathLike[str]) -> SeqInfo:
    """Read ``folder/seqinfo.ini``.

    Raises:
        DatasetError: missing file, section or key, or a bad value (naming the file).
    """
    path = Path(folder) / 'seqinfo.ini'
    ini = configparser.ConfigParser()
    try:
        ini.read_string(path.read_text(encoding='utf-8'))
        section = ini['Sequence']
        info = SeqInfo(
            folder=Path(folder), name=section.get('name', Path(folder).name),
            frame_rate=float(section.get('frameRate', '0')), length=int(section['seqLength']),
            width=int(section.get('imWidth', '0')), height=int(section.get('imHeight', '0')),
            image_dir=section.get('imDir', 'img1'), image_ext=section.get('imExt', '.jpg'))
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise DatasetError(f'{path}: cannot read: {exc}') from None
    except KeyError as exc:
        raise DatasetError(f'{path}: missing [Sequence] {exc.args[0]}') from None
    except ValueError as exc:
        raise DatasetError(f'{path}: bad value: {exc}') from None
    if info.length < 1 or not info.frame_rate > 0:
        raise DatasetError(f'{path}: seqLength {info.length} and frameRate {info.frame_rate} '
                           'must be positive')
    return info


def find_sequences(folder: str | os.PathLike[str]) -> list[SeqInfo]:
    """The sequence ``folder`` is, or the sequences directly inside it (sorted by name).

    Raises:
        DatasetError: no sequence there.
    """
    root = Path(folder)
    if is_sequence(root):
        return [read_seqinfo(root)]
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_sequence(p)) \
        if root.is_dir() else []
    if not found:
        raise DatasetError(f'{root}: not a MOTChallenge sequence (no seqinfo.ini) and holds '
                           'none')
    return [read_seqinfo(p) for p in found]


def read_mot_file(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """A ground-truth or result file as ``{frame: rows}`` (float64, the file's columns).

    Raises:
        DatasetError: unreadable, or rows with fewer than 6 numbers (naming file and line).
    """
    path = Path(path)
    rows: dict[int, list[list[float]]] = {}
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path}: cannot read: {exc}') from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.replace(' ', '').split(',')]
        except ValueError:
            raise DatasetError(f'{path}:{number}: not comma-separated numbers') from None
        if len(values) < 6:
            raise DatasetError(f'{path}:{number}: {len(values)} columns, expected at least 6')
        rows.setdefault(int(values[0]), []).append(values)
    return {frame: np.asarray(r, np.float64) for frame, r in rows.items()}


def format_results(rows: Iterable[ResultRow]) -> str:
    """Result-file text: ``frame,id,x,y,w,h,conf,-1,-1,-1`` per row (x, y 1-based)."""
    return ''.join(f'{frame},{ident},{x1 + 1:.2f},{y1 + 1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},'
                   f'{conf:.4f},-1,-1,-1\n' for frame, ident, x1, y1, x2, y2, conf in rows)


def write_results(path: str | os.PathLike[str], rows: Sequence[ResultRow]) -> Path:
    """Write a result file atomically (rows sorted by frame, then id); returns its path."""
    path = Path(path)
    atomic_write_text(path, format_results(sorted(rows, key=lambda r: (r[0], r[1]))))
    return path
