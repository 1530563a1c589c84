"""Reading datasets in the layouts users have, auto-detected (no PyTorch).

* **Darknet**: a ``.data`` file (``classes=``, ``train=``, ``valid=``, optional ``test=``,
  ``names=``); each split a list file of image paths; labels by Darknet's images -> labels
  rule (:func:`~darknet53_ros.io.dataset.darknet_label_path`). Relative paths are tried against
  the ``.data`` file's folder, the working directory and the folder above the ``.data`` file;
  image paths in a list also against the list's folder.
* **YOLO / Ultralytics** data YAML: ``path`` (dataset root, relative to the YAML's folder),
  ``train``/``val``/``test`` (each an image folder, an image list ``.txt`` or a list of
  those, relative to ``path``), ``names`` (list, or mapping ``0: name``), optional ``nc``;
  labels by the images -> labels rule.
* **COCO JSON** (:mod:`darknet53_ros.io.coco`): a JSON file, or a folder (or its
  ``annotations/``) of them; each file is the split its name says (``instances_val2017.json``
  is ``val``).
* **darknet53_ros** ``dataset.yaml`` (:func:`~darknet53_ros.io.dataset.load_dataset_description`).

A folder is read as its ``dataset.yaml``, else its one ``.data`` file, else its
``data.yaml`` (or one ``.yaml``), else its COCO JSON files.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import functools
import os
from pathlib import Path
from typing import Any

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.coco import coco_split_name, is_coco_json, read_coco_split
from darknet53_ros.io.dataset import (
    DATASET_FILE,
    Sample,
    SplitData,
    darknet_label_path,
    list_images,
    load_dataset_description,
    read_yaml,
)

__all__ = ['LAYOUTS', 'Dataset', 'detect_layout', 'load_split', 'open_dataset']

LAYOUTS = ('darknet53_ros', 'darknet', 'yolo', 'coco')
"""Layout names :func:`detect_layout` returns."""


@dataclass
class Dataset:
    """An opened dataset: its layout, file, class names and its splits (read on demand)."""

    layout: str
    path: Path
    splits: dict[str, Callable[[], SplitData]]

    def split(self, name: str) -> SplitData:
        """Read split ``name``."""
        if name not in self.splits:
            raise DatasetError(f'{self.path}: no split {name!r} (have: '
                               f'{", ".join(sorted(self.splits)) or "none"})')
        return self.splits[name]()


def detect_layout(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``(layout, file)`` of a dataset given as a file or a folder."""
    path = Path(path)
    if path.is_dir():
        if (path / DATASET_FILE).is_file():
            path = path / DATASET_FILE
        else:
            for pattern in ('*.data', 'data.yaml', '*.yaml', '*.yml'):
                found = sorted(path.glob(pattern))
                if len(found) == 1:
                    return detect_layout(found[0])
                if len(found) > 1:
                    raise DatasetError(f'{path}: several {pattern} files; name one')
            folder = path / 'annotations' if (path / 'annotations').is_dir() else path
            if any(is_coco_json(p) for p in folder.glob('*.json')):
                return 'coco', folder
            raise DatasetError(f'{path}: no dataset found (looked for {DATASET_FILE}, a '
                               'Darknet .data file, a YOLO data.yaml, COCO .json files)')
    if not path.is_file():
        raise DatasetError(f'{path}: no such dataset file or folder')
    suffix = path.suffix.lower()
    if suffix == '.data':
        return 'darknet', path
    if suffix == '.json':
        return 'coco', path
    if suffix in ('.yaml', '.yml'):
        data = read_yaml(path)
        if 'splits' in data:
            return 'darknet53_ros', path
        if any(k in data for k in ('train', 'val', 'valid', 'test')):
            return 'yolo', path
        raise DatasetError(f'{path}: neither a darknet53_ros dataset.yaml (no "splits") nor a '
                           'YOLO data YAML (no train/val/test)')
    raise DatasetError(f'{path}: unknown dataset file type (.data, .yaml or .json)')


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a dataset of any supported layout (see the module docstring)."""
    layout, file = detect_layout(path)
    reader = {'darknet53_ros': _open_own, 'darknet': _open_darknet, 'yolo': _open_yolo,
              'coco': _open_coco}[layout]
    return Dataset(layout, file, reader(file))


def load_split(data: str | os.PathLike[str], split: str = 'train') -> SplitData:
    """Read split ``split`` of a dataset of any supported layout."""
    return open_dataset(data).split(split)


def _key(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _unique(split: SplitData, where: Path) -> SplitData:
    if not split.samples:
        raise DatasetError(f'{where}: split {split.name!r} has no images')
    seen: set[str] = set()
    for sample in split.samples:
        if sample.name in seen:
            split.problems.append(f'{where}: image {sample.name} is listed twice')
        seen.add(sample.name)
    return split


def _read_list(list_path: Path, bases: Sequence[Path]) -> list[Path]:
    """Image paths of a list file; a relative path is resolved against the first base in
    which the list's first relative entry exists."""
    try:
        lines = list_path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{list_path}: cannot read image list: {exc}') from None
    entries = [line.strip() for line in lines if line.strip() and
               not line.strip().startswith('#')]
    relative = [e for e in entries if not Path(e).is_absolute()]
    base = bases[0]
    if relative:
        base = next((b for b in bases if (b / relative[0]).exists()), base)
    return [Path(e) if Path(e).is_absolute() else base / e for e in entries]


