"""A PyTorch model built from a parsed Darknet cfg (``.weights`` I/O: :mod:`.torch_weights`).

Every layer type the cfg parser knows is supported: ``[convolutional]`` (groups, batch norm,
all activations), ``[shortcut]``, ``[route]`` (including ``groups``/``group_id``),
``[upsample]`` (with ``scale``), ``[maxpool]`` (Darknet's asymmetric padding), ``[yolo]``,
``[avgpool]`` and ``[softmax]``. The model is fully convolutional, so any input size that is
a multiple of the network's total stride works (multi-scale training).

Batch norm. Darknet normalises with ``gamma * (x - mean) / (sqrt(var) + 1e-6) + beta``
(:data:`darknet53_ros.model.weights.BN_EPSILON` added to the standard deviation). The model uses
:class:`DarknetBatchNorm2d`, an ``nn.BatchNorm2d`` whose running statistics *are* Darknet's
``rolling_mean``/``rolling_var``, copied verbatim to and from ``.weights`` files (so a round
trip is byte-identical). In training mode it is the ordinary PyTorch batch norm (batch
statistics, ``eps=1e-5`` inside the square root, the usual running-average update); in eval
mode it applies Darknet's formula above, exactly what
:func:`darknet53_ros.model.weights.fold_batchnorm` folds into the ONNX export, so the PyTorch
model in eval mode, the saved
``.weights`` and the exported ONNX model compute the same function.

Head decoding (:meth:`DarknetModel.decode`) matches the ONNX contract of
:mod:`darknet53_ros.model.onnx_export`: boxes ``(x1, y1, x2, y2)`` in network-input pixels and
scores
``sigmoid(obj) * sigmoid(cls)``, heads concatenated in cfg order, prediction ``(a, y, x)`` of a
head at index ``(a * H + y) * W + x``.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging

import torch
from torch import nn
import torch.nn.functional as F

from darknet53_ros.errors import DarknetError
from darknet53_ros.model.cfg import Network, Section
from darknet53_ros.model.layers import (
    Avgpool,
    Convolutional,
    Layer,
    Maxpool,
    Route,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
)
from darknet53_ros.model.weights import (
    BN_EPSILON,
    DarknetWeights,
)

_LOG = logging.getLogger(__name__)

TRAIN_BN_EPS = 1e-5
"""Epsilon (inside the square root) of batch norm in training mode."""

BN_MOMENTUM = 0.03
"""Running-statistics momentum of batch norm in training mode (PyTorch convention)."""


class DarknetBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose eval-mode formula is Darknet's: ``(x - mean) / (sqrt(var) + 1e-6)``.

    Training mode is PyTorch's batch norm (``eps`` inside the square root). The running
    statistics are stored as Darknet stores them, so ``.weights`` conversion is a plain copy.
    """

    def __init__(self, num_features: int, momentum: float = BN_MOMENTUM) -> None:
        super().__init__(num_features, eps=TRAIN_BN_EPS, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        assert self.running_var is not None and self.running_mean is not None
        scale = self.weight / (torch.sqrt(self.running_var) + BN_EPSILON)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def activation_fn(name: str) -> nn.Module:
    """The PyTorch module of a Darknet activation name."""
    if name == 'leaky':
        return nn.LeakyReLU(0.1, inplace=True)
    if name == 'linear':
        return nn.Identity()
    if name == 'logistic':
        return nn.Sigmoid()
    if name == 'relu':
        return nn.ReLU(inplace=True)
    if name == 'mish':
        return nn.Mish()
    if name == 'swish':
        return nn.SiLU()
    if name == 'tanh':
        return nn.Tanh()
    raise DarknetError(f'activation {name!r} is not supported by the PyTorch model')


class ConvBlock(nn.Module):
    """``[convolutional]``: Conv2d (+ :class:`DarknetBatchNorm2d`) + activation."""

    def __init__(self, layer: Convolutional) -> None:
        super().__init__()
        self.conv = nn.Conv2d(layer.in_shape[0], layer.filters, layer.size, layer.stride,
                              layer.pad, groups=layer.groups, bias=not layer.batch_normalize)
        self.bn = DarknetBatchNorm2d(layer.filters) if layer.batch_normalize else None
        self.act = activation_fn(layer.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class MaxpoolBlock(nn.Module):
    """``[maxpool]`` with Darknet's padding: ``padding // 2`` before, the rest after."""

    def __init__(self, layer: Maxpool) -> None:
        super().__init__()
        self.size, self.stride = layer.size, layer.stride
        begin = layer.padding // 2
        self.pads = (begin, layer.padding - begin, begin, layer.padding - begin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=float('-inf'))
        return F.max_pool2d(x, self.size, self.stride)


class UpsampleBlock(nn.Module):
    """``[upsample]``: nearest neighbour by ``stride``, times ``scale``."""

    def __init__(self, layer: Upsample) -> None:
        super().__init__()
        self.stride, self.scale = layer.stride, layer.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = F.interpolate(x, scale_factor=self.stride, mode='nearest')
        return x * self.scale if self.scale != 1.0 else x


class SoftmaxBlock(nn.Module):
    """``[softmax]`` over channels in ``groups`` independent groups."""

    def __init__(self, layer: Softmax) -> None:
        super().__init__()
        self.groups = layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b, self.groups, c // self.groups, h, w).softmax(dim=2)
        return y.reshape(b, c, h, w)


class Passthrough(nn.Module):
    """Placeholder for layers the model's forward loop handles (shortcut, route, yolo)."""

    def __init__(self, activation: str = 'linear') -> None:
        super().__init__()
        self.act = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


def _make_module(layer: Layer) -> nn.Module:
    if isinstance(layer, Convolutional):
        return ConvBlock(layer)
    if isinstance(layer, Maxpool):
        return MaxpoolBlock(layer)
    if isinstance(layer, Upsample):
        return UpsampleBlock(layer)
    if isinstance(layer, Softmax):
        return SoftmaxBlock(layer)
    if isinstance(layer, Avgpool):
        return nn.AdaptiveAvgPool2d(1)
    if isinstance(layer, Shortcut):
        return Passthrough(layer.activation)
    if isinstance(layer, (Route, Yolo)):
        return Passthrough()
    raise DarknetError(f'layer {layer.index}: {type(layer).__name__} not supported')


@dataclass(frozen=True)
class HeadInfo:
    """One ``[yolo]`` head: its layer, anchors (network pixels) and ``ignore_thresh``."""

    layer: Yolo
    anchors: tuple[tuple[float, float], ...]
    ignore_thresh: float = 0.7
    truth_thresh: float = 1.0


def _section_float(section: Section, key: str, default: float) -> float:
    if key not in section.options:
        return default
    value, line = section.options[key]
    try:
        return float(value)
    except ValueError:
        raise DarknetError(f'line {line}: [{section.name}] {key}={value!r} is not a '
                           'number') from None


def head_infos(network: Network) -> list[HeadInfo]:
    """The ``[yolo]`` heads with their training options read from the raw cfg sections."""
    heads = []
    for layer in network.yolo_layers():
        section = network.sections[layer.index + 1] if network.sections else None
        ignore = _section_float(section, 'ignore_thresh', 0.7) if section else 0.7
        truth = _section_float(section, 'truth_thresh', 1.0) if section else 1.0
        heads.append(HeadInfo(layer, layer.masked_anchors, ignore, truth))
    return heads


class DarknetModel(nn.Module):
    """A Darknet network as an ``nn.Module``.

    ``forward(x)`` returns the raw output of each ``[yolo]`` head's input (``[B, A * (5 + C),
    H, W]`` per head, cfg order), or ``[output]`` for a network without heads. Use
    :meth:`decode` / :meth:`predict` for contract boxes and scores.
    """

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network
        self.module_list = nn.ModuleList(_make_module(layer) for layer in network.layers)
        keep: set[int] = set()
        for layer in network.layers:
            if isinstance(layer, Shortcut):
                keep.update((layer.source, layer.index - 1))
            elif isinstance(layer, Route):
                keep.update(layer.sources)
        self._keep = frozenset(keep)
        self.heads = head_infos(network)
        self.header = DarknetWeights()
        """Header fields written by :func:`save_darknet_weights` (kept from a loaded file)."""

    @property
    def classes(self) -> int:
        """Class count of the detection heads (0 for a classifier)."""
        return self.network.classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        heads: list[torch.Tensor] = []
        for layer, module in zip(self.network.layers, self.module_list):
            if isinstance(layer, Shortcut):
                x = module(x + saved[layer.source])
            elif isinstance(layer, Route):
                parts = []
                for source in layer.sources:
                    t = saved[source] if source in saved else x
                    if layer.groups > 1:
                        step = t.shape[1] // layer.groups
                        t = t[:, step * layer.group_id:step * (layer.group_id + 1)]
                    parts.append(t)
                x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            elif isinstance(layer, Yolo):
                heads.append(x)
            else:
                x = module(x)
            if layer.index in self._keep:
                saved[layer.index] = x
        return heads if heads else [x]

    def decode(self, heads: list[torch.Tensor], input_size: tuple[int, int],
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode raw head outputs into ``(boxes [B, N, 4], scores [B, N, C])``.

        ``input_size`` is the network input ``(width, height)`` the heads were computed for.
        """
        width, height = input_size
        all_boxes, all_scores = [], []
        for head, out in zip(self.heads, heads):
            p = reshape_head(out, len(head.anchors))  # [B, A, H, W, 5 + C]
            b, a, h, w, _ = p.shape
            xy, wh = decode_boxes(p, head, (width / w, height / h))
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)
            scores = torch.sigmoid(p[..., 4:5]) * torch.sigmoid(p[..., 5:])
            all_boxes.append(boxes.reshape(b, a * h * w, 4))
            all_scores.append(scores.reshape(b, a * h * w, -1))
        return torch.cat(all_boxes, 1), torch.cat(all_scores, 1)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` ``[B, 3, H, W]`` in [0, 1] -> contract ``(boxes, scores)``."""
        return self.decode(self(images), (images.shape[3], images.shape[2]))


def reshape_head(out: torch.Tensor, anchors: int) -> torch.Tensor:
    """``[B, A * (5 + C), H, W]`` -> ``[B, A, H, W, 5 + C]``."""
    b, c, h, w = out.shape
    return out.view(b, anchors, c // anchors, h, w).permute(0, 1, 3, 4, 2)


def grid_for(h: int, w: int, device: torch.device) -> torch.Tensor:
    """``[1, 1, H, W, 2]`` cell offsets ``(x, y)``."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing='ij')
    return torch.stack([xs, ys], dim=-1).view(1, 1, h, w, 2).float()


def decode_boxes(p: torch.Tensor, head: HeadInfo, stride: tuple[float, float],
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Box centres and sizes ``([B, A, H, W, 2], [B, A, H, W, 2])`` in network pixels."""
    _, _, h, w, _ = p.shape
    sxy = head.layer.scale_x_y
    stride_t = torch.tensor(stride, dtype=p.dtype, device=p.device)
    anchors = torch.tensor(head.anchors, dtype=p.dtype, device=p.device).view(1, -1, 1, 1, 2)
    xy = (torch.sigmoid(p[..., :2]) * sxy - 0.5 * (sxy - 1.0) + grid_for(h, w, p.device))
    return xy * stride_t, torch.exp(p[..., 2:4]) * anchors
