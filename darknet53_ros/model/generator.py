"""The seed's architecture as code: Darknet-53 and the YOLOv3 head written as Darknet cfg text.

Darknet-53 (Redmon & Farhadi, 2018): a 3x3 stem conv of 32 filters, then five stages, each a
stride-2 3x3 conv that halves the resolution followed by 1, 2, 8, 8, 4 residual blocks at 64,
128, 256, 512, 1024 filters; a block is a 1x1 conv to half the width, a 3x3 conv back, and
``F(x) + x``. Every conv has batch norm and leaky ReLU 0.1. The YOLOv3 head predicts at three
scales (strides 32, 16, 8), upsampling and concatenating backbone features (routes to layers
61 and 36). With default options :func:`yolov3_cfg` matches the official ``yolov3.cfg``
layer by layer.
"""
from __future__ import annotations

from collections.abc import Sequence

from darknet53_ros.errors import ConfigError

STAGE_BLOCKS = (1, 2, 8, 8, 4)
"""Residual blocks per Darknet-53 stage."""

STAGE_FILTERS = (64, 128, 256, 512, 1024)
"""Output filters per Darknet-53 stage."""

COCO_ANCHORS: tuple[tuple[int, int], ...] = (
    (10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198),
    (373, 326))
"""YOLOv3's nine COCO anchors (width, height) in network-input pixels at 416."""


def scaled_filters(filters: int, width_multiplier: float) -> int:
    """Filters after applying the width multiplier: a multiple of 8, at least 8."""
    if width_multiplier == 1.0:
        return filters
    return max(8, int(round(filters * width_multiplier / 8.0)) * 8)


def _conv(filters: int, size: int, stride: int = 1, activation: str = 'leaky',
          batch_normalize: bool = True) -> str:
    lines = ['[convolutional]']
    if batch_normalize:
        lines.append('batch_normalize=1')
    lines += [f'filters={filters}', f'size={size}', f'stride={stride}', 'pad=1',
              f'activation={activation}', '']
    return '\n'.join(lines)


def _net(width: int, height: int, channels: int = 3) -> str:
    return '\n'.join([
        '[net]', '# Testing: batch=1, subdivisions=1; training overrides these.',
        'batch=1', 'subdivisions=1', f'width={width}', f'height={height}',
        f'channels={channels}', 'momentum=0.9', 'decay=0.0005', 'angle=0', 'saturation=1.5',
        'exposure=1.5', 'hue=.1', 'learning_rate=0.001', 'burn_in=1000', 'max_batches=500200',
        'policy=steps', 'steps=400000,450000', 'scales=.1,.1', ''])


def darknet53_backbone(width_multiplier: float = 1.0) -> list[str]:
    """The Darknet-53 backbone (52 convs, 23 shortcuts) as a list of cfg sections."""
    f = scaled_filters
    sections = [_conv(f(32, width_multiplier), 3)]
    for blocks, filters in zip(STAGE_BLOCKS, STAGE_FILTERS):
        sections.append(_conv(f(filters, width_multiplier), 3, stride=2))
        for _ in range(blocks):
            sections.append(_conv(f(filters // 2, width_multiplier), 1))
            sections.append(_conv(f(filters, width_multiplier), 3))
            sections.append('[shortcut]\nfrom=-3\nactivation=linear\n')
    return sections


def _yolo(mask: Sequence[int], anchors: Sequence[tuple[float, float]], classes: int) -> str:
    anchor_text = ',  '.join(f'{_num(w)},{_num(h)}' for w, h in anchors)
    return '\n'.join([
        '[yolo]', f'mask = {",".join(str(m) for m in mask)}', f'anchors = {anchor_text}',
        f'classes={classes}', f'num={len(anchors)}', 'jitter=.3', 'ignore_thresh = .7',
        'truth_thresh = 1', 'random=1', ''])


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check(classes: int, width: int, height: int, width_multiplier: float) -> None:
    if classes < 1:
        raise ConfigError(f'classes must be >= 1, got {classes}')
    for name, value in (('width', width), ('height', height)):
        if value < 32 or value % 32:
            raise ConfigError(f'{name} must be a positive multiple of 32, got {value}')
    if not 0.0 < width_multiplier <= 4.0:
        raise ConfigError(f'width_multiplier must be in (0, 4], got {width_multiplier}')


def yolov3_cfg(classes: int = 80, width: int = 416, height: int = 416,
               anchors: Sequence[tuple[float, float]] | None = None,
               width_multiplier: float = 1.0) -> str:
    """Darknet-53 + YOLOv3 three-scale head as cfg text.

    ``anchors`` are nine (width, height) pairs in network pixels, smallest first (masks 0-2
    go to the stride-8 head, 6-8 to the stride-32 head). ``width_multiplier`` scales every
    hidden layer's filters (rounded to multiples of 8) for small or pruned models.
    """
    _check(classes, width, height, width_multiplier)
    anchors = tuple(COCO_ANCHORS if anchors is None else anchors)
    if len(anchors) != 9:
        raise ConfigError(f'yolov3 needs 9 anchors (3 per scale), got {len(anchors)}')
    out = 3 * (5 + classes)
    f = lambda n: scaled_filters(n, width_multiplier)  # noqa: E731
    sections = [_net(width, height)] + darknet53_backbone(width_multiplier)
    route_to = (None, 61, 36)
    masks = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
    for scale, (base, mask) in enumerate(zip((512, 256, 128), masks)):
        if route_to[scale] is not None:
            sections.append('[route]\nlayers = -4\n')
            sections.append(_conv(f(base), 1))
            sections.append('[upsample]\nstride=2\n')
            sections.append(f'[route]\nlayers = -1, {route_to[scale]}\n')
        for _ in range(3):
            sections.append(_conv(f(base), 1))
            sections.append(_conv(f(base * 2), 3))
        sections.append(_conv(out, 1, activation='linear', batch_normalize=False))
        sections.append(_yolo(mask, anchors, classes))
    return '\n'.join(sections)


def darknet53_classifier_cfg(classes: int = 1000, width: int = 256, height: int = 256,
                             width_multiplier: float = 1.0) -> str:
    """Darknet-53 as the ImageNet classifier (backbone, global avgpool, 1x1 conv, softmax)."""
    _check(classes, width, height, width_multiplier)
    sections = [_net(width, height)] + darknet53_backbone(width_multiplier)
    sections.append('[avgpool]\n')
    sections.append(_conv(classes, 1, activation='linear', batch_normalize=False))
    sections.append('[softmax]\ngroups=1\n')
    return '\n'.join(sections)
