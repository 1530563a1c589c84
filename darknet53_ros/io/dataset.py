"""Dataset building blocks (no PyTorch): samples, splits, Darknet labels, images, and the
project's own ``dataset.yaml``.

Layouts (Darknet ``.data``, YOLO data YAML, COCO JSON, ``dataset.yaml``) are read by
:mod:`darknet53_ros.io.dataset_formats` into :class:`SplitData`; whatever the layout, the
ground truth of an image is :func:`read_objects`, which training, ``eval`` and the dataset
check all use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.sources import read_image

__all__ = ['DATASET_FILE', 'DATASET_FORMAT', 'IMAGE_SUFFIXES', 'NAMES_FILE', 'Objects',
           'Sample', 'SplitData', 'darknet_label_path', 'list_images', 'load_dataset_description',
           'load_image', 'parse_label_file', 'read_labels', 'read_objects', 'read_yaml']

DATASET_FORMAT = 'darknet53_ros.training.synthetic/1'
"""``format`` of the descriptions ``darknet53 synth`` writes."""
DATASET_FILE = 'dataset.yaml'
NAMES_FILE = 'classes.names'
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
"""Image files found in image folders (case-insensitive)."""

@dataclass(frozen=True)
class Sample:
    """One image of a split and its ground truth: a Darknet label file (``label``) or inline
    objects (``objects``, from COCO JSON: ``(class, x1, y1, x2, y2, crowd)`` rows in source
    pixels). ``key`` names the image uniquely in its split (its
    path relative to the dataset, or the COCO ``file_name``)."""

    image: Path
    label: Path | None = None
    objects: tuple[tuple[int, float, float, float, float, bool], ...] | None = None
    key: str = ''

    @property
    def name(self) -> str:
        """The image's key (its file name when no key was given)."""
        return self.key or self.image.name


@dataclass
class SplitData:
    """A dataset split: samples and class names, from any layout
    (:func:`darknet53_ros.io.dataset_formats.load_split`).

    ``category_ids``: the COCO category id of each class (COCO layouts; else ``i + 1``);
    ``label_dirs``: folders holding the split's Darknet label files (for the dataset check);
    ``problems``: errors the reader found without stopping (e.g. COCO annotations of unknown
    images), reported by the dataset check.
    """

    name: str
    samples: list[Sample]
    names: list[str]
    annotations: Path | None = None
    category_ids: list[int] | None = None
    root: Path | None = None
    layout: str = 'darknet53_ros'
    label_dirs: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def category_id(self, class_id: int) -> int:
        """COCO category id of a 0-based class id."""
        return self.category_ids[class_id] if self.category_ids else class_id + 1


@dataclass
class Objects:
    """The ground truth of one image: ``boxes`` ``[M, 4]`` x1y1x2y2 source pixels,
    ``classes`` ``[M]`` and ``crowd`` ``[M]`` (COCO ``iscrowd``: evaluated as ignore regions,
    not trained on)."""

    boxes: np.ndarray
    classes: np.ndarray
    crowd: np.ndarray

    def trainable(self) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and classes without the crowd regions."""
        keep = ~self.crowd
        return self.boxes[keep], self.classes[keep]


def parse_label_file(path: Path) -> tuple[np.ndarray, list[str]]:
    """Rows ``[M, 5]`` (``class cx cy w h`` as written) of a Darknet label file and one message
    per malformed line (``path:line: ...``). A missing file has no rows."""
    empty = np.zeros((0, 5), np.float64)
    if not path.exists():
        return empty, []
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        return empty, [f'{path}: cannot read label file: {exc}']
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 5 or values[0] != int(values[0]):
            problems.append(f'{path}:{number}: expected "class cx cy w h", got {line!r}')
            continue
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, 5), problems


def read_labels(path: Path, width: int, height: int, classes: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read a Darknet label file (``class cx cy w h`` normalised) as pixel boxes and classes.

    A missing file means no objects; a malformed line, a class outside ``0..classes-1`` or a
    box without area raises :class:`DatasetError`.
    """
    rows, problems = parse_label_file(path)
    if problems:
        raise DatasetError(problems[0])
    for row in rows:
        if not 0 <= row[0] < classes or row[3] <= 0 or row[4] <= 0:
            raise DatasetError(f'{path}: invalid label {" ".join(f"{v:g}" for v in row)!r} '
                               f'({classes} classes)')
    cx, cy, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                      (cy + h / 2) * height], 1)
    return boxes.reshape(-1, 4), rows[:, 0].astype(np.int64)


def read_objects(sample: Sample, width: int, height: int, classes: int) -> Objects:
    """The ground truth of ``sample`` (image ``width x height``) whatever the layout: what
    training, ``eval`` and the dataset check all read."""
    if sample.objects is not None:
        rows = np.array([row[:5] for row in sample.objects], np.float64).reshape(-1, 5)
        crowd = np.array([bool(row[5]) for row in sample.objects], bool)
        return Objects(rows[:, 1:5], rows[:, 0].astype(np.int64), crowd)
    if sample.label is None:
        return Objects(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool))
    boxes, ids = read_labels(sample.label, width, height, classes)
    return Objects(boxes, ids, np.zeros(len(ids), bool))


def darknet_label_path(image: Path, occurrence: str = 'last') -> Path:
    """Darknet's images -> labels rule: the ``images`` (or ``JPEGImages``) folder of the path
    (the ``first`` or ``last`` such folder) replaced by ``labels``, the suffix by ``.txt``; an
    image outside such a folder has its label file beside it."""
    parts = list(image.parts)
    indices = [k for k, part in enumerate(parts[:-1]) if part in ('images', 'JPEGImages')]
    if indices:
        parts[indices[0] if occurrence == 'first' else indices[-1]] = 'labels'
    return Path(*parts).with_suffix('.txt')


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted)."""
    return sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


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
    """Read the project's ``dataset.yaml`` (or the folder holding one); paths become absolute.

    Fields: ``names`` (list of class names) and ``splits``: per split name ``images`` (image
    folder, required), ``list`` (optional image list, one path a line relative to the
    dataset folder; default every image under ``images``), ``labels`` (Darknet label folder)
    and/or ``annotations`` (COCO JSON): the ground truth is ``labels`` when given, else
    ``annotations``. Every path given must exist. Returns the mapping with ``root`` (the
    folder) added and the split paths resolved against it.
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
        if 'images' not in entry:
            raise DatasetError(f'{path}: splits.{name}.images is missing')
        if 'labels' not in entry and 'annotations' not in entry:
            raise DatasetError(f'{path}: splits.{name} needs labels (Darknet label folder) or '
                               'annotations (COCO JSON)')
        for key in ('images', 'labels', 'annotations', 'list'):
            if key in entry:
                entry[key] = str(root / str(entry[key]))
                if not Path(entry[key]).exists():
                    raise DatasetError(f'{path}: splits.{name}.{key}: {entry[key]} does not '
                                       'exist')
        resolved[name] = entry
    return {**data, 'root': str(root), 'splits': resolved}