def _resolve(value: str, bases: Sequence[Path], where: str) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [b / path for b in bases]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DatasetError(f'{where}: {value} not found (tried '
                       + ', '.join(str(c) for c in dict.fromkeys(candidates)) + ')')


def _darknet_split(name: str, names: list[str], images: list[Path], root: Path,
                   where: Path, layout: str, occurrence: str = 'last') -> SplitData:
    samples = [Sample(img, darknet_label_path(img, occurrence), None, _key(img, root))
               for img in images]
    label_dirs = sorted({s.label.parent for s in samples if s.label is not None})
    return _unique(SplitData(name, samples, names, None, None, root, layout, label_dirs),
                   where)


# ------------------------------------------------------------------------------------------
# layouts


def _open_own(path: Path) -> dict[str, Callable[[], SplitData]]:
    desc = load_dataset_description(path)
    root = Path(desc['root'])
    names = list(desc['names'])

    def read(name: str) -> SplitData:
        entry = desc['splits'][name]
        folder = Path(entry['images'])
        images = (_read_list(Path(entry['list']), [root]) if 'list' in entry
                  else list_images(folder))
        if 'labels' not in entry:
            coco = read_coco_split(entry['annotations'], name)
            if coco.names != names:
                raise DatasetError(f'{entry["annotations"]}: categories {coco.names} differ '
                                   f'from names {names} of {path}')
            return coco
        labels = Path(entry['labels'])

        def label_of(image: Path) -> Path:
            try:
                return labels / image.relative_to(folder).with_suffix('.txt')
            except ValueError:
                return labels / f'{image.stem}.txt'

        samples = [Sample(img, label_of(img), None, _key(img, folder)) for img in images]
        ids = desc.get('category_ids')
        return _unique(SplitData(name, samples, names, None,
                                 list(ids) if isinstance(ids, list) else None, root,
                                 'darknet53_ros', [labels]), path)

    return {name: functools.partial(read, name) for name in desc['splits']}


def _names_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path}: cannot read class names: {exc}') from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DatasetError(f'{path}: no class names')
    return names


def _open_darknet(path: Path) -> dict[str, Callable[[], SplitData]]:
    fields: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        if '=' not in line:
            raise DatasetError(f'{path}:{number}: expected "key = value", got {line!r}')
        key, value = line.split('=', 1)
        fields[key.strip()] = value.strip()
    folder = path.parent.resolve()
    bases = [folder, Path.cwd(), folder.parent]
    if 'names' not in fields:
        raise DatasetError(f'{path}: no "names =" (class names file)')
    names = _names_file(_resolve(fields['names'], bases, f'{path}: names'))
    if 'classes' in fields and fields['classes'] != str(len(names)):
        raise DatasetError(f'{path}: classes = {fields["classes"]} but the names file has '
                           f'{len(names)} names')
    keys = {'train': 'train', 'val': 'valid', 'test': 'test'}

    def read(split: str) -> SplitData:
        key = keys[split]
        list_path = _resolve(fields[key], bases, f'{path}: {key}')
        images = _read_list(list_path, [Path.cwd(), list_path.parent, *bases])
        return _darknet_split(split, names, images, path.parent, path, 'darknet', 'first')

    return {split: functools.partial(read, split) for split, key in keys.items()
            if key in fields}


def _yolo_names(path: Path, data: dict[str, Any]) -> list[str]:
    raw = data.get('names')
    if isinstance(raw, dict):
        try:
            mapping = {int(k): str(v) for k, v in raw.items()}
        except ValueError:
            mapping = {}
        if sorted(mapping) != list(range(len(raw))):
            raise DatasetError(f'{path}: names must map 0..{len(raw) - 1} to class names')
        names = [mapping[k] for k in range(len(mapping))]
    elif isinstance(raw, list) and raw:
        names = [str(n) for n in raw]
    else:
        raise DatasetError(f'{path}: field "names" must be a list or a mapping 0: name')
    if 'nc' in data and data['nc'] != len(names):
        raise DatasetError(f'{path}: nc = {data["nc"]} but {len(names)} names')
    return names


def _open_yolo(path: Path) -> dict[str, Callable[[], SplitData]]:
    data = read_yaml(path)
    names = _yolo_names(path, data)
    root_value = str(data.get('path') or '.')
    root = _resolve(root_value, [path.parent, Path.cwd()], f'{path}: path')
    keys = {'train': 'train', 'val': 'val' if 'val' in data else 'valid', 'test': 'test'}

    def read(split: str) -> SplitData:
        value = data[keys[split]]
        images: list[Path] = []
        for item in value if isinstance(value, list) else [value]:
            source = _resolve(str(item), [root, path.parent], f'{path}: {keys[split]}')
            images += (list_images(source) if source.is_dir()
                       else _read_list(source, [source.parent, root, Path.cwd()]))
        return _darknet_split(split, names, images, root, path, 'yolo')

    return {split: functools.partial(read, split) for split, key in keys.items()
            if data.get(key)}


def _open_coco(path: Path) -> dict[str, Callable[[], SplitData]]:
    files = [path] if path.is_file() else sorted(p for p in path.glob('*.json')
                                                 if is_coco_json(p))
    splits: dict[str, Path] = {}
    for file in files:
        name = coco_split_name(file)
        if name in splits:
            raise DatasetError(f'{path}: {splits[name].name} and {file.name} are both split '
                               f'{name!r}; name the file to use')
        splits[name] = file
    return {name: functools.partial(read_coco_split, file, name)
            for name, file in splits.items()}
