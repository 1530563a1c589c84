"""The layers of a parsed Darknet network: one frozen dataclass per cfg section kind.

Shapes are ``(channels, height, width)``; layer indices are Darknet's (``[net]`` excluded).
"""
from __future__ import annotations

from dataclasses import dataclass
import typing

Shape = typing.Tuple[int, int, int]
"""A feature map shape as (channels, height, width)."""

ACTIVATIONS = ('leaky', 'linear', 'logistic', 'relu', 'mish', 'swish', 'tanh')
"""Activations the parser accepts (Darknet names)."""


@dataclass(frozen=True)
class Layer:
    """One Darknet layer with its inferred input and output shapes."""

    index: int
    line: int
    in_shape: Shape
    out_shape: Shape

    @property
    def kind(self) -> str:
        """The cfg section name of this layer (``convolutional``, ``route``, ...)."""
        return _KIND_OF[type(self)]

    @property
    def num_params(self) -> int:
        """Number of learnable parameters stored in a ``.weights`` file for this layer."""
        return 0

    @property
    def bflops(self) -> float:
        """Billions of floating point operations, counted as Darknet counts them."""
        return 0.0


@dataclass(frozen=True)
class Convolutional(Layer):
    """``[convolutional]``: conv (+ batch norm) + activation."""

    filters: int = 0
    size: int = 1
    stride: int = 1
    pad: int = 0
    groups: int = 1
    batch_normalize: bool = False
    activation: str = 'linear'

    @property
    def num_params(self) -> int:
        weights = self.filters * (self.in_shape[0] // self.groups) * self.size * self.size
        return weights + self.filters * (4 if self.batch_normalize else 1)

    @property
    def bflops(self) -> float:
        _, out_h, out_w = self.out_shape
        macs = self.filters * self.size * self.size * (self.in_shape[0] // self.groups)
        return 2.0 * macs * out_h * out_w / 1e9


@dataclass(frozen=True)
class Shortcut(Layer):
    """``[shortcut]``: element-wise sum of the previous layer and ``source``."""

    source: int = -1
    activation: str = 'linear'


@dataclass(frozen=True)
class Route(Layer):
    """``[route]``: channel concatenation of ``sources`` (optionally one group of each)."""

    sources: tuple[int, ...] = ()
    groups: int = 1
    group_id: int = 0


@dataclass(frozen=True)
class Upsample(Layer):
    """``[upsample]``: nearest-neighbour upsampling by ``stride``, times ``scale``."""

    stride: int = 2
    scale: float = 1.0


@dataclass(frozen=True)
class Maxpool(Layer):
    """``[maxpool]``; ``padding`` is Darknet's total padding (``padding // 2`` before)."""

    size: int = 2
    stride: int = 2
    padding: int = 1


@dataclass(frozen=True)
class Yolo(Layer):
    """``[yolo]``: decodes its input into boxes for the anchors selected by ``mask``."""

    mask: tuple[int, ...] = ()
    anchors: tuple[tuple[float, float], ...] = ()
    classes: int = 80
    num: int = 0
    scale_x_y: float = 1.0

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        """The (width, height) anchors, in network-input pixels, this head predicts."""
        return tuple(self.anchors[m] for m in self.mask)


@dataclass(frozen=True)
class Avgpool(Layer):
    """``[avgpool]``: global average pooling to (C, 1, 1)."""


@dataclass(frozen=True)
class Softmax(Layer):
    """``[softmax]``: softmax over channels, in ``groups`` independent groups."""

    groups: int = 1


_KIND_OF = {Convolutional: 'convolutional', Shortcut: 'shortcut', Route: 'route',
            Upsample: 'upsample', Maxpool: 'maxpool', Yolo: 'yolo', Avgpool: 'avgpool',
            Softmax: 'softmax'}
