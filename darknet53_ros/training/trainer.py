"""YOLOv3 training in PyTorch: targets, loss, augmentation, datasets and the training loop.

Loss (Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018):

* every ground truth is assigned to the one anchor, out of all the cfg's anchors (9 for
  YOLOv3), whose shape matches it best (IoU of boxes sharing a centre), in the grid cell of its
  centre at the head whose ``mask`` holds that anchor; ground truths whose best anchor no head
  predicts are skipped (as Darknet does);
* objectness: binary cross-entropy, target 1 at assigned predictions, 0 elsewhere, except that
  predictions whose box overlaps any ground truth of the image with IoU above the head's
  ``ignore_thresh`` (cfg, 0.7 by default) are not penalised as negatives;
* classes: binary cross-entropy per class (multi-label sigmoid) at assigned predictions;
* box: squared error on ``sigmoid(tx), sigmoid(ty)`` against the centre's offset in its cell
  and on ``tw, th`` against ``log(w / anchor_w), log(h / anchor_h)``, weighted by
  ``2 - w * h`` (w, h relative to the input) to favour small boxes; ``giou`` and ``ciou`` are
  available instead (``1 - GIoU/CIoU`` with the same weight).

The three sums are added and divided by the batch size.

Augmentation (boxes transformed with the image, clipped, dropped when less than a quarter of
them stays visible or a side is under 2 pixels): random scale and aspect ratio with random
placement (Darknet's letterbox jitter: the image may be shrunk onto grey padding or enlarged and
cropped), horizontal flip, HSV jitter (the cfg's ``hue``, ``saturation`` and ``exposure``), and
multi-scale training (a new input size, multiple of 32, every 10 batches).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import copy
from dataclasses import asdict, dataclass, field
import json
import logging
import math
from pathlib import Path
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import atomic_path, atomic_write_text
from darknet53_ros.model.cfg import Convolutional, Network, load_cfg
from darknet53_ros.tools.evaluate import (  # noqa: F401 - dataset helpers re-exported
    Sample,
    SplitData,
    load_image,
    load_split,
    read_labels,
)
from darknet53_ros.training.torch_model import (
    DarknetBatchNorm2d,
    DarknetModel,
    HeadInfo,
    build_model,
    decode_boxes,
    init_weights,
    load_pretrained,
    reshape_head,
    save_darknet_weights,
)

_LOG = logging.getLogger(__name__)

BACKBONE_LAYERS = 75
"""Layers 0-74 of YOLOv3 are Darknet-53 (52 convolutions, 23 shortcuts)."""

PAD_GREY = 127
"""Grey of padded areas (Darknet's 0.5 on the 8-bit scale)."""


# ------------------------------------------------------------------------------------------
# targets and loss


def shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre: ``wh`` ``[M, 2]`` against ``anchors`` ``[K, 2]``."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(
        wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / union.clamp(min=1e-12)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``x1y1x2y2`` boxes: ``[..., N, 4]`` x ``[..., M, 4]`` -> ``[..., N, M]``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-9)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, kind: str = 'iou') -> torch.Tensor:
    """IoU, GIoU or CIoU of matching rows of two ``[M, 4]`` ``x1y1x2y2`` box sets."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    wa, ha = (a[:, 2] - a[:, 0]).clamp(min=1e-9), (a[:, 3] - a[:, 1]).clamp(min=1e-9)
    wb, hb = (b[:, 2] - b[:, 0]).clamp(min=1e-9), (b[:, 3] - b[:, 1]).clamp(min=1e-9)
    union = wa * ha + wb * hb - inter
    iou = inter / union
    if kind == 'iou':
        return iou
    c_lt = torch.minimum(a[:, :2], b[:, :2])
    c_rb = torch.maximum(a[:, 2:], b[:, 2:])
    if kind == 'giou':
        c_area = (c_rb - c_lt).prod(-1).clamp(min=1e-9)
        return iou - (c_area - union) / c_area
    if kind == 'ciou':
        c2 = ((c_rb - c_lt) ** 2).sum(-1).clamp(min=1e-9)
        rho2 = (((a[:, :2] + a[:, 2:]) - (b[:, :2] + b[:, 2:])) ** 2).sum(-1) / 4
        v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
        with torch.no_grad():
            alpha = v / (1 - iou + v).clamp(min=1e-9)
        return iou - rho2 / c2 - alpha * v
    raise ConfigError(f'unknown IoU kind {kind!r}')


@dataclass
class HeadTargets:
    """Assigned ground truths of one head (``M`` rows).

    ``b, a, gj, gi``: image, anchor within the head's mask, cell row and column;
    ``txy``: centre offset in the cell (0..1); ``twh``: ``log(size / anchor)``;
    ``cls``: class id; ``scale``: ``2 - w * h`` (relative size); ``box``: the ground truth
    ``x1y1x2y2`` in input pixels.
    """

    b: torch.Tensor
    a: torch.Tensor
    gj: torch.Tensor
    gi: torch.Tensor
    txy: torch.Tensor
    twh: torch.Tensor
    cls: torch.Tensor
    scale: torch.Tensor
    box: torch.Tensor


def build_targets(heads: Sequence[HeadInfo], targets: torch.Tensor,
                  grids: Sequence[tuple[int, int]], input_size: tuple[int, int],
                  ) -> list[HeadTargets]:
    """Assign each ground truth to its best anchor (out of all anchors) and head.

    ``targets`` is ``[M, 6]``: ``(image index, class, x1, y1, x2, y2)`` in input pixels;
    ``grids`` the ``(H, W)`` of each head; ``input_size`` the input ``(width, height)``.
    """
    width, height = input_size
    device = targets.device
    anchors_all = torch.tensor(heads[0].layer.anchors, dtype=torch.float32, device=device)
    owner: dict[int, tuple[int, int]] = {}
    for k, head in enumerate(heads):
        for pos, n in enumerate(head.layer.mask):
            owner.setdefault(n, (k, pos))
    t = targets.float()
    wh = (t[:, 4:6] - t[:, 2:4]).clamp(min=1e-3)
    centre = (t[:, 2:4] + t[:, 4:6]) / 2
    best = shape_iou(wh, anchors_all).argmax(1) if len(t) else torch.zeros(0, dtype=torch.long)
    out = []
    for k, (head, (gh, gw)) in enumerate(zip(heads, grids)):
        pos_of = torch.full((len(anchors_all),), -1, dtype=torch.long, device=device)
        for n, (hk, pos) in owner.items():
            if hk == k:
                pos_of[n] = pos
        a = pos_of[best] if len(t) else torch.zeros(0, dtype=torch.long, device=device)
        keep = a >= 0
        tk, ak, ck, whk = t[keep], a[keep], centre[keep], wh[keep]
        stride = torch.tensor([width / gw, height / gh], device=device)
        cell = ck / stride
        gi = cell[:, 0].long().clamp(0, gw - 1)
        gj = cell[:, 1].long().clamp(0, gh - 1)
        txy = cell - torch.stack([gi, gj], 1).float()
        anchor = torch.tensor(head.anchors, dtype=torch.float32, device=device)[ak]
        twh = torch.log(whk / anchor)
        scale = 2.0 - (whk[:, 0] / width) * (whk[:, 1] / height)
        out.append(HeadTargets(tk[:, 0].long(), ak, gj, gi, txy, twh, tk[:, 1].long(), scale,
                               tk[:, 2:6]))
    return out


@dataclass
class LossWeights:
    """Gains of the three loss terms (the paper uses 1, 1, 1)."""

    box: float = 1.0
    obj: float = 1.0
    cls: float = 1.0


class YoloLoss:
    """The YOLOv3 loss for a :class:`DarknetModel` (see the module docstring)."""

    def __init__(self, heads: Sequence[HeadInfo], box_loss: str = 'mse',
                 weights: LossWeights | None = None) -> None:
        if box_loss not in ('mse', 'giou', 'ciou'):
            raise ConfigError(f'box loss {box_loss!r}: use mse, giou or ciou')
        if not heads:
            raise ConfigError('the network has no [yolo] layers to train')
        self.heads = list(heads)
        self.box_loss = box_loss
        self.weights = weights or LossWeights()

    def __call__(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor,
                 input_size: tuple[int, int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(loss, {'box', 'obj', 'cls'})`` for raw head ``outputs``."""
        width, height = input_size
        batch = outputs[0].shape[0]
        device = outputs[0].device
        targets = targets.to(device)
        grids = [(o.shape[2], o.shape[3]) for o in outputs]
        assigned = build_targets(self.heads, targets, grids, input_size)
        # Ground truths per image, padded, for the ignore mask.
        counts = torch.bincount(targets[:, 0].long(), minlength=batch) if len(targets) else \
            torch.zeros(batch, dtype=torch.long, device=device)
        gmax = int(counts.max()) if len(targets) else 0
        gt = torch.zeros(batch, max(gmax, 1), 4, device=device)
        valid = torch.zeros(batch, max(gmax, 1), dtype=torch.bool, device=device)
        if gmax:
            order = torch.argsort(targets[:, 0], stable=True)
            sorted_t = targets[order]
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.arange(len(sorted_t), device=device) - starts[sorted_t[:, 0].long()]
            gt[sorted_t[:, 0].long(), slot] = sorted_t[:, 2:6].float()
            valid[sorted_t[:, 0].long(), slot] = True
        box_sum = torch.zeros((), device=device)
        obj_sum = torch.zeros((), device=device)
        cls_sum = torch.zeros((), device=device)
        for head, out, tg in zip(self.heads, outputs, assigned):
            p = reshape_head(out, len(head.anchors)).float()  # [B, A, H, W, 5 + C]
            b, a, h, w, attrs = p.shape
            stride = (width / w, height / h)
            xy, wh = decode_boxes(p, head, stride)
            with torch.no_grad():
                pred = torch.cat([xy - wh / 2, xy + wh / 2], -1).view(b, -1, 4)
                if gmax:
                    iou = box_iou(pred, gt)  # [B, N, G]
                    iou = iou.masked_fill(~valid[:, None, :], 0.0)
                    ignore = (iou.max(-1).values > head.ignore_thresh).view(b, a, h, w)
                else:
                    ignore = torch.zeros(b, a, h, w, dtype=torch.bool, device=device)
            obj_t = torch.zeros(b, a, h, w, device=device)
            obj_m = ~ignore
            obj_t[tg.b, tg.a, tg.gj, tg.gi] = 1.0
            obj_m[tg.b, tg.a, tg.gj, tg.gi] = True
            obj_l = F.binary_cross_entropy_with_logits(p[..., 4], obj_t, reduction='none')
            obj_sum = obj_sum + obj_l[obj_m].sum()
            if len(tg.b):
                ps = p[tg.b, tg.a, tg.gj, tg.gi]
                if self.box_loss == 'mse':
                    sxy = head.layer.scale_x_y
                    pxy = torch.sigmoid(ps[:, :2]) * sxy - 0.5 * (sxy - 1.0)
                    err = ((pxy - tg.txy) ** 2).sum(1) + ((ps[:, 2:4] - tg.twh) ** 2).sum(1)
                else:
                    pb_xy = xy[tg.b, tg.a, tg.gj, tg.gi]
                    pb_wh = wh[tg.b, tg.a, tg.gj, tg.gi]
                    pbox = torch.cat([pb_xy - pb_wh / 2, pb_xy + pb_wh / 2], 1)
                    err = 1.0 - aligned_iou(pbox, tg.box, self.box_loss)
                box_sum = box_sum + (tg.scale * err).sum()
                onehot = F.one_hot(tg.cls, attrs - 5).float()
                cls_sum = cls_sum + F.binary_cross_entropy_with_logits(
                    ps[:, 5:], onehot, reduction='sum')
        lw = self.weights
        total = (lw.box * box_sum + lw.obj * obj_sum + lw.cls * cls_sum) / batch
        items = {'box': float(box_sum.detach()) / batch, 'obj': float(obj_sum.detach()) / batch,
                 'cls': float(cls_sum.detach()) / batch}
        return total, items


