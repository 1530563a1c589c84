"""Tests of darknet53_ros.training.trainer: targets, loss, augmentation, data, training loop and
CLI."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ..conftest import optional_module, requires
from ..hypo import given, settings, st

pytestmark = requires('torch')
torch = optional_module('torch')
if torch is not None:  # else every test skips (pytestmark); no module-level skip
    from darknet53_ros.model.cfg import parse_cfg
    from darknet53_ros.model.generator import yolov3_cfg
    from darknet53_ros.training.anchors import kmeans_anchors
    from darknet53_ros.training.augment import (
        AugmentParams,
        augment,
        hflip,
        hsv_jitter,
    )
    from darknet53_ros.training.data import MultiScaleBatchSampler, multiscale_sizes
    from darknet53_ros.training.loss import YoloLoss, build_targets, shape_iou
    from darknet53_ros.training.options import parse_img_size
    from darknet53_ros.training.torch_model import head_infos
    from darknet53_ros.training.torch_weights import build_model

ANCHORS = [(4, 4), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48)]


def _network(classes: int = 2):  # type: ignore[no-untyped-def]
    return parse_cfg(yolov3_cfg(classes, 64, 64, anchors=ANCHORS, width_multiplier=0.0625))


SMALL_CFG = """
[net]
width=64
height=64

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters={filters}
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=3,4,5
anchors=6,8, 10,12, 14,20, 20,24, 30,36, 40,48
classes={classes}
num=6

[route]
layers=-4

