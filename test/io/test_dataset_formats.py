"""Tests of darknet53_ros.io.dataset_formats, io.coco and io.dataset_convert: the Darknet, YOLO
and COCO layouts read directly give the ground truth of the source."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.coco import coco_ground_truth
from darknet53_ros.io.dataset import darknet_label_path, read_objects
from darknet53_ros.io.dataset_convert import convert_dataset
from darknet53_ros.io.dataset_formats import detect_layout, load_split, open_dataset


@pytest.fixture
def synth(tiny_dataset: Path) -> Path:
    return tiny_dataset


def _by_name(gt: dict[str, Any]) -> dict[str, list[tuple[str, list[float], int]]]:
    """Ground truth per image base name: (category name, bbox, iscrowd), sorted."""
    cats = {c['id']: c['name'] for c in gt['categories']}
    out: dict[str, list[tuple[str, list[float], int]]] = {}
    ids = {img['id']: Path(img['file_name']).name for img in gt['images']}
    for name in ids.values():
        out[name] = []
    for ann in gt['annotations']:
        out[ids[ann['image_id']]].append((cats[ann['category_id']], ann['bbox'],
                                          ann['iscrowd']))
    return {k: sorted(v, key=lambda r: (r[0], r[1])) for k, v in out.items()}


def _same_truth(a: dict[str, Any], b: dict[str, Any]) -> None:
    ga, gb = _by_name(a), _by_name(b)
    assert sorted(ga) == sorted(gb)
    for name in ga:
        assert len(ga[name]) == len(gb[name]), name
        for (ca, ba, ia), (cb, bb, ib) in zip(ga[name], gb[name]):
            assert ca == cb and ia == ib
            assert ba == pytest.approx(bb, abs=1e-3)


def test_three_layouts_give_the_same_ground_truth(synth: Path, tmp_path: Path) -> None:
    reference = {s: coco_ground_truth(load_split(synth, s)) for s in ('train', 'val')}
    assert sum(len(g['annotations']) for g in reference.values()) > 5
    expected = {'darknet': ('obj.data', 'darknet'), 'yolo': ('data.yaml', 'yolo'),
                'coco': ('annotations', 'coco')}
    for to, (entry, layout) in expected.items():
        data = convert_dataset(synth, to, tmp_path / to)
        assert data == tmp_path / to / entry
        for given in (data, tmp_path / to):  # the file or its folder
            dataset = open_dataset(given)
            assert dataset.layout == layout and sorted(dataset.splits) == ['train', 'val']
            for split in ('train', 'val'):
                loaded = dataset.split(split)
                assert loaded.names == load_split(synth, split).names
                _same_truth(coco_ground_truth(loaded), reference[split])


def test_synth_folders_read_as_yolo_yaml(synth: Path, tmp_path: Path) -> None:
    names = load_split(synth, 'val').names
    yaml_path = tmp_path / 'data.yaml'
    mapping = ', '.join(f'{k}: {n}' for k, n in enumerate(names))
    yaml_path.write_text(f'path: {synth}\ntrain: train/images\nval: [val.txt]\n'
                         f'names: {{{mapping}}}\n')
    assert detect_layout(yaml_path) == ('yolo', yaml_path)
    for split in ('train', 'val'):
        _same_truth(coco_ground_truth(load_split(yaml_path, split)),
                    coco_ground_truth(load_split(synth, split)))


def test_darknet_path_rule() -> None:
    assert darknet_label_path(Path('/d/images/train/a.jpg')) == Path('/d/labels/train/a.txt')
    assert darknet_label_path(Path('/d/JPEGImages/a.png')) == Path('/d/labels/a.txt')
    assert darknet_label_path(Path('/d/pics/a.jpeg')) == Path('/d/pics/a.txt')
    twice = Path('/images/x/images/a.jpg')
    assert darknet_label_path(twice) == Path('/images/x/labels/a.txt')
    assert darknet_label_path(twice, 'first') == Path('/labels/x/images/a.txt')


def _image(path: Path, width: int = 40, height: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def test_darknet_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / 'darknet'
    _image(root / 'data' / 'obj' / 'images' / 'a.jpg')
    _image(root / 'data' / 'obj' / 'b.jpg')  # label beside the image
    (root / 'data' / 'obj' / 'labels').mkdir()
    (root / 'data' / 'obj' / 'labels' / 'a.txt').write_text('1 0.5 0.5 0.5 0.5\n')
    (root / 'data' / 'obj' / 'b.txt').write_text('0 0.25 0.5 0.5 1.0\n')
    (root / 'data' / 'train.txt').write_text('data/obj/images/a.jpg\ndata/obj/b.jpg\n')
    (root / 'data' / 'obj.names').write_text('cat\ndog\n')
    (root / 'data' / 'obj.data').write_text(
        'classes = 2\ntrain = data/train.txt\nvalid = data/train.txt\nnames = data/obj.names\n'
        'backup = backup/\n')
    monkeypatch.chdir(tmp_path)  # paths are relative to the Darknet folder, not the cwd
    split = load_split(root / 'data', 'val')
    assert split.layout == 'darknet' and split.names == ['cat', 'dog']
    objects = [read_objects(s, 40, 30, 2) for s in split.samples]
    assert [o.classes.tolist() for o in objects] == [[1], [0]]
    assert objects[1].boxes.tolist() == [[0.0, 0.0, 20.0, 30.0]]
    (root / 'data' / 'obj.data').write_text('classes = 3\ntrain = data/train.txt\n'
                                            'names = data/obj.names\n')
    with pytest.raises(DatasetError, match='classes = 3 but the names file has 2'):
        open_dataset(root / 'data' / 'obj.data')


def test_coco_ids_crowd_and_image_folder(tmp_path: Path) -> None:
    _image(tmp_path / 'val2017' / 'x.jpg')
    _image(tmp_path / 'val2017' / 'y.jpg')
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'instances_val2017.json').write_text(json.dumps({
        'images': [{'id': 10, 'file_name': 'x.jpg'}, {'id': 11, 'file_name': 'y.jpg'}],
        'categories': [{'id': 7, 'name': 'dog'}, {'id': 3, 'name': 'cat'}],
        'annotations': [
            {'image_id': 10, 'category_id': 7, 'bbox': [1, 2, 10, 5]},
            {'image_id': 10, 'category_id': 3, 'bbox': [0, 0, 30, 20], 'iscrowd': 1}]}))
    split = load_split(tmp_path, 'val')
    assert split.layout == 'coco' and split.names == ['cat', 'dog']
    assert split.category_ids == [3, 7]
    objects = read_objects(split.samples[0], 40, 30, 2)
    assert objects.classes.tolist() == [1, 0] and objects.crowd.tolist() == [False, True]
    boxes, classes = objects.trainable()
    assert classes.tolist() == [1] and boxes.tolist() == [[1.0, 2.0, 11.0, 7.0]]
    gt = coco_ground_truth(split)
    assert [a['category_id'] for a in gt['annotations']] == [7, 3]
    assert [a['iscrowd'] for a in gt['annotations']] == [0, 1]
    assert gt['categories'] == [{'id': 3, 'name': 'cat'}, {'id': 7, 'name': 'dog'}]


def test_own_format_paths_must_exist(synth: Path, tmp_path: Path) -> None:
    desc = tmp_path / 'dataset.yaml'
    desc.write_text(f'names: [a]\nsplits:\n  train: {{images: {synth}/train/images, '
                    f'labels: {synth}/train/labelz}}\n')
    with pytest.raises(DatasetError, match=r'splits.train.labels: .*labelz does not exist'):
        load_split(desc, 'train')
    desc.write_text('names: [a]\nnothing: here\n')
    with pytest.raises(DatasetError, match='neither a darknet53_ros dataset.yaml'):
        open_dataset(desc)
    with pytest.raises(DatasetError, match="no split 'test'"):
        load_split(synth, 'test')


def test_convert_is_atomic(synth: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('old')
    with pytest.raises(DatasetError):
        convert_dataset(synth, 'darknet', out, ['nope'])
    copies: list[str] = []
    original = shutil.copyfile

    def failing_copy(src: str, dst: str) -> None:
        copies.append(dst)
        if len(copies) == 3:
            raise OSError('disk full')
        original(src, dst)

    monkeypatch.setattr('darknet53_ros.io.dataset_convert.shutil.copyfile', failing_copy)
    with pytest.raises(OSError, match='disk full'):
        convert_dataset(synth, 'coco', out)
    assert (out / 'keep.txt').read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['out']