# ------------------------------------------------------------------------------------------
# augmentation


@dataclass
class AugmentParams:
    """Augmentation settings (defaults follow Darknet's YOLOv3 cfg)."""

    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: float = 0.5
    scale: tuple[float, float] = (0.6, 1.4)
    aspect: float = 0.2
    min_visible: float = 0.25

    @classmethod
    def from_network(cls, network: Network, **overrides: Any) -> AugmentParams:
        """Read ``hue``, ``saturation``, ``exposure`` and ``flip`` from the cfg's ``[net]``."""
        opts = network.options
        kw: dict[str, Any] = {}
        for key in ('hue', 'saturation', 'exposure'):
            if key in opts:
                try:
                    kw[key] = float(opts[key])
                except ValueError:
                    raise ConfigError(f'{network.source}: [net] {key}={opts[key]!r} is not '
                                      'a number') from None
        if opts.get('flip', '1').strip() == '0':
            kw['flip'] = 0.0
        kw.update(overrides)
        return cls(**kw)


def edge_affine_to_pixel(ax: float, bx: float, ay: float, by: float) -> np.ndarray:
    """The ``cv2.warpAffine`` matrix for the edge-coordinate map ``X' = a X + b`` per axis.

    Boxes use continuous pixel-edge coordinates (pixel ``i`` covers ``[i, i + 1)``); OpenCV
    maps pixel centres, hence the half-pixel terms.
    """
    return np.array([[ax, 0.0, bx + 0.5 * ax - 0.5], [0.0, ay, by + 0.5 * ay - 0.5]],
                    np.float64)


