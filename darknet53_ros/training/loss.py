"""YOLOv3 training targets and loss (PyTorch).

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
  ``2 - w * h`` (w, h relative to the input) to favour small boxes (``mse``); ``giou`` and
  ``ciou`` are available instead (``1 - GIoU/CIoU`` with the same weight);
* ``darknet`` (the default): Darknet's own box term (``delta_yolo_box`` in
  ``yolo_layer.c``), whose gradient with respect to the raw ``tx, ty`` is
  ``scale * (sigmoid(tx) - t)`` (Darknet does not back-propagate through the logistic) and
  with respect to ``tw, th`` ``scale * (tw - t)``. The ``mse`` form's x/y gradient is
  ``2 * scale * (sigmoid - t) * sigmoid'``: at most half of Darknet's, and vanishing when the
  sigmoid saturates; its w/h gradient is twice Darknet's (no 1/2). The loss with Darknet's
  gradient is binary cross-entropy of the x/y logits against the offsets (minus its minimum,
  the targets' entropy, so a perfect box scores 0) plus ``0.5 * (tw - t)^2``.

The three sums are added and divided by the batch size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import torch
import torch.nn.functional as F

from darknet53_ros.errors import ConfigError
from darknet53_ros.training.options import BOX_LOSSES
from darknet53_ros.training.torch_model import HeadInfo, decode_boxes, reshape_head


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


def darknet_box_error(raw: torch.Tensor, txy: torch.Tensor, twh: torch.Tensor,
                      scale_x_y: float = 1.0) -> torch.Tensor:
    """Darknet's box term per row of raw ``[M, 4]`` ``tx, ty, tw, th`` predictions.

    Its gradient is ``sigmoid(t_xy) - target`` for x/y (with ``scale_x_y`` s the target is
    mapped into the sigmoid's range, ``(target + (s - 1) / 2) / s``) and ``tw - target`` for
    w/h; the value is 0 for a perfect box.
    """
    target = ((txy + 0.5 * (scale_x_y - 1.0)) / scale_x_y).clamp(0.0, 1.0)
    xy = F.binary_cross_entropy_with_logits(raw[:, :2], target, reduction='none')
    p = target.clamp(1e-7, 1.0 - 1e-7)
    entropy = -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))
    return (xy - entropy).sum(1) + 0.5 * ((raw[:, 2:4] - twh) ** 2).sum(1)


@dataclass
class LossWeights:
    """Gains of the three loss terms (the paper uses 1, 1, 1)."""

    box: float = 1.0
    obj: float = 1.0
    cls: float = 1.0


class YoloLoss:
    """The YOLOv3 loss for a :class:`DarknetModel` (see the module docstring)."""

    def __init__(self, heads: Sequence[HeadInfo], box_loss: str = BOX_LOSSES[0],
                 weights: LossWeights | None = None) -> None:
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f'box loss {box_loss!r}: use {", ".join(BOX_LOSSES)}')
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
                elif self.box_loss == 'darknet':
                    err = darknet_box_error(ps[:, :4], tg.txy, tg.twh,
                                            head.layer.scale_x_y)
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
