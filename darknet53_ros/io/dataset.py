"""Reading detection datasets (no PyTorch): ``dataset.yaml``, splits, Darknet labels, images.

A dataset (as ``darknet53 synth`` writes it) is a folder with ``dataset.yaml``: class
``names`` and per split an image list, an image folder, a Darknet label folder
(``class cx cy w h`` normalised, one file per image) and optionally COCO ``annotations.json``.
Paths in the description are relative to its folder.
"""
from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.sources import read_image

__all__ = ['DATASET_FILE', 'DATASET_FORMAT', 'NAMES_FILE', 'Sample', 'SplitData', 'load_image',
           'load_dataset_description', 'load_split', 'read_labels', 'read_yaml']

DATASET_FORMAT = 'darknet53_ros.training.synthetic/1'
"""``format`` of the descriptions ``darknet53 synth`` writes."""
DATASET_FILE = 'dataset.yaml'
NAMES_FILE = 'classes.names'


@dataclass(frozen=True)
class Sample:
    """One image of a split and its label file."""

    image: Path
    label: Path


@dataclass
class SplitData:
    """A dataset split: samples, class names, and the COCO annotation file if present."""

    name: str
    samples: list[Sample]
    names: list[str]
    annotations: Path | None = None
    category_ids: list[int] | None = None
    root: Path | None = None


def load_split(data: str | os.PathLike[str], split: str = 'train') -> SplitData:
    """Read split ``split`` of a ``dataset.yaml`` (or the folder holding one)."""
    desc = load_dataset_description(data)
    splits = desc['splits']
    if split not in splits:
        raise DatasetError(f'{data}: no split {split!r} (have: {", ".join(sorted(splits))})')
    entry = splits[split]
    root = Path(desc['root'])
    list_path = Path(entry['list'])
    labels_dir = Path(entry['labels'])
    try:
        lines = list_path.read_text(encoding='utf-8').splitlines()
    except OSError as exc:
        raise DatasetError(f'{list_path}: cannot read image list: {exc}') from None
    samples = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        image = Path(line) if Path(line).is_absolute() else root / line
        samples.append(Sample(image, labels_dir / f'{image.stem}.txt'))
    if not samples:
        raise DatasetError(f'{list_path}: split {split!r} has no images')
    annotations = Path(entry['annotations'])
    category_ids = desc.get('category_ids')
    return SplitData(split, samples, list(desc['names']),
                     annotations if annotations.is_file() else None,
                     list(category_ids) if isinstance(category_ids, list) else None, root)


def read_labels(path: Path, width: int, height: int, classes: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read a Darknet label file (``class cx cy w h`` normalised) as pixel boxes and classes.

    A missing file means no objects.
    """
    if not path.exists():
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    boxes, ids = [], []
    for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except (ValueError, IndexError):
            raise DatasetError(f'{path}:{number}: expected "class cx cy w h", got '
                               f'{line!r}') from None
        if len(parts) != 5 or not 0 <= cls < classes or w <= 0 or h <= 0:
            raise DatasetError(f'{path}:{number}: invalid label {line!r} ({classes} classes)')
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                      (cy + h / 2) * height])
        ids.append(cls)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(ids, np.int64)


def load_image(path: Path) -> np.ndarray:
    """Read a dataset image as BGR (through :func:`~darknet53_ros.io.sources.read_image`);
    an unreadable file raises :class:`DatasetError`."""
    frame = read_image(path, 0) if path.is_file() else None
    if frame is None or frame.image is None:
        raise DatasetError(f'{path}: cannot read image')
    return frame.image


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping; DatasetError when unreadable or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f'{path}: cannot read dataset description: {exc}') from exc
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: dataset description must be a mapping')
    return data


def load_dataset_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``dataset.yaml`` (or the folder holding one); split paths become absolute.

    Returns the mapping with ``root`` (the folder) added and each ``splits.<name>`` entry's
    ``images``, ``labels``, ``annotations`` and ``list`` resolved against it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILE
    data = read_yaml(path)
    names = data.get('names')
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(f'{path}: field "names" must be a non-empty list of strings')
    splits = data.get('splits')
    if not isinstance(splits, dict) or not splits:
        raise DatasetError(f'{path}: field "splits" must map split names to entries')
    root = path.parent.resolve()
    resolved = {}
    for name, entry in splits.items():
        if not isinstance(entry, dict):
            raise DatasetError(f'{path}: splits.{name} must be a mapping')
        entry = dict(entry)
        for key in ('images', 'labels', 'annotations', 'list'):
            if key not in entry:
                raise DatasetError(f'{path}: splits.{name}.{key} is missing')
            entry[key] = str(root / str(entry[key]))
        resolved[name] = entry
    return {**data, 'root': str(root), 'splits': resolved}