def transform_boxes(boxes: np.ndarray, ax: float, bx: float, ay: float, by: float,
                    ) -> np.ndarray:
    """Apply ``X' = a X + b`` per axis to ``[M, 4]`` ``x1y1x2y2`` boxes (order kept sane)."""
    out = np.array(boxes, np.float64, copy=True).reshape(-1, 4)
    xs = out[:, [0, 2]] * ax + bx
    ys = out[:, [1, 3]] * ay + by
    out[:, 0], out[:, 2] = xs.min(1), xs.max(1)
    out[:, 1], out[:, 3] = ys.min(1), ys.max(1)
    return out


def clip_boxes(boxes: np.ndarray, classes: np.ndarray, width: int, height: int,
               min_visible: float = 0.25, min_side: float = 2.0,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image; drop those mostly outside or thinner than ``min_side``."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32), classes.reshape(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_side) & (h >= min_side) & (w * h >= min_visible * np.maximum(area, 1e-9))
    return clipped[keep].astype(np.float32), classes[keep]


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image and its ``x1y1x2y2`` boxes left-right."""
    width = image.shape[1]
    out = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    out[:, [0, 2]] = width - np.asarray(boxes, np.float32).reshape(-1, 4)[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), out


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hue: float, saturation: float,
               exposure: float) -> np.ndarray:
    """Darknet's colour jitter on a BGR image: hue shift in ``[-hue, hue]`` (fraction of the
    circle), saturation and value scaled by factors in ``[1/s, s]`` and ``[1/e, e]``."""
    import cv2

    def factor(limit: float) -> float:
        if limit <= 1.0:
            return 1.0
        value = rng.uniform(1.0, limit)
        return value if rng.random() < 0.5 else 1.0 / value

    dh = rng.uniform(-hue, hue) if hue > 0 else 0.0
    fs, fv = factor(saturation), factor(exposure)
    if dh == 0.0 and fs == 1.0 and fv == 1.0:
        return image
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + dh * 180.0, 180.0).astype(np.uint8)
    lut_s = np.clip(x * fs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * fv, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def letterbox_params(src_w: int, src_h: int, width: int, height: int,
                     ) -> tuple[float, float, float, float]:
    """``(ax, bx, ay, by)`` of the inference letterbox (as
    :mod:`darknet53_ros.inference.preprocess`)."""
    from darknet53_ros.inference.preprocess import letterbox_transform

    t = letterbox_transform(src_w, src_h, width, height)
    return t.scale_x, t.pad_x, t.scale_y, t.pad_y


def random_geometry(src_w: int, src_h: int, width: int, height: int, rng: np.random.Generator,
                    params: AugmentParams) -> tuple[float, float, float, float]:
    """Random scale, aspect ratio and placement ``(ax, bx, ay, by)`` (letterbox jitter)."""
    fit = min(width / src_w, height / src_h)
    s = fit * rng.uniform(*params.scale)
    aspect = math.exp(rng.uniform(-params.aspect, params.aspect)) if params.aspect > 0 else 1.0
    ax, ay = s * math.sqrt(aspect), s / math.sqrt(aspect)
    new_w, new_h = src_w * ax, src_h * ay
    bx = rng.uniform(min(0.0, width - new_w), max(0.0, width - new_w))
    by = rng.uniform(min(0.0, height - new_h), max(0.0, height - new_h))
    return ax, bx, ay, by


def warp(image: np.ndarray, ax: float, bx: float, ay: float, by: float, width: int,
         height: int) -> np.ndarray:
    """Resample ``image`` with the edge-coordinate map to a ``width x height`` canvas."""
    import cv2

    matrix = edge_affine_to_pixel(ax, bx, ay, by)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD_GREY, PAD_GREY, PAD_GREY))


def augment(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, width: int,
            height: int, rng: np.random.Generator, params: AugmentParams | None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one BGR image and its ``x1y1x2y2`` boxes into a ``width x height`` input.

    With ``params=None`` only the inference letterbox is applied (validation).
    """
    src_h, src_w = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if params is None:
        ax, bx, ay, by = letterbox_params(src_w, src_h, width, height)
        flip = False
    else:
        ax, bx, ay, by = random_geometry(src_w, src_h, width, height, rng, params)
        flip = rng.random() < params.flip
    if flip:  # mirror after placement: X'' = width - (ax X + bx)
        ax, bx = -ax, width - bx
    out = warp(image, ax, bx, ay, by, width, height)
    new_boxes = transform_boxes(boxes, ax, bx, ay, by)
    min_visible = params.min_visible if params is not None else 0.0
    new_boxes, classes = clip_boxes(new_boxes, classes, width, height, min_visible,
                                    2.0 if params is not None else 0.0)
    if params is not None:
        out = hsv_jitter(out, rng, params.hue, params.saturation, params.exposure)
    return out, new_boxes, classes