[convolutional]
filters={filters}
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 10,12, 14,20, 20,24, 30,36, 40,48
classes={classes}
num=6
"""


def small_cfg(classes: int) -> str:
    """A 6-conv, two-head YOLO cfg (64x64) for fast training tests."""
    return SMALL_CFG.format(classes=classes, filters=3 * (5 + classes))


def _box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_shape_iou() -> None:
    iou = shape_iou(torch.tensor([[44.0, 36.0]]), torch.tensor([[40.0, 40.0], [48.0, 48.0]]))
    np.testing.assert_allclose(iou.numpy(), [[1440 / 1744, 1584 / 2304]], rtol=1e-6)


def test_targets_go_to_best_anchor_over_all_heads() -> None:
    heads = head_infos(_network())
    # Heads in cfg order: masks 6-8 (stride 32, 2x2), 3-5 (stride 16, 4x4), 0-2 (stride 8).
    assert [h.layer.mask for h in heads] == [(6, 7, 8), (3, 4, 5), (0, 1, 2)]
    targets = torch.tensor([
        [1, 1, *_box(20, 36, 16, 16)],   # exactly anchor 3 -> head 1, position 0
        [0, 0, *_box(50, 10, 44, 36)],   # best anchor 7 (IoU .826 vs .688) -> head 0, pos 1
        [0, 1, *_box(9, 60, 5, 3)],      # best anchor 0 -> head 2, position 0
    ])
    grids = [(2, 2), (4, 4), (8, 8)]
    t0, t1, t2 = build_targets(heads, targets, grids, (64, 64))
    # GT 1: cell (20 // 16, 36 // 16) = (1, 2), offsets (0.25, 0.25), log(16 / 16) = 0.
    assert t1.b.tolist() == [1] and t1.a.tolist() == [0] and t1.cls.tolist() == [1]
    assert (t1.gi.item(), t1.gj.item()) == (1, 2)
    np.testing.assert_allclose(t1.txy.numpy(), [[0.25, 0.25]], atol=1e-6)
    np.testing.assert_allclose(t1.twh.numpy(), [[0.0, 0.0]], atol=1e-6)
    assert t1.scale.item() == pytest.approx(2 - (16 / 64) ** 2)
    # GT 2: cell (1, 0), offsets (50/32 - 1, 10/32), log(44/40), log(36/40).
    assert t0.a.tolist() == [1] and (t0.gi.item(), t0.gj.item()) == (1, 0)
    np.testing.assert_allclose(t0.txy.numpy(), [[50 / 32 - 1, 10 / 32]], atol=1e-6)
    np.testing.assert_allclose(t0.twh.numpy(), [[math.log(44 / 40), math.log(36 / 40)]],
                               atol=1e-6)
    assert t0.scale.item() == pytest.approx(2 - 44 * 36 / 64 ** 2)
    # GT 3: stride 8, cell (1, 7).
    assert t2.a.tolist() == [0] and (t2.gi.item(), t2.gj.item()) == (1, 7)
    np.testing.assert_allclose(t2.txy.numpy(), [[9 / 8 - 1, 60 / 8 - 7]], atol=1e-6)


def test_targets_skip_anchor_no_head_predicts() -> None:
    cfg = yolov3_cfg(2, 64, 64, anchors=ANCHORS, width_multiplier=0.0625)
    head, _, tail = cfg.replace('mask = 0,1,2', 'mask = 1,2').rpartition('filters=21')
    network = parse_cfg(head + 'filters=14' + tail)
    heads = head_infos(network)
    targets = torch.tensor([[0, 0, *_box(10, 10, 4, 4)]])  # best anchor 0: no head
    out = build_targets(heads, targets, [(2, 2), (4, 4), (8, 8)], (64, 64))
    assert sum(len(t.b) for t in out) == 0


def _zero_outputs(classes: int = 2) -> list:  # type: ignore[type-arg]
    return [torch.zeros(1, 3 * (5 + classes), s, s) for s in (2, 4, 8)]


def test_ignore_threshold_excludes_good_predictions_from_negatives() -> None:
    heads = head_infos(_network())
    targets = torch.tensor([[0, 1, *_box(20, 36, 16, 16)]])
    outputs = _zero_outputs()
    # Head 2 (stride 8), anchor position 2 (12x12), cell (2, 4): logits 0 put the centre at
    # (2.5 * 8, 4.5 * 8) = (20, 36); tw = log(16/12) makes it exactly the ground truth.
    p = outputs[2].view(1, 3, 7, 8, 8)
    p[0, 2, 2:4, 4, 2] = math.log(16 / 12)
    p[0, 2, 4, 4, 2] = 5.0  # confident objectness, but not the assigned anchor
    with_ignore, items = YoloLoss(heads)(outputs, targets, (64, 64))
    no_ignore_heads = [dataclasses.replace(h, ignore_thresh=1.0) for h in heads]
    without, items2 = YoloLoss(no_ignore_heads)(outputs, targets, (64, 64))
    # Only that prediction (IoU 1) is ignored: the difference is its BCE(5, 0) = softplus(5).
    assert items2['obj'] - items['obj'] == pytest.approx(math.log1p(math.exp(5.0)), abs=1e-3)
    assert items2['box'] == items['box'] and items2['cls'] == items['cls']
    assert float(without - with_ignore) == pytest.approx(math.log1p(math.exp(5.0)), abs=1e-3)


def test_box_loss_is_weighted_squared_error() -> None:
    heads = head_infos(_network())
    targets = torch.tensor([[0, 0, *_box(20, 36, 16, 16)]])
    outputs = _zero_outputs()
    _, items = YoloLoss(heads, box_loss='mse')(outputs, targets, (64, 64))
    # Assigned: head 1, cell (1, 2), offsets (.25, .25); sigmoid(0) = .5, tw = th = 0 = target.
    assert items['box'] == pytest.approx((2 - 1 / 16) * 2 * 0.25 ** 2, rel=1e-5)
    for kind in ('giou', 'ciou'):
        _, gi = YoloLoss(heads, box_loss=kind)(outputs, targets, (64, 64))
        assert gi['box'] > 0


def test_darknet_box_loss_has_darknets_gradient() -> None:
    from darknet53_ros.training.loss import darknet_box_error

    raw = torch.tensor([[3.0, -6.0, 0.4, -0.2], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    txy = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    twh = torch.tensor([[0.1, 0.3], [0.0, 0.0]])
    err = darknet_box_error(raw, txy, twh)
    err.sum().backward()
    assert raw.grad is not None
    expected = torch.cat([torch.sigmoid(raw[:, :2]) - txy, raw[:, 2:] - twh], 1)
    assert torch.allclose(raw.grad, expected.detach(), atol=1e-6)
    assert float(err[1].detach()) == pytest.approx(0.0, abs=1e-6)  # a perfect box scores 0
    # Saturated x (sigmoid(-6) ~ 0.0025, target .75): Darknet's gradient stays ~ -0.75, the
    # squared error's vanishes.
    mse_raw = raw.detach().clone().requires_grad_(True)
    ((torch.sigmoid(mse_raw[0, 1]) - 0.75) ** 2).backward()
    assert mse_raw.grad is not None and abs(float(mse_raw.grad[0, 1])) < 0.01
    assert float(raw.grad[0, 1]) == pytest.approx(-0.7475, abs=1e-3)
    heads = head_infos(_network())
    targets = torch.tensor([[0, 0, *_box(20, 36, 16, 16)]])
    _, items = YoloLoss(heads, box_loss='darknet')(_zero_outputs(), targets, (64, 64))
    # sigmoid(0) = .5 against offsets .25: BCE(0, .25) - H(.25) = log 2 - H(.25) per axis.
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert items['box'] == pytest.approx((2 - 1 / 16) * 2 * (math.log(2) - h), rel=1e-5)


def _scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((size, size, 3), 40, np.uint8)
    rows = []
    for cls in range(2):
        w, h = rng.integers(12, 30, size=2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        colour = (0, 0, 255) if cls == 0 else (255, 200, 0)
        image[y:y + h, x:x + w] = colour
        rows.append([cls, x, y, x + w, y + h])
    return image, np.array(rows, np.float32)


def test_loss_decreases_on_tiny_overfit() -> None:
    torch.manual_seed(0)
    network = parse_cfg(small_cfg(2))
    model = build_model(network)
    loss_fn = YoloLoss(model.heads)
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(4)]
    x = torch.from_numpy(np.stack([s[0][:, :, ::-1].transpose(2, 0, 1) for s in scenes])
                         .astype(np.float32) / 255)
    targets = torch.tensor(np.concatenate([np.c_[np.full(2, i), s[1]] for i, s in
                                           enumerate(scenes)]), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss, _ = loss_fn(model(x), targets, (64, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


# ------------------------------------------------------------------------------------------
# augmentation


NO_COLOUR = AugmentParams(hue=0.0, saturation=1.0, exposure=1.0) if torch is not None else None


@st.composite
def _boxes(draw: st.DrawFn, width: int, height: int) -> np.ndarray:
    count = draw(st.integers(0, 5))
    rows = []
    for _ in range(count):
        x1 = draw(st.floats(0, width - 4))
        y1 = draw(st.floats(0, height - 4))
        rows.append([x1, y1, draw(st.floats(x1 + 2, width)), draw(st.floats(y1 + 2, height))])
    return np.array(rows, np.float32).reshape(-1, 4)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 80), st.integers(8, 80), st.data())
def test_flip_twice_is_identity(width: int, height: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(width * 100 + height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes = data.draw(_boxes(width, height))
    img1, b1 = hflip(image, boxes)
    assert np.all(b1[:, 0] <= b1[:, 2] + 1e-6)
    img2, b2 = hflip(img1, b1)
    np.testing.assert_array_equal(img2, image)
    np.testing.assert_allclose(b2, boxes, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 200), st.integers(40, 200), st.sampled_from([(64, 64), (96, 64)]),
       st.integers(0, 10_000), st.data())
def test_augmented_boxes_stay_inside(src_w: int, src_h: int, size: tuple[int, int], seed: int,
                                     data: st.DataObject) -> None:
    image = np.zeros((src_h, src_w, 3), np.uint8)
    boxes = data.draw(_boxes(src_w, src_h))
    classes = np.arange(len(boxes))
    out, new, cls = augment(image, boxes, classes, *size, np.random.default_rng(seed),
                            AugmentParams())
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8
    assert len(new) == len(cls) <= len(boxes)
    assert np.all(new[:, [0, 2]] >= 0) and np.all(new[:, [0, 2]] <= size[0])
    assert np.all(new[:, [1, 3]] >= 0) and np.all(new[:, [1, 3]] <= size[1])
    assert np.all(new[:, 2] - new[:, 0] >= 2) and np.all(new[:, 3] - new[:, 1] >= 2)
    assert set(cls.tolist()) <= set(classes.tolist())


@settings(max_examples=60, deadline=None)
@given(st.integers(48, 160), st.integers(48, 160), st.integers(0, 10_000), st.data())
def test_drawn_rectangle_stays_aligned_with_its_box(src_w: int, src_h: int, seed: int,
                                                     data: st.DataObject) -> None:
    x1 = data.draw(st.integers(0, src_w - 12))
    y1 = data.draw(st.integers(0, src_h - 12))
    x2 = data.draw(st.integers(x1 + 12, src_w))
    y2 = data.draw(st.integers(y1 + 12, src_h))
    image = np.zeros((src_h, src_w, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    out, boxes, _ = augment(image, np.array([[x1, y1, x2, y2]], np.float32), np.array([0]),
                            96, 64, np.random.default_rng(seed), NO_COLOUR)
    bright = np.argwhere(out[:, :, 0] > 160)
    if len(boxes) == 0:
        return
    assert len(bright), 'the box was kept but the rectangle left the image'
    found = [bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1,
             bright[:, 0].max() + 1]
    np.testing.assert_allclose(found, boxes[0], atol=2.0)


def test_validation_transform_is_the_inference_letterbox() -> None:
    from darknet53_ros.inference.preprocess import preprocess

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 100, 3), dtype=np.uint8)
    out, boxes, _ = augment(image, np.array([[10, 10, 30, 40]]), np.array([0]), 64, 64, rng,
                            None)
    ref, transforms = preprocess([image], 64, 64)
    np.testing.assert_allclose(boxes, transforms[0].to_network(np.array([[10, 10, 30, 40]])),
                               atol=1e-4)
    inner = slice(int(transforms[0].pad_y) + 1, int(transforms[0].pad_y) + 30)
    got = out[:, :, ::-1].transpose(2, 0, 1)[:, inner].astype(np.float32) / 255
    np.testing.assert_allclose(got, ref[0][:, inner], atol=1.5 / 255)


def test_hsv_jitter_keeps_geometry_and_neutral_is_identity() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert hsv_jitter(image, rng, 0.0, 1.0, 1.0) is image
    out = hsv_jitter(image, rng, 0.1, 1.5, 1.5)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_augment_params_from_cfg() -> None:
    network = parse_cfg(yolov3_cfg(2, 64, 64).replace('hue=.1', 'hue=.05'))
    params = AugmentParams.from_network(network)
    assert (params.hue, params.saturation, params.exposure) == (0.05, 1.5, 1.5)


def test_multiscale_sizes_and_sampler() -> None:
    sizes = multiscale_sizes(320, 256)
    assert (320, 256) in sizes and all(w % 32 == 0 and h % 32 == 0 for w, h in sizes)
    assert min(w for w, _ in sizes) >= 224 and max(w for w, _ in sizes) <= 416
    sampler = MultiScaleBatchSampler(100, 4, sizes, seed=1, interval=10)
    first = list(sampler)
    assert first == list(sampler)  # deterministic
    assert len(first) == 25
    for k, batch in enumerate(first):
        assert len({(w, h) for _, w, h, _ in batch}) == 1
        if k % 10:
            assert batch[0][1:3] == first[k - 1][0][1:3]
    assert len({b[0][1:3] for b in first}) > 1
    assert sorted(i for b in first for i, *_ in b) == list(range(100))
    assert parse_img_size('320x256') == (320, 256) and parse_img_size(416) == (416, 416)


def test_kmeans_recovers_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = [(10, 20), (40, 40), (90, 60)]
    sizes = np.concatenate([np.array(c) * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    anchors = kmeans_anchors(sizes, 3)
    np.testing.assert_allclose(anchors, centres, rtol=0.06)


# ------------------------------------------------------------------------------------------
# training loop and CLI


def _cli(*args: str) -> int:
    from darknet53_ros.cli.main import main

    return main(list(args))


def test_cli_train_resume_export_eval(tiny_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip('onnxruntime')
    cfg = tmp_path / 'tiny.cfg'
    cfg.write_text(small_cfg(5))
    out = tmp_path / 'run' / 'm.weights'
    common = ['train', '--cfg', str(cfg), '--data', str(tiny_dataset), '--batch', '3',
              '--multi-scale', '--max-batches', '2', '--no-progress', '--threads', '2',
              '-o', str(out)]
    assert _cli(*common, '--epochs', '1') == 0
    run = tmp_path / 'run'
    for name in ('m.weights', 'm.cfg', 'm.names', 'm.ckpt', 'm.history.json', 'm.loss.png',
                 'm.map.png'):
        assert (run / name).is_file(), name
    assert (run / 'm.cfg').read_text() == cfg.read_text()
    first = (run / 'm.weights').read_bytes()
    assert _cli(*common, '--epochs', '2', '--resume', str(run / 'm.ckpt')) == 0
    history = json.loads((run / 'm.history.json').read_text())
    assert [e['epoch'] for e in history['epochs']] == [1, 2]
    assert len(history['loss']) == 4 and 'map50' in history['epochs'][1]
    assert (run / 'm.weights').read_bytes() != first
    onnx_path = tmp_path / 'm.onnx'
    assert _cli('export', '--cfg', str(run / 'm.cfg'), '--weights', str(run / 'm.weights'),
                '--names', str(run / 'm.names'), '-o', str(onnx_path)) == 0
    result_json = tmp_path / 'eval.json'
    assert _cli('eval', '--model', str(onnx_path), '--data', str(tiny_dataset), '--no-progress',
                '--json', str(result_json)) == 0
    data = json.loads(result_json.read_text())
    assert data['conf_threshold'] == 0.001 and data['images'] == 3
    assert 0.0 <= data['map50'] <= 1.0 and 0.0 <= data['map'] <= data['map50'] + 1e-9
    assert Path(f'{onnx_path}.eval-val.png').is_file()


def test_freeze_backbone_and_sparsity(tiny_dataset: Path, tmp_path: Path) -> None:
    from darknet53_ros.model.weights import read_weights
    from darknet53_ros.training.options import TrainOptions
    from darknet53_ros.training.torch_weights import save_darknet_weights
    from darknet53_ros.training.trainer import train

    cfg = tmp_path / 'tiny.cfg'
    cfg.write_text(yolov3_cfg(5, 64, 64, width_multiplier=0.0625))
    network = parse_cfg(cfg.read_text())
    start = tmp_path / 'start.weights'
    save_darknet_weights(build_model(network), start)
    out = tmp_path / 'ft.weights'
    train(TrainOptions(cfg=cfg, data=tiny_dataset, output=out, weights=start, epochs=1,
                       batch=3, max_batches=1, freeze_backbone=True, sparsity=1e-3,
                       val_split=None, progress=False, ema=False))
    before, after = read_weights(start, network), read_weights(out, network)
    for index in before.layers:
        same = np.array_equal(before.layers[index].weights, after.layers[index].weights)
        bn_same = before.layers[index].rolling_var is None or np.array_equal(
            before.layers[index].rolling_var, after.layers[index].rolling_var)
        assert (same and bn_same) == (index < 75), index


def test_cli_anchors(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli('anchors', '--data', str(tiny_dataset), '--size', '96x64', '-n', '3') == 0
    pairs = capsys.readouterr().out.strip().split(', ')
    assert len(pairs) == 3 and all(len(p.split(',')) == 2 for p in pairs)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob('*')}


def test_each_layout_trains_and_evaluates_in_place(tiny_dataset: Path, tmp_path: Path) -> None:
    """Darknet .data, YOLO YAML and COCO JSON datasets train and evaluate as they are (no file
    written into them) and give the same figures."""
    pytest.importorskip('onnxruntime')
    from darknet53_ros.io.dataset_convert import convert_dataset

    cfg = tmp_path / 'tiny.cfg'
    cfg.write_text(small_cfg(5))
    figures = []
    for layout in ('darknet', 'yolo', 'coco'):
        data = convert_dataset(tiny_dataset, layout, tmp_path / 'data' / layout)
        before = _tree(tmp_path / 'data' / layout)
        out = tmp_path / layout / 'm.weights'
        assert _cli('train', '--cfg', str(cfg), '--data', str(data), '--batch', '3',
                    '--epochs', '1', '--max-batches', '1', '--no-progress', '--threads', '2',
                    '--no-augment', '-o', str(out)) == 0
        onnx_path = tmp_path / layout / 'm.onnx'
        assert _cli('export', '--cfg', str(cfg), '--weights', str(out), '--names',
                    str(out.with_suffix('.names')), '-o', str(onnx_path)) == 0
        result = tmp_path / layout / 'eval.json'
        assert _cli('eval', '--model', str(onnx_path), '--data', str(data), '--no-progress',
                    '--json', str(result), '--plot', str(tmp_path / layout / 'pr.png')) == 0
        assert _tree(tmp_path / 'data' / layout) == before
        history = json.loads(out.with_suffix('.history.json').read_text())
        evaluated = json.loads(result.read_text())
        figures.append((history['epochs'][0]['map50'], evaluated['ground_truths'],
                        evaluated['images']))
    assert figures[0][1] > 0 and figures[0][2] == 3
    assert figures[0] == pytest.approx(figures[1]) and figures[1] == pytest.approx(figures[2])


def test_training_on_zero_objects_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    from darknet53_ros.errors import DatasetError
    from darknet53_ros.training.options import TrainOptions
    from darknet53_ros.training.trainer import train

    data = tmp_path / 'data'
    shutil.copytree(tiny_dataset, data)
    text = (data / 'dataset.yaml').read_text().replace('labels: train/labels',
                                                       'labels: train/images')
    (data / 'dataset.yaml').write_text(text)  # a wrong labels folder: no label file in it
    cfg = tmp_path / 'tiny.cfg'
    cfg.write_text(small_cfg(5))
    opts = TrainOptions(cfg=cfg, data=data, output=tmp_path / 'm.weights', epochs=1, batch=3,
                        max_batches=1, val_split=None, progress=False)
    with pytest.raises(DatasetError, match="split 'train' has 6 images but no objects"):
        train(opts)
    assert not (tmp_path / 'm.weights').exists()
    train(dataclasses.replace(opts, allow_empty=True))
    assert (tmp_path / 'm.weights').is_file()


def test_warmup_is_capped_by_the_first_epoch() -> None:
    from darknet53_ros.training.options import warmup_iterations

    assert warmup_iterations(None, 25) == 25  # 400 images, batch 16
    assert warmup_iterations(None, 312) == 300
    assert warmup_iterations(1000, 25) == 1000  # as given
