"""``darknet53 dataset convert``: a dataset of any layout written as Darknet, YOLO or COCO
(no PyTorch).

The output folder is built beside ``OUT`` and swapped in when complete (a failed conversion
leaves ``OUT`` as it was). Images are copied; the ground truth written is what training and
``eval`` read from the source (:func:`~darknet53_ros.io.dataset.read_objects`, for COCO
:func:`~darknet53_ros.io.coco.coco_ground_truth`). Layouts written:

* ``darknet``: ``obj.data`` (``classes``, ``train``/``valid``/``test``, ``names``,
  ``backup``), ``obj.names``, ``train.txt``/``val.txt``/``test.txt`` (image paths relative to
  ``OUT``: run Darknet from ``OUT``), ``images/<split>/``, ``labels/<split>/``;
* ``yolo``: ``data.yaml`` (``path: .``, ``train: images/train``, ..., ``names``), the same
  ``images/`` and ``labels/`` folders;
* ``coco``: ``annotations/instances_<split>.json`` and images in ``<split>/`` (COCO 2017's
  arrangement). Crowd regions are kept in COCO and dropped in the Darknet label files
  (Darknet has no crowd flag).
"""
from __future__ import annotations

from collections.abc import Callable
import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import replace_path
from darknet53_ros.io.coco import coco_ground_truth
from darknet53_ros.io.dataset import SplitData, load_image, read_objects
from darknet53_ros.io.dataset_formats import open_dataset

__all__ = ['TARGETS', 'convert_dataset']

TARGETS = ('darknet', 'yolo', 'coco')
DARKNET_KEYS = {'train': 'train', 'val': 'valid', 'test': 'test'}


def _file_names(split: SplitData) -> list[str]:
    """Flat, unique file names for the split's images."""
    names, used = [], set()
    for k, sample in enumerate(split.samples):
        name = sample.image.name
        if name in used:
            name = f'{k:06d}_{name}'
        used.add(name)
        names.append(name)
    return names


def _write_darknet_split(split: SplitData, out: Path) -> list[str]:
    images, labels = out / 'images' / split.name, out / 'labels' / split.name
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    listed = []
    for sample, name in zip(split.samples, _file_names(split)):
        height, width = load_image(sample.image).shape[:2]
        boxes, classes = read_objects(sample, width, height, len(split.names)).trainable()
        lines = [f'{int(c)} {(b[0] + b[2]) / 2 / width:.6f} {(b[1] + b[3]) / 2 / height:.6f} '
                 f'{(b[2] - b[0]) / width:.6f} {(b[3] - b[1]) / height:.6f}\n'
                 for b, c in zip(boxes, classes)]
        shutil.copyfile(sample.image, images / name)
        (labels / name).with_suffix('.txt').write_text(''.join(lines), encoding='utf-8')
        listed.append(f'images/{split.name}/{name}')
    return listed


def _write_darknet(splits: list[SplitData], out: Path, yolo: bool) -> None:
    names = splits[0].names
    for split in splits:
        listed = _write_darknet_split(split, out)
        if not yolo:
            (out / f'{split.name}.txt').write_text(''.join(f'{p}\n' for p in listed),
                                                   encoding='utf-8')
    if yolo:
        import yaml

        data: dict[str, Any] = {'path': '.'}
        data.update({s.name: f'images/{s.name}' for s in splits})
        data.update(nc=len(names), names=list(names))
        (out / 'data.yaml').write_text(yaml.safe_dump(data, sort_keys=False), encoding='utf-8')
        return
    (out / 'obj.names').write_text(''.join(f'{n}\n' for n in names), encoding='utf-8')
    lines = [f'classes = {len(names)}']
    lines += [f'{DARKNET_KEYS[s.name]} = {s.name}.txt' for s in splits]
    lines += ['names = obj.names', 'backup = backup/']
    (out / 'obj.data').write_text('\n'.join(lines) + '\n', encoding='utf-8')


def _write_coco(splits: list[SplitData], out: Path) -> None:
    (out / 'annotations').mkdir()
    for split in splits:
        folder = out / split.name
        folder.mkdir()
        gt = coco_ground_truth(split)
        for image, sample, name in zip(gt['images'], split.samples, _file_names(split)):
            shutil.copyfile(sample.image, folder / name)
            image['file_name'] = name
        gt['info'] = {'description': f'converted by darknet53 dataset convert, split '
                                     f'{split.name}'}
        (out / 'annotations' / f'instances_{split.name}.json').write_text(
            json.dumps(gt), encoding='utf-8')


def convert_dataset(data: str | os.PathLike[str], to: str, out: str | os.PathLike[str],
                    splits: list[str] | None = None,
                    log: Callable[[str], None] | None = None) -> Path:
    """Write dataset ``data`` (any layout) as layout ``to`` into the folder ``out``
    (replaced atomically); ``splits`` defaults to all of the source's. Returns the file to
    pass as ``--data`` (``obj.data``, ``data.yaml`` or the COCO ``annotations`` folder)."""
    if to not in TARGETS:
        raise ConfigError(f'--to {to!r}: use {", ".join(TARGETS)}')
    dataset = open_dataset(data)
    names = splits or sorted(dataset.splits)
    if to != 'coco':
        unknown = [n for n in names if n not in DARKNET_KEYS]
        if unknown:
            raise DatasetError(f'{data}: split {unknown[0]!r} has no place in the {to} layout '
                               '(train, val, test); choose splits with --split')
    loaded = [dataset.split(n) for n in names]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.', suffix='.tmp'))
    try:
        if to == 'coco':
            _write_coco(loaded, tmp)
        else:
            _write_darknet(loaded, tmp, yolo=to == 'yolo')
        replace_path(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log is not None:
        log(f'wrote {", ".join(f"{s.name} ({len(s.samples)} images)" for s in loaded)} '
            f'as {to} into {out}')
    return out / {'darknet': 'obj.data', 'yolo': 'data.yaml', 'coco': 'annotations'}[to]