# ------------------------------------------------------------------------------------------
# data


class DetectionDataset(torch.utils.data.Dataset):
    """Items are ``(index, width, height, epoch)`` tuples from :class:`MultiScaleBatchSampler`;
    each returns ``(CHW uint8 RGB tensor, boxes [M, 4], classes [M])``."""

    def __init__(self, split: SplitData, params: AugmentParams | None, seed: int = 0) -> None:
        self.split = split
        self.params = params
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, item: tuple[int, int, int, int],
                    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        index, width, height, epoch = item
        sample = self.split.samples[index]
        image = load_image(sample.image)
        boxes, classes = read_labels(sample.label, image.shape[1], image.shape[0],
                                     len(self.split.names))
        rng = np.random.default_rng([self.seed, epoch, index])
        out, boxes, classes = augment(image, boxes, classes, width, height, rng, self.params)
        rgb = np.ascontiguousarray(out[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(rgb), boxes, classes


def collate(items: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray]],
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images (uint8) and build ``[M, 6]`` targets ``(image, class, x1, y1, x2, y2)``."""
    images = torch.stack([item[0] for item in items])
    rows = [np.concatenate([np.full((len(b), 1), i), c.reshape(-1, 1), b.reshape(-1, 4)], 1)
            for i, (_, b, c) in enumerate(items)]
    targets = np.concatenate(rows, 0) if rows else np.zeros((0, 6))
    return images, torch.from_numpy(targets.astype(np.float32)).reshape(-1, 6)


def multiscale_sizes(width: int, height: int, low: float = 0.7, high: float = 1.3,
                     ) -> list[tuple[int, int]]:
    """Input sizes (multiples of 32) from ``low`` to ``high`` times the base size."""
    sizes = []
    for k in range(-20, 21):
        f = 1.0 + k * 0.05
        if low - 1e-9 <= f <= high + 1e-9:
            size = (max(32, round(width * f / 32) * 32), max(32, round(height * f / 32) * 32))
            if size not in sizes:
                sizes.append(size)
    return sizes


class MultiScaleBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of ``(index, width, height, epoch)``; the size changes every
    ``interval`` batches when several ``sizes`` are given. Deterministic given the seed."""

    def __init__(self, count: int, batch_size: int, sizes: Sequence[tuple[int, int]],
                 seed: int = 0, interval: int = 10, drop_last: bool = True) -> None:
        self.count, self.batch_size = count, batch_size
        self.sizes = list(sizes)
        self.seed, self.interval, self.drop_last = seed, interval, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        if self.drop_last and self.count >= self.batch_size:
            return self.count // self.batch_size
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        order = rng.permutation(self.count)
        size = self.sizes[0]
        for k in range(len(self)):
            if len(self.sizes) > 1 and k % self.interval == 0:
                size = self.sizes[int(rng.integers(len(self.sizes)))]
            chunk = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield [(int(i), size[0], size[1], self.epoch) for i in chunk]


# ------------------------------------------------------------------------------------------
# training


@dataclass
class TrainOptions:
    """Options of :func:`train` (the ``darknet53 train`` flags)."""

    cfg: Path
    data: Path
    output: Path
    weights: Path | None = None
    epochs: int = 100
    batch: int = 16
    img_size: tuple[int, int] | None = None
    multi_scale: bool = False
    lr: float = 1e-3
    optimizer: str = 'adam'
    weight_decay: float = 5e-4
    warmup: int = 300
    device: str = 'cpu'
    workers: int = 0
    resume: Path | None = None
    seed: int = 0
    freeze_backbone: bool = False
    sparsity: float = 0.0
    box_loss: str = 'mse'
    ema: bool = True
    val_split: str | None = 'val'
    train_split: str = 'train'
    val_conf: float = 0.005
    threads: int | None = None
    progress: bool = True
    max_batches: int | None = None
    augment: bool = True

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    weights: Path
    cfg: Path
    history: dict[str, Any]
    checkpoint: Path
    seconds: float
    final_map50: float | None = None
    extra_files: list[Path] = field(default_factory=list)


class ModelEMA:
    """Exponential moving average of parameters and buffers (decay ramps up from 0)."""

    def __init__(self, model: DarknetModel, decay: float = 0.999, tau: float = 500.0) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model: DarknetModel) -> None:
        """Blend ``model`` into the average."""
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            msd = model.state_dict()
            for name, value in self.model.state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(d).add_(msd[name].detach(), alpha=1.0 - d)
                else:
                    value.copy_(msd[name])


