"""COCO JSON datasets (no PyTorch): reading a split from ``images``/``annotations``/
``categories``, and the COCO ground truth of any split (what ``eval``, training validation and
``dataset convert --to coco`` use).

Categories are sorted by id and become the contiguous classes ``0..K-1`` (names from the
categories); the original ids are kept in :attr:`SplitData.category_ids`. ``iscrowd``
annotations are ignore regions: evaluated as COCO does, never trained on. Image files are
looked up from the JSON's folder: the folder itself, ``images/``, the dataset folder above
an ``annotations/`` folder, ``<dataset>/<name>`` and ``<dataset>/images/<name>`` where
``name`` is the JSON's stem without ``instances_`` (COCO's ``val2017``) or the split name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from darknet53_ros.errors import DatasetError
from darknet53_ros.fileio import read_json_object
from darknet53_ros.io.dataset import Sample, SplitData, load_image, read_objects

__all__ = ['coco_ground_truth', 'coco_split_name', 'is_coco_json', 'read_coco_split']


def coco_split_name(path: Path) -> str:
    """Split name of a COCO JSON file: ``train``, ``val`` or ``test`` when its name says so
    (``instances_val2017.json`` -> ``val``), else its stem."""
    stem = path.stem.lower()
    for name in ('train', 'val', 'test'):
        if name in stem:
            return name
    return path.stem


def is_coco_json(path: Path) -> bool:
    """Whether ``path`` is a ``.json`` file that starts like a COCO dataset (cheap check)."""
    if path.suffix.lower() != '.json' or not path.is_file():
        return False
    with open(path, encoding='utf-8', errors='replace') as handle:
        head = handle.read(1 << 16)
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _image_folder(path: Path, split: str, first: str) -> Path:
    here = path.parent
    base = here.parent if here.name == 'annotations' else here
    stem = path.stem[len('instances_'):] if path.stem.startswith('instances_') else path.stem
    candidates = [here, here / 'images', base, base / 'images', base / stem,
                  base / 'images' / stem, base / split, base / 'images' / split]
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    raise DatasetError(f'{path}: image {first!r} not found in '
                       + ', '.join(str(c) for c in dict.fromkeys(candidates)))


def read_coco_split(path: str | os.PathLike[str], split: str | None = None) -> SplitData:
    """Read one COCO JSON file as a split (named by :func:`coco_split_name` unless given)."""
    path = Path(path)
    split = split or coco_split_name(path)
    data = read_json_object(path, DatasetError, 'COCO JSON')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'{path}: field "{key}" must be a list')
    try:
        categories = sorted(data['categories'], key=lambda c: int(c['id']))
        cat_ids = [int(c['id']) for c in categories]
        names = [str(c['name']) for c in categories]
        images = [(int(img['id']), str(img['file_name'])) for img in data['images']]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f'{path}: categories need id and name, images id and file_name '
                           f'({exc!r})') from None
    if not names:
        raise DatasetError(f'{path}: no categories')
    if not images:
        raise DatasetError(f'{path}: split {split!r} has no images')
    class_of = {c: k for k, c in enumerate(cat_ids)}
    objects: dict[int, list[tuple[int, float, float, float, float, bool]]] = {
        i: [] for i, _ in images}
    problems = []
    for number, ann in enumerate(data['annotations']):
        try:
            image_id, cat = int(ann['image_id']), int(ann['category_id'])
            x, y, w, h = (float(v) for v in ann['bbox'])
        except (KeyError, TypeError, ValueError):
            problems.append(f'{path}: annotations[{number}]: needs image_id, category_id and '
                            'bbox [x, y, w, h]')
            continue
        if image_id not in objects:
            problems.append(f'{path}: annotations[{number}]: image_id {image_id} is not an '
                            'image of the file (annotation without image)')
        elif cat not in class_of:
            problems.append(f'{path}: annotations[{number}]: category_id {cat} is not a '
                            'category (class id out of range)')
        else:
            objects[image_id].append((class_of[cat], x, y, x + w, y + h,
                                      bool(ann.get('iscrowd', 0))))
    folder = _image_folder(path, split, images[0][1])
    samples = [Sample(folder / name, None, tuple(objects[i]), name) for i, name in images]
    return SplitData(split, samples, names, path, cat_ids, folder, 'coco', [], problems)


def coco_ground_truth(split: SplitData) -> dict[str, Any]:
    """COCO ground truth (``images``, ``annotations``, ``categories``) of a split of any layout,
    from :func:`~darknet53_ros.io.dataset.read_objects`. Images are keyed by
    :attr:`Sample.name`; categories are in class order with the split's category ids."""
    names = list(split.names)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for k, sample in enumerate(split.samples, 1):
        h, w = load_image(sample.image).shape[:2]
        images.append({'id': k, 'file_name': sample.name, 'width': w, 'height': h})
        objects = read_objects(sample, w, h, len(names))
        for box, cls, crowd in zip(objects.boxes, objects.classes, objects.crowd):
            bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({'id': len(anns) + 1, 'image_id': k,
                         'category_id': split.category_id(int(cls)),
                         'bbox': [float(box[0]), float(box[1]), bw, bh], 'area': bw * bh,
                         'iscrowd': int(crowd)})
    return {'images': images, 'annotations': anns,
            'categories': [{'id': split.category_id(i), 'name': n} for i, n in enumerate(names)]}
