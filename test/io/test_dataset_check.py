"""Tests of darknet53_ros.io.dataset_check and ``darknet53 dataset check``: each error and
warning is found."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.dataset_check import check_split, require_trainable
from darknet53_ros.io.dataset_formats import load_split

from ..conftest import requires

LABELS = {
    'good': '0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.1 0.1\n',
    'range': '5 0.5 0.5 0.2 0.2\n',
    'outside': '0 0.95 0.5 0.3 0.2\n',
    'degenerate': '1 0.5 0.5 0.0 0.2\n',
    'duplicate': '0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n',
    'malformed': '0 0.5 0.5 0.2\n',
    'empty': '',
}


def _yolo(root: Path, labels: dict[str, str], extra: bool = True) -> Path:
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    for name, text in labels.items():
        cv2.imwrite(str(root / 'images' / f'{name}.jpg'), np.full((40, 80, 3), 100, np.uint8))
        (root / 'labels' / f'{name}.txt').write_text(text)
    if extra:
        cv2.imwrite(str(root / 'images' / 'nolabel.jpg'), np.zeros((40, 80, 3), np.uint8))
        (root / 'images' / 'broken.jpg').write_bytes(b'not a jpeg')
        (root / 'labels' / 'orphan.txt').write_text('0 0.5 0.5 0.1 0.1\n')
    (root / 'data.yaml').write_text('path: .\ntrain: images\nval: images\nnames: [a, b]\n')
    return root / 'data.yaml'


def test_check_finds_each_problem(tmp_path: Path) -> None:
    report = check_split(load_split(_yolo(tmp_path, LABELS), 'train'), (160, 96),
                         [(10.0, 10.0), (40.0, 40.0)])
    assert report.images == 9
    assert report.counts == {
        'class id out of range': 1, 'box outside the image': 1, 'degenerate box': 1,
        'malformed label line': 1, 'unreadable image': 1, 'duplicate box': 1,
        'empty label file': 1, 'image without labels': 1, 'label file without image': 1}
    assert report.errors == 5
    assert report.objects == 4 and report.class_counts == [3, 1]
    assert 'range.txt' in report.examples['class id out of range'][0]
    assert 'orphan.txt' in report.examples['label file without image'][0]
    # sizes letterboxed 80x40 -> 160x96 (x2): 40x40, 16x8 and 2 x 32x16
    assert sorted(map(tuple, report.sizes.tolist())) == [(16, 8), (32, 16), (32, 16), (40, 40)]
    assert report.anchor_counts()[0] == [1, 3]
    text = report.format()
    assert 'ERROR: 1 x class id out of range' in text and 'warning: 1 x duplicate box' in text
    with pytest.raises(DatasetError, match="split 'train' has 5 errors"):
        require_trainable(report, 'data')


def test_coco_reader_problems_are_errors(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / 'a.jpg'), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / 'val.json').write_text(json.dumps({
        'images': [{'id': 1, 'file_name': 'a.jpg'}], 'categories': [{'id': 1, 'name': 'x'}],
        'annotations': [{'image_id': 1, 'category_id': 9, 'bbox': [0, 0, 5, 5]},
                        {'image_id': 2, 'category_id': 1, 'bbox': [0, 0, 5, 5]},
                        {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 50, 5]}]}))
    report = check_split(load_split(tmp_path / 'val.json', 'val'))
    assert report.counts == {'dataset reader': 2, 'box outside the image': 1}


def test_zero_objects_refused_unless_allowed(tmp_path: Path) -> None:
    report = check_split(load_split(_yolo(tmp_path, {'e': ''}, extra=False), 'train'))
    assert report.errors == 0 and report.objects == 0
    with pytest.raises(DatasetError, match='no objects .*--allow-empty'):
        require_trainable(report, 'data')
    require_trainable(report, 'data', allow_empty=True)


@requires('matplotlib')
def test_cli_check_exit_status_and_plot(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from darknet53_ros.cli.main import main

    bad = _yolo(tmp_path / 'bad', LABELS)
    assert main(['dataset', 'check', str(bad), '--split', 'train']) == 1
    out = capsys.readouterr().out
    assert 'yolo layout' in out and '5 errors' in out
    good = _yolo(tmp_path / 'good', {'good': LABELS['good']}, extra=False)
    plot = tmp_path / 'sizes.png'
    assert main(['dataset', 'check', str(good), '--plot', str(plot)]) == 0
    assert plot.stat().st_size > 1000 and 'no errors' in capsys.readouterr().out
    out_dir = tmp_path / 'as_coco'
    assert main(['dataset', 'convert', str(good), '--to', 'coco', '-o', str(out_dir)]) == 0
    assert (out_dir / 'annotations' / 'instances_val.json').is_file()