def frozen_layers(model: DarknetModel, count: int = BACKBONE_LAYERS) -> None:
    """Freeze layers ``0..count-1``: no gradients, batch norm kept in eval mode."""
    for layer, module in zip(model.network.layers, model.module_list):
        if layer.index < count:
            for p in module.parameters():
                p.requires_grad_(False)


def set_train_mode(model: DarknetModel, frozen: int = 0) -> None:
    """``model.train()`` with the batch norms of the first ``frozen`` layers in eval mode."""
    model.train()
    for layer, module in zip(model.network.layers, model.module_list):
        if layer.index < frozen:
            module.eval()


def parse_img_size(text: str | int | None) -> tuple[int, int] | None:
    """``'416'`` -> (416, 416); ``'320x256'`` -> (320, 256); multiples of 32."""
    if text is None:
        return None
    parts = str(text).lower().split('x')
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f'--img-size {text!r}: expected S or WxH, e.g. 416 or 320x256') \
            from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(v < 32 or v % 32 for v in values):
        raise ConfigError(f'--img-size {text!r}: width and height must be multiples of 32')
    return values[0], values[1]


def _optimizer(model: DarknetModel, opts: TrainOptions) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, torch.nn.Conv2d) and name == 'weight':
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [{'params': decay, 'weight_decay': opts.weight_decay},
              {'params': no_decay, 'weight_decay': 0.0}]
    if opts.optimizer == 'adam':
        return torch.optim.AdamW(groups, lr=opts.lr, betas=(0.9, 0.999))
    if opts.optimizer == 'sgd':
        return torch.optim.SGD(groups, lr=opts.lr, momentum=0.9, nesterov=True)
    raise ConfigError(f'--optimizer {opts.optimizer!r}: use adam or sgd')


