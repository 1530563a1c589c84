"""Writing the synthetic detection dataset: Darknet labels, COCO annotations, ``dataset.yaml``."""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

import cv2

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import atomic_write_text, replace_path
from darknet53_ros.io.dataset import DATASET_FILE, DATASET_FORMAT, NAMES_FILE, read_yaml
from darknet53_ros.progress import progress as progress_iter
from darknet53_ros.training.synthetic.objects import CLASS_NAMES
from darknet53_ros.training.synthetic.scenes import MIN_VISIBLE, check_size, generate_scene

VAL_SEED_OFFSET = 1_000_003
"""The ``synth`` command generates the val split with ``seed + VAL_SEED_OFFSET``."""


def coco_category_id(class_id: int) -> int:
    """COCO category id of a 0-based class id (``class_id + 1``)."""
    return class_id + 1


def write_dataset(out_dir: str | os.PathLike[str], count: int, seed: int, width: int = 320,
                  height: int = 256, split_name: str = 'train', image_format: str = 'jpg',
                  progress: bool = False) -> dict[str, Any]:
    """Write split ``split_name`` (scenes ``0..count-1`` of stream ``seed``) under ``out_dir``.

    Layout (paths relative to ``out_dir``): ``<split>/images/NNNNNN.<ext>``,
    ``<split>/labels/NNNNNN.txt`` (Darknet: ``class cx cy w h`` normalised),
    ``<split>/annotations.json`` (COCO), ``<split>.txt`` (image list), ``classes.names`` and
    ``dataset.yaml``, into which the split's entry is merged (other splits are kept). The split
    folder is built aside and swapped in, the text files are replaced atomically. Returns the
    split's ``dataset.yaml`` entry.
    """
    import yaml

    if count < 0:
        raise ConfigError(f'count {count} must be >= 0')
    if not split_name or not split_name.replace('_', '').replace('-', '').isalnum():
        raise ConfigError(f'split name {split_name!r} must be alphanumeric (-, _ allowed)')
    ext = image_format.lower().lstrip('.')
    if ext not in ('jpg', 'png'):
        raise ConfigError(f'image format {image_format!r}: use jpg or png')
    check_size(width, height)
    if int(seed) < 0:
        raise ConfigError(f'seed {seed} must be non-negative')
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    description_path = root / DATASET_FILE
    description = read_yaml(description_path) if description_path.exists() else {}
    if description.get('names', list(CLASS_NAMES)) != list(CLASS_NAMES):
        raise DatasetError(f'{description_path}: names {description.get("names")} differ from '
                           f'{list(CLASS_NAMES)}; use an empty output folder')
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 95] if ext == 'jpg' else [
        int(cv2.IMWRITE_PNG_COMPRESSION), 3]

    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f'.{split_name}.', suffix='.tmp'))
    try:
        (tmp / 'images').mkdir()
        (tmp / 'labels').mkdir()
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for index in progress_iter(range(count), progress, split_name, count, 'img'):
            image, objects = generate_scene(seed, index, width, height)
            name = f'{index:06d}'
            ok, data = cv2.imencode(f'.{ext}', image, params)
            if not ok:
                raise DatasetError(f'{tmp / "images" / name}.{ext}: encoding failed')
            (tmp / 'images' / f'{name}.{ext}').write_bytes(data.tobytes())
            lines = []
            for ann in objects:
                bw, bh = ann.x2 - ann.x1, ann.y2 - ann.y1
                lines.append(f'{ann.class_id} {(ann.x1 + bw / 2) / width:.6f} '
                             f'{(ann.y1 + bh / 2) / height:.6f} {bw / width:.6f} '
                             f'{bh / height:.6f}\n')
                annotations.append({
                    'id': len(annotations) + 1, 'image_id': index + 1,
                    'category_id': coco_category_id(ann.class_id),
                    'bbox': [float(ann.x1), float(ann.y1), float(bw), float(bh)],
                    'area': float(bw * bh), 'iscrowd': 0,
                    'visible_fraction': round(ann.visible_fraction, 4)})
            (tmp / 'labels' / f'{name}.txt').write_text(''.join(lines), encoding='utf-8')
            images.append({'id': index + 1, 'file_name': f'{name}.{ext}', 'width': int(width),
                           'height': int(height)})
        coco = {
            'info': {'description': f'darknet53_ros synthetic scenes, split {split_name}',
                     'version': DATASET_FORMAT, 'seed': int(seed)},
            'licenses': [],
            'images': images,
            'annotations': annotations,
            'categories': [{'id': coco_category_id(i), 'name': name, 'supercategory': 'object'}
                           for i, name in enumerate(CLASS_NAMES)],
        }
        (tmp / 'annotations.json').write_text(json.dumps(coco), encoding='utf-8')
        replace_path(tmp, root / split_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    atomic_write_text(root / f'{split_name}.txt',
                      ''.join(f'{split_name}/images/{img["file_name"]}\n' for img in images))
    atomic_write_text(root / NAMES_FILE, ''.join(f'{name}\n' for name in CLASS_NAMES))
    entry = {
        'images': f'{split_name}/images', 'labels': f'{split_name}/labels',
        'annotations': f'{split_name}/annotations.json', 'list': f'{split_name}.txt',
        'count': int(count), 'objects': len(annotations), 'seed': int(seed),
        'width': int(width), 'height': int(height), 'image_format': ext,
    }
    splits = dict(description.get('splits') or {})
    splits[split_name] = entry
    description = {
        'format': DATASET_FORMAT,
        'names': list(CLASS_NAMES),
        'nc': len(CLASS_NAMES),
        'names_file': NAMES_FILE,
        'category_ids': [coco_category_id(i) for i in range(len(CLASS_NAMES))],
        'min_visible': MIN_VISIBLE,
        'box': 'visible-tight, x1 y1 inclusive, x2 y2 exclusive pixel edges',
        **{name: split['images'] for name, split in sorted(splits.items())},
        'splits': {name: splits[name] for name in sorted(splits)},
    }
    atomic_write_text(description_path, yaml.safe_dump(description, sort_keys=False))
    return entry
