"""Tests of darknet53_ros.training.synthetic and the ``darknet53 synth`` command."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from darknet53_ros.cli import main as cli
from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.io.dataset import load_dataset_description
from darknet53_ros.tools.camera_bag import camera_topics, write_camera_bag
from darknet53_ros.training import synthetic
from darknet53_ros.training.synthetic import (
    CLASS_NAMES,
    MIN_BOX_SIDE,
    MIN_VISIBLE,
    Annotation,
    Layer,
    composite,
    generate_scene,
)
from darknet53_ros.training.synthetic.objects import ASPECTS

from ..conftest import requires
from ..hypo import given, settings, st

W, H = 160, 128


def _check_annotations(annotations: list[Annotation], width: int, height: int) -> None:
    for ann in annotations:
        assert 0 <= ann.class_id < len(CLASS_NAMES)
        assert 0 <= ann.x1 < ann.x2 <= width and 0 <= ann.y1 < ann.y2 <= height
        assert ann.x2 - ann.x1 >= MIN_BOX_SIDE and ann.y2 - ann.y1 >= MIN_BOX_SIDE
        assert MIN_VISIBLE <= ann.visible_fraction <= 1.0


def test_scene_is_deterministic_and_order_independent() -> None:
    later, later_ann = generate_scene(7, 3, W, H)
    first, first_ann = generate_scene(7, 2, W, H)
    again, again_ann = generate_scene(7, 3, W, H)
    assert later.dtype == np.uint8 and later.shape == (H, W, 3)
    assert later.tobytes() == again.tobytes() and later_ann == again_ann
    assert first.tobytes() != later.tobytes()
    other, _ = generate_scene(8, 3, W, H)
    assert other.tobytes() != later.tobytes()


@pytest.mark.parametrize(('width', 'height'), [(320, 256), (96, 64), (200, 300)])
def test_scene_annotations_are_valid(width: int, height: int) -> None:
    total = 0
    for index in range(12):
        image, annotations = generate_scene(1, index, width, height)
        assert image.shape == (height, width, 3)
        _check_annotations(annotations, width, height)
        total += len(annotations)
    assert total >= 12  # scenes are not empty on average


def test_scene_statistics_cover_classes_sizes_and_occlusion() -> None:
    anns = [a for i in range(60) for a in generate_scene(2, i, 320, 256)[1]]
    assert {a.class_id for a in anns} == set(range(len(CLASS_NAMES)))
    sides = [max(a.x2 - a.x1, a.y2 - a.y1) for a in anns]
    assert min(sides) <= 24 and max(sides) >= 80
    assert any(a.visible_fraction < 0.95 for a in anns)


@pytest.mark.parametrize('class_id', range(len(CLASS_NAMES)))
def test_rendered_objects_fill_their_patch(class_id: int) -> None:
    rng = np.random.default_rng(class_id)
    lo, hi = ASPECTS[class_id]
    for aspect, height in ((lo, 90), (hi, 60), ((lo + hi) / 2, 16)):
        w, h = max(2, round(height * aspect)), height
        patch, mask = synthetic.render_object(class_id, w, h, rng)
        assert patch.shape == (h, w, 3) and mask.shape == (h, w)
        ys, xs = np.nonzero(mask)
        # the drawing spans its patch (a person's arms and legs may not reach the sides)
        assert xs.max() - xs.min() + 1 >= 0.5 * w and ys.max() - ys.min() + 1 >= 0.85 * h
        assert not patch[mask == 0].any()


def test_render_object_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError):
        synthetic.render_object(len(CLASS_NAMES), 10, 10, rng)
    with pytest.raises(ConfigError):
        generate_scene(-1, 0, W, H)
    with pytest.raises(ConfigError):
        generate_scene(0, 0, 32, 32)


def _rect_layer(x: int, y: int, w: int, h: int, value: int, class_id: int | None) -> Layer:
    return Layer(x, y, np.full((h, w, 3), value, np.uint8), np.ones((h, w), np.uint8), class_id)


def test_fully_occluded_object_is_dropped() -> None:
    canvas = np.zeros((60, 80, 3), np.uint8)
    layers = [
        _rect_layer(10, 10, 20, 20, 50, 0),       # hidden completely by the occluder
        _rect_layer(40, 10, 20, 20, 60, 1),       # half covered by object 2 -> kept, 0.5
        _rect_layer(50, 10, 20, 20, 70, 2),       # in front, fully visible
        _rect_layer(5, 5, 30, 30, 90, None),      # occluder (not an object)
        _rect_layer(0, 40, 20, 20, 80, 3),        # 80 % covered by the next -> dropped
        _rect_layer(0, 44, 20, 16, 85, None),
    ]
    annotations = composite(canvas, layers)
    assert annotations == [Annotation(1, 40, 10, 50, 30, 0.5), Annotation(2, 50, 10, 70, 30, 1.0)]
    assert (canvas[5:35, 5:35] == 90).all()


def test_truncated_object_counts_outside_pixels_as_invisible() -> None:
    canvas = np.zeros((40, 40, 3), np.uint8)
    annotations = composite(canvas, [_rect_layer(-10, 5, 20, 10, 1, 4),
                                     _rect_layer(35, 5, 20, 10, 1, 3)])
    assert annotations == [Annotation(4, 0, 5, 10, 15, 0.5)]  # the other is 25 % visible


_layer = st.tuples(st.integers(-15, 45), st.integers(-15, 35), st.integers(1, 25),
                   st.integers(1, 25), st.booleans(), st.one_of(st.none(), st.integers(0, 4)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_layer, min_size=1, max_size=6), st.floats(0.0, 1.0))
def test_composite_matches_painter_reference(specs: list, min_visible: float) -> None:
    width, height, pad = 40, 30, 50
    layers, big_masks = [], []
    for number, (x, y, w, h, ellipse, class_id) in enumerate(specs, 1):
        mask = np.zeros((h, w), np.uint8)
        if ellipse:
            cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
        else:
            mask[:] = 1
        image = np.full((h, w, 3), number * 10, np.uint8)
        layers.append(Layer(x, y, image, mask, class_id))
        big = np.zeros((height + 2 * pad, width + 2 * pad), bool)
        big[y + pad:y + pad + h, x + pad:x + pad + w] = mask > 0
        big_masks.append(big)
    canvas = np.zeros((height, width, 3), np.uint8)
    result = composite(canvas, layers, min_visible=min_visible)

    # independent reference: paint whole masks on a padded canvas, then crop to the image
    owner = np.zeros(big_masks[0].shape, np.int32)
    paint = np.zeros(big_masks[0].shape, np.uint8)
    for number, big in enumerate(big_masks, 1):
        owner[big] = number
        paint[big] = number * 10
    inside = (slice(pad, pad + height), slice(pad, pad + width))
    assert (canvas[..., 0] == paint[inside]).all()
    expected = []
    for number, (big, layer) in enumerate(zip(big_masks, layers), 1):
        if layer.class_id is None or not big.any():
            continue
        visible = owner[inside] == number
        fraction = visible.sum() / big.sum()
        if not visible.any() or fraction < min_visible:
            continue
        ys, xs = np.nonzero(visible)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
            continue
        expected.append((layer.class_id, *map(int, box), pytest.approx(fraction)))
    assert [tuple(a) for a in result] == expected


@requires('pycocotools')
def test_write_dataset_coco_yolo_and_description(tmp_path: Path) -> None:
    COCO = pytest.importorskip('pycocotools.coco').COCO

    out = tmp_path / 'data'
    entry = synthetic.write_dataset(out, 6, 5, 128, 96, 'train')
    synthetic.write_dataset(out, 3, 9, 128, 96, 'val', image_format='png')
    description = yaml.safe_load((out / 'dataset.yaml').read_text())
    assert description['names'] == list(CLASS_NAMES) and description['nc'] == len(CLASS_NAMES)
    assert description['train'] == 'train/images' and description['val'] == 'val/images'
    assert set(description['splits']) == {'train', 'val'}
    assert description['splits']['train'] == entry and entry['count'] == 6 and entry['seed'] == 5
    assert (out / 'classes.names').read_text().split() == list(CLASS_NAMES)
    assert len((out / 'train.txt').read_text().split()) == 6

    loaded = load_dataset_description(out)
    for split in ('train', 'val'):
        paths = loaded['splits'][split]
        coco = COCO(paths['annotations'])
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
        assert len(coco.getImgIds()) == paths['count']
        n_objects = 0
        for img in coco.loadImgs(coco.getImgIds()):
            image = cv2.imread(str(Path(paths['images']) / img['file_name']))
            assert image is not None and image.shape == (96, 128, 3)
            stem = Path(img['file_name']).stem
            rows = [list(map(float, line.split())) for line in
                    (Path(paths['labels']) / f'{stem}.txt').read_text().splitlines()]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img['id']]))
            assert len(rows) == len(anns)
            n_objects += len(anns)
            for row, ann in zip(rows, anns):
                x, y, w, h = ann['bbox']
                assert int(row[0]) + 1 == ann['category_id'] and ann['iscrowd'] == 0
                assert row[1:] == pytest.approx([(x + w / 2) / 128, (y + h / 2) / 96, w / 128,
                                                 h / 96], abs=1e-6)
                assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96 and w > 0 and h > 0
                assert ann['area'] == pytest.approx(w * h)
        assert n_objects == paths['objects']
    # the written images are the generated scenes (png is lossless)
    image, anns = generate_scene(9, 1, 128, 96)
    assert np.array_equal(cv2.imread(str(out / 'val' / 'images' / '000001.png')), image)

    # regenerating a split with fewer scenes leaves no stale files behind
    synthetic.write_dataset(out, 2, 5, 128, 96, 'train')
    assert len(list((out / 'train' / 'images').iterdir())) == 2
    assert yaml.safe_load((out / 'dataset.yaml').read_text())['splits']['val']['count'] == 3
    assert not [p for p in out.iterdir() if p.name.startswith('.')]
    assert json.loads((out / 'train' / 'annotations.json').read_text())['info']['seed'] == 5


@requires('rosbags')
def test_camera_bag_is_readable(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from darknet53_ros.io.rosbags_compat import writes_mcap

    bag = tmp_path / 'cams'
    counts = write_camera_bag(bag, cameras=3, frames=4, seed=2, width=96, height=64,
                                        fps=5.0)
    topics = camera_topics(3)
    assert counts == {topic: 4 for topic, _, _ in topics}
    with pytest.raises(SourceError):
        write_camera_bag(bag, cameras=1, frames=1, width=96, height=64)
    store = get_typestore(Stores.ROS2_HUMBLE)
    stamps: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            t: m for t, m, _ in topics}
        suffix = '.mcap' if writes_mcap() else '.db3'  # rosbags 0.9 (Python 3.8): SQLite3
        assert any(p.suffix == suffix for p in bag.iterdir())
        for conn, timestamp, raw in reader.messages():
            msg: Any = store.deserialize_cdr(raw, conn.msgtype)
            k = [t for t, _, _ in topics].index(conn.topic)
            assert msg.header.frame_id == topics[k][2]
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert stamp == timestamp
            frame = len(stamps.setdefault(conn.topic, []))
            stamps[conn.topic].append(stamp)
            expected, _ = generate_scene(2, frame * 3 + k, 96, 64)
            if conn.msgtype == 'sensor_msgs/msg/Image':
                assert (msg.encoding, msg.width, msg.height, msg.step) == ('bgr8', 96, 64, 288)
                assert (msg.data.reshape(64, 96, 3) == expected).all()
            else:
                assert msg.format == 'jpeg'
                decoded = cv2.imdecode(msg.data, cv2.IMREAD_COLOR)
                assert decoded is not None and decoded.shape == (64, 96, 3)
                assert np.abs(decoded.astype(int) - expected).mean() < 12
    for topic_stamps in stamps.values():
        assert np.diff(topic_stamps).tolist() == [200_000_000] * 3
    assert write_camera_bag(bag, cameras=1, frames=1, width=96, height=64,
                                      overwrite=True) == {'/front/image_raw': 1}


@requires('rosbags')
def test_cli_synth_writes_dataset_and_bag(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert 'darknet53_ros.cli.synth' in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, 'COMMAND_MODULES', ('darknet53_ros.cli.synth',))
    out, bag = tmp_path / 'ds', tmp_path / 'bag'
    code = cli.main(['synth', '--out', str(out), '--train', '3', '--val', '2', '--seed', '4',
                     '--size', '96x64', '--bag', str(bag), '--cameras', '2', '--frames', '2',
                     '--no-progress'])
    assert code == 0
    description = yaml.safe_load((out / 'dataset.yaml').read_text())
    assert description['splits']['train']['seed'] == 4
    assert description['splits']['val']['seed'] == 4 + synthetic.VAL_SEED_OFFSET
    assert description['splits']['val']['count'] == 2
    assert (bag / 'metadata.yaml').exists()
    assert cli.main(['synth', '--out', str(out), '--train', '1', '--size', '96by64']) == 2
    assert cli.main(['synth', '--train', '1']) == 2