def _lr_at(iteration: int, total: int, opts: TrainOptions) -> float:
    """Linear warm-up (Darknet's burn-in) then cosine decay to 5 % of ``lr``."""
    if iteration < opts.warmup:
        return opts.lr * (iteration + 1) / opts.warmup
    progress = (iteration - opts.warmup) / max(1, total - opts.warmup)
    return opts.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _sparsity_step(model: DarknetModel, strength: float) -> None:
    """Add the L1 subgradient ``strength * sign(gamma)`` to trainable batch-norm scales."""
    for module in model.modules():
        if isinstance(module, DarknetBatchNorm2d) and module.weight.grad is not None:
            module.weight.grad.add_(strength * torch.sign(module.weight.detach()))


def predict_detections(model: DarknetModel, images: Sequence[np.ndarray], width: int,
                       height: int, conf: float = 0.005, nms: float = 0.6,
                       max_detections: int = 100, device: str | torch.device = 'cpu',
                       ) -> list[Any]:
    """Detect with the PyTorch model through the inference pipeline's pre/postprocessing."""
    from darknet53_ros.inference.postprocess import postprocess
    from darknet53_ros.inference.preprocess import Preprocessor

    batch, transforms = Preprocessor(width, height)(list(images))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        boxes, scores = model.predict(torch.from_numpy(np.array(batch)).to(device))
    model.train(was_training)
    return postprocess(boxes.cpu().numpy(), scores.cpu().numpy(), transforms, conf, nms,
                       max_detections)


def validate(model: DarknetModel, split: SplitData, width: int, height: int,
             conf: float = 0.005, batch: int = 8, device: str | torch.device = 'cpu',
             ) -> dict[str, Any]:
    """mAP of the PyTorch model on ``split`` (COCO metrics via
    :mod:`darknet53_ros.tools.evaluate`)."""
    from darknet53_ros.tools.evaluate import evaluate_detections, ground_truth_for_split

    gt = ground_truth_for_split(split)
    detections = {}
    paths = [s.image for s in split.samples]
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = [load_image(p) for p in chunk]
        for path, det in zip(chunk, predict_detections(model, images, width, height, conf,
                                                       device=device)):
            detections[path.name] = det
    return evaluate_detections(gt, detections).summary()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _plot(history: dict[str, Any], loss_png: Path, map_png: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    losses = history.get('loss', [])
    if losses:
        fig, ax = plt.subplots(figsize=(7, 4))
        its = [row[0] for row in losses]
        ax.plot(its, [row[1] for row in losses], lw=0.6, alpha=0.5, label='loss')
        k = max(1, len(losses) // 50)
        smooth = np.convolve([row[1] for row in losses], np.ones(k) / k, mode='valid')
        ax.plot(its[k - 1:], smooth, lw=1.5, label=f'mean of {k}')
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss per image')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_path(loss_png) as tmp:
            fig.savefig(tmp, format='png', dpi=100)
        plt.close(fig)
    maps = [row for row in history.get('val', []) if row.get('map50') is not None]
    if maps:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r['epoch'] for r in maps], [r['map50'] for r in maps], 'o-', label='mAP@0.5')
        ax.plot([r['epoch'] for r in maps], [r['map'] for r in maps], 's-',
                label='mAP@0.5:0.95')
        ax.set_xlabel('epoch')
        ax.set_ylabel('val mAP')
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_path(map_png) as tmp:
            fig.savefig(tmp, format='png', dpi=100)
        plt.close(fig)


def output_paths(output: Path) -> dict[str, Path]:
    """Files written beside ``OUT.weights``."""
    base = output.with_suffix('') if output.suffix == '.weights' else output
    return {'weights': base.with_suffix('.weights'), 'cfg': base.with_suffix('.cfg'),
            'names': base.with_suffix('.names'), 'checkpoint': base.with_suffix('.ckpt'),
            'history': Path(f'{base}.history.json'), 'loss_png': Path(f'{base}.loss.png'),
            'map_png': Path(f'{base}.map.png')}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a Darknet cfg on a dataset; writes ``OUT.weights``, ``OUT.cfg`` and more.

    Beside the output: ``OUT.ckpt`` (checkpoint after every epoch, for ``resume``),
    ``OUT.names``, ``OUT.history.json``, ``OUT.loss.png`` and ``OUT.map.png``.
    """
    log = log or _LOG.info
    start_time = time.monotonic()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    seed_everything(opts.seed)
    cfg_text = Path(opts.cfg).read_text(encoding='utf-8')
    network = load_cfg(opts.cfg)
    width, height = opts.img_size or (network.width, network.height)
    if width % 32 or height % 32:
        raise ConfigError(f'input size {width}x{height} must be multiples of 32')
    network = network.with_input_size(width, height)
    device = torch.device(opts.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda: CUDA is not available to PyTorch')
    paths = output_paths(Path(opts.output))
    train_split = load_split(opts.data, opts.train_split)
    if network.classes != len(train_split.names):
        raise ConfigError(f'{opts.cfg}: {network.classes} classes but {opts.data} has '
                          f'{len(train_split.names)} ({", ".join(train_split.names)}); '
                          f'generate a cfg with classes={len(train_split.names)}')
    val_split = None
    if opts.val_split:
        try:
            val_split = load_split(opts.data, opts.val_split)
        except DatasetError as exc:
            log(f'no validation: {exc}')

    model = build_model(network)
    if opts.weights is not None and opts.resume is None:
        report = load_pretrained(model, opts.weights)
        log(f'loaded {len(report.loaded)} conv layers from {opts.weights} ({report.mode}'
            + (f', source classes {report.source_classes}' if report.source_classes else '')
            + f'); re-initialised {len(report.reinitialised)}')
        if report.reinitialised:
            init_weights(model, report.reinitialised)
    frozen = BACKBONE_LAYERS if opts.freeze_backbone else 0
    if frozen:
        frozen_layers(model, frozen)
    model.to(device)
    ema = ModelEMA(model) if opts.ema else None
    optimizer = _optimizer(model, opts)
    loss_fn = YoloLoss(model.heads, opts.box_loss)
    params = (AugmentParams.from_network(network) if opts.augment else None)
    dataset = DetectionDataset(train_split, params, opts.seed)
    sizes = multiscale_sizes(width, height) if opts.multi_scale else [(width, height)]
    if opts.multi_scale:
        sizes.remove((width, height))
        sizes.insert(0, (width, height))
    sampler = MultiScaleBatchSampler(len(dataset), opts.batch, sizes, opts.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=opts.workers,
                                         persistent_workers=False)
    per_epoch = len(sampler) if opts.max_batches is None else min(len(sampler),
                                                                    opts.max_batches)
    total_iters = per_epoch * opts.epochs
    history: dict[str, Any] = {'loss': [], 'val': [], 'epochs': [],
                               'options': opts.to_json()}
    start_epoch, iteration, seen, elapsed_before = 0, 0, 0, 0.0
    if opts.resume is not None:
        state = torch.load(opts.resume, map_location=device, weights_only=False)
        if state.get('cfg_text') != cfg_text:
            raise ConfigError(f'{opts.resume}: checkpoint was trained with another cfg than '
                              f'{opts.cfg}')
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        if ema is not None and state.get('ema') is not None:
            ema.model.load_state_dict(state['ema'])
            ema.updates = state.get('ema_updates', 0)
        start_epoch, iteration = state['epoch'] + 1, state['iteration']
        seen, history = state['seen'], state['history']
        elapsed_before = state.get('elapsed', 0.0)
        log(f'resumed from {opts.resume} after epoch {state["epoch"] + 1}')

    from tqdm import tqdm

    last_map = None
    for epoch in range(start_epoch, opts.epochs):
        sampler.epoch = epoch
        set_train_mode(model, frozen)
        epoch_loss, batches = 0.0, 0
        bar = tqdm(total=per_epoch, desc=f'epoch {epoch + 1}/{opts.epochs}',
                   disable=not opts.progress, leave=False, dynamic_ncols=True)
        for images, targets in loader:
            if batches >= per_epoch:
                break
            lr = _lr_at(iteration, total_iters, opts)
            for group in optimizer.param_groups:
                group['lr'] = lr
            x = images.to(device, non_blocking=True).float().div_(255.0)
            size = (x.shape[3], x.shape[2])
            outputs = model(x)
            loss, items = loss_fn(outputs, targets.to(device), size)
            if not torch.isfinite(loss):
                raise ConfigError(f'loss became {float(loss)} at iteration {iteration}; '
                                  'lower --lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opts.sparsity > 0:
                _sparsity_step(model, opts.sparsity)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            iteration += 1
            batches += 1
            seen += x.shape[0]
            value = float(loss.detach())
            epoch_loss += value
            history['loss'].append([iteration, value, items['box'], items['obj'],
                                    items['cls']])
            bar.set_postfix(loss=f'{value:.3f}', size=f'{size[0]}x{size[1]}', lr=f'{lr:.2e}')
            bar.update(1)
        bar.close()
        eval_model = ema.model if ema is not None else model
        row: dict[str, Any] = {'epoch': epoch + 1, 'iteration': iteration,
                               'loss': epoch_loss / max(batches, 1),
                               'elapsed': elapsed_before + time.monotonic() - start_time}
        if val_split is not None:
            metrics = validate(eval_model, val_split, width, height, opts.val_conf,
                               device=device)
            row.update(map50=metrics['map50'], map=metrics['map'])
            last_map = metrics['map50']
            history['val'].append({'epoch': epoch + 1, 'map50': metrics['map50'],
                                   'map': metrics['map']})
        history['epochs'].append(row)
        log(f'epoch {epoch + 1}/{opts.epochs}: loss {row["loss"]:.4f}'
            + (f', val mAP@0.5 {row["map50"]:.4f}, mAP@0.5:0.95 {row["map"]:.4f}'
               if 'map50' in row else '') + f' ({row["elapsed"]:.0f} s)')
        _save_checkpoint(paths['checkpoint'], {
            'epoch': epoch, 'iteration': iteration, 'seen': seen, 'history': history,
            'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'ema': ema.model.state_dict() if ema is not None else None,
            'ema_updates': ema.updates if ema is not None else 0, 'cfg_text': cfg_text,
            'elapsed': row['elapsed'], 'options': opts.to_json()})
        atomic_write_text(paths['history'], json.dumps(history))
        _plot(history, paths['loss_png'], paths['map_png'])

    final = ema.model if ema is not None else model
    final_cpu = copy.deepcopy(final).to('cpu').eval()
    # Written at the cfg's own input size; the weights do not depend on it.
    save_darknet_weights(final_cpu, paths['weights'], seen=seen)
    atomic_write_text(paths['cfg'], cfg_text)
    atomic_write_text(paths['names'], ''.join(f'{n}\n' for n in train_split.names))
    atomic_write_text(paths['history'], json.dumps(history))
    _plot(history, paths['loss_png'], paths['map_png'])
    elapsed = elapsed_before + time.monotonic() - start_time
    return TrainResult(paths['weights'], paths['cfg'], history, paths['checkpoint'], elapsed,
                       last_map, [paths['names'], paths['history'], paths['loss_png'],
                                  paths['map_png']])


def conv_count(network: Network) -> int:
    """Number of convolutional layers (for messages)."""
    return sum(isinstance(layer, Convolutional) for layer in network.layers)


def label_sizes(split: SplitData, width: int, height: int) -> np.ndarray:
    """``[M, 2]`` box sizes of a split in network pixels after the inference letterbox."""
    sizes = []
    for sample in split.samples:
        src_h, src_w = load_image(sample.image).shape[:2]
        boxes, _ = read_labels(sample.label, src_w, src_h, len(split.names))
        ax, _, ay, _ = letterbox_params(src_w, src_h, width, height)
        for box in boxes:
            sizes.append(((box[2] - box[0]) * ax, (box[3] - box[1]) * ay))
    return np.array(sizes, np.float64).reshape(-1, 2)


def kmeans_anchors(sizes: np.ndarray, count: int = 9, seed: int = 0, iterations: int = 300,
                   ) -> list[tuple[float, float]]:
    """K-means of box sizes with distance ``1 - IoU`` (YOLOv2's anchor estimation).

    Returns ``count`` anchors sorted by area, rounded to whole pixels (at least 1).
    """
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) < count:
        raise DatasetError(f'{len(sizes)} boxes are too few to estimate {count} anchors')
    rng = np.random.default_rng(seed)

    def iou(boxes: np.ndarray, centres: np.ndarray) -> np.ndarray:
        inter = np.minimum(boxes[:, None, 0], centres[None, :, 0]) * np.minimum(
            boxes[:, None, 1], centres[None, :, 1])
        return inter / (boxes[:, None].prod(-1) + centres[None].prod(-1) - inter)

    # k-means++ seeding on 1 - IoU, then Lloyd iterations with median updates.
    centres = [sizes[rng.integers(len(sizes))]]
    for _ in range(1, count):
        d = 1.0 - iou(sizes, np.array(centres)).max(1)
        probs = d ** 2 / max(float((d ** 2).sum()), 1e-12)
        centres.append(sizes[rng.choice(len(sizes), p=probs)])
    c = np.array(centres)
    for _ in range(iterations):
        assign = iou(sizes, c).argmax(1)
        new = np.array([np.median(sizes[assign == k], 0) if np.any(assign == k) else c[k]
                        for k in range(count)])
        if np.allclose(new, c):
            break
        c = new
    c = c[np.argsort(c.prod(1))]
    return [(max(1.0, float(round(w))), max(1.0, float(round(h)))) for w, h in c]


def anchor_fitness(sizes: np.ndarray, anchors: Sequence[tuple[float, float]]) -> float:
    """Mean best IoU of the boxes with the anchors (shape only)."""
    s = torch.as_tensor(np.asarray(sizes, np.float64).reshape(-1, 2), dtype=torch.float64)
    a = torch.as_tensor(np.asarray(anchors, np.float64), dtype=torch.float64)
    return float(shape_iou(s, a).max(1).values.mean()) if len(s) else 0.0
