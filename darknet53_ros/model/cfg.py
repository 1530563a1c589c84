"""Darknet ``.cfg`` parsing and shape inference.

Supports every section used by yolov3, yolov3-tiny, yolov3-spp, darknet53 (classifier) and
custom YOLOv3 variants: ``[net]``, ``[convolutional]``, ``[shortcut]``, ``[route]``,
``[upsample]``, ``[maxpool]``, ``[yolo]``, ``[avgpool]``, ``[softmax]``. Layers are numbered as
Darknet numbers them (``[net]`` excluded, first layer 0). Anything unknown, malformed or of
impossible shape raises :class:`DarknetError` naming the file, line and key; so do sizes
that could not be allocated (kernel size, parameters per layer and in all, values per layer
output). A key repeated in a section keeps its first value, as Darknet's option lookup does
(public cfgs repeat ``batch``/``subdivisions`` in ``[net]``), with one warning per file.
"""
from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
import logging
from pathlib import Path
import re
from typing import TypeVar

from darknet53_ros.errors import DarknetError
from darknet53_ros.model.layers import (
    _KIND_OF,
    ACTIVATIONS,
    Avgpool,
    Convolutional,
    Layer,
    Maxpool,
    Route,
    Shape,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
)

_LOG = logging.getLogger(__name__)

# Keys Darknet reads for training only, or that do not change inference; accepted and ignored.
_TRAINING_KEYS = {
    'convolutional': {'flipped', 'dot', 'binary', 'xnor', 'bin_output', 'antialiasing',
                      'stopbackward', 'dontload', 'dontloadscales', 'learning_rate',
                      'share_index', 'sway', 'rotate', 'stretch', 'stretch_sway', 'angle',
                      'coordconv', 'train'},
    'shortcut': {'weights_type', 'weights_normalization', 'stopbackward'},
    'route': {'stopbackward'},
    'upsample': {'stopbackward'},
    'maxpool': {'stopbackward', 'maxpool_depth', 'out_channels', 'antialiasing'},
    'yolo': {'jitter', 'ignore_thresh', 'truth_thresh', 'random', 'iou_thresh',
             'cls_normalizer', 'iou_normalizer', 'iou_loss', 'iou_thresh_kind', 'beta_nms',
             'nms_kind', 'max_delta', 'counters_per_class', 'label_smooth_eps', 'max',
             'focal_loss', 'resize', 'new_coords', 'objectness_smooth', 'map',
             'obj_normalizer', 'delta_normalizer', 'embedding_layer', 'track_history_size',
             'sim_thresh', 'dets_for_track', 'dets_for_show', 'track_ciou_norm',
             'stopbackward', 'show_details'},
    'avgpool': {'stopbackward'},
    'softmax': {'temperature', 'tree', 'spatial', 'noloss', 'stopbackward'},
}

_NET_KEYS = {
    'batch', 'subdivisions', 'width', 'height', 'channels', 'momentum', 'decay', 'angle',
    'saturation', 'exposure', 'hue', 'learning_rate', 'burn_in', 'max_batches', 'policy',
    'steps', 'scales', 'step', 'gamma', 'power', 'min_crop', 'max_crop', 'aspect', 'inputs',
    'max_chart_loss', 'mosaic', 'cutmix', 'mixup', 'blur', 'flip', 'letter_box', 'track',
    'time_steps', 'adam', 'B1', 'B2', 'eps', 'jitter', 'random', 'resize', 'gaussian_noise',
    'label_smooth_eps', 'ema_alpha', 'loss_scale', 'dynamic_minibatch', 'optimized_memory',
    'workspace_size_limit_MB', 'rgb', 'contrastive', 'unsupervised', 'attention',
    'adversarial_lr', 'burnin_update', 'mosaic_bound', 'center', 'equidistant_point',
    'seq_scales', 'sequential_subdivisions', 'try_fix_nan', 'max_classes',
}


@dataclass(frozen=True)
class Network:
    """A parsed Darknet network: input size, raw ``[net]`` options and the layers."""

    source: str
    width: int
    height: int
    channels: int
    layers: tuple[Layer, ...]
    options: dict[str, str] = field(default_factory=dict)
    sections: tuple[Section, ...] = ()

    def yolo_layers(self) -> list[Yolo]:
        """The ``[yolo]`` layers in cfg order."""
        return [layer for layer in self.layers if isinstance(layer, Yolo)]

    @property
    def classes(self) -> int:
        """Class count of the detection heads (0 for a classifier)."""
        counts = {layer.classes for layer in self.yolo_layers()}
        return counts.pop() if len(counts) == 1 else 0

    @property
    def num_params(self) -> int:
        """Total learnable parameters."""
        return sum(layer.num_params for layer in self.layers)

    @property
    def bflops(self) -> float:
        """Total BFLOPs as Darknet prints them (convolutions only)."""
        return sum(layer.bflops for layer in self.layers)

    def with_input_size(self, width: int, height: int) -> Network:
        """Return the same network with shapes re-inferred for another input size."""
        return build_network(self.sections, self.source, width=width, height=height)


@dataclass(frozen=True)
class Section:
    """One raw cfg section: its name, header line and ``key -> (value, line)`` options."""

    name: str
    line: int
    options: dict[str, tuple[str, int]]


_SECTION_RE = re.compile(r'^\[([^\]]*)\]$')


def split_sections(text: str, source: str = '<string>') -> list[Section]:
    """Split cfg text into raw sections; comments (``#``, ``;``) and blank lines skipped."""
    sections: list[Section] = []
    repeated: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().replace('\x00', '')
        if not line or line[0] in '#;':
            continue
        match = _SECTION_RE.match(line)
        if match:
            sections.append(Section(match.group(1).strip().lower(), number, {}))
            continue
        if not sections:
            raise DarknetError(f'{source}:{number}: option {line!r} before any [section]')
        if '=' not in line:
            raise DarknetError(f'{source}:{number}: expected key=value, got {line!r}')
        key, value = (part.strip() for part in line.split('=', 1))
        if not key:
            raise DarknetError(f'{source}:{number}: empty key in {line!r}')
        if key in sections[-1].options:
            repeated.append(f'line {number} [{sections[-1].name}] {key!r} (first at line '
                            f'{sections[-1].options[key][1]})')
            continue
        sections[-1].options[key] = (value, number)
    if repeated:
        _LOG.warning('%s: repeated keys ignored, the first value is used as in Darknet: %s',
                     source, ', '.join(repeated))
    if not sections:
        raise DarknetError(f'{source}: no sections found (is this a Darknet .cfg file?)')
    return sections


T = TypeVar('T')


class _Options:
    """Typed access to one section's options; every read records the key as used."""

    def __init__(self, section: Section, source: str) -> None:
        self.section = section
        self.source = source
        self.used: set[str] = set()

    def where(self, key: str | None = None) -> str:
        if key is not None and key in self.section.options:
            line = self.section.options[key][1]
            return f'{self.source}:{line}: [{self.section.name}] key {key!r}'
        return f'{self.source}:{self.section.line}: [{self.section.name}]'

    def _get(self, key: str, default: T | None, convert: Callable[[str], T], what: str) -> T:
        self.used.add(key)
        if key not in self.section.options:
            if default is None:
                raise DarknetError(f'{self.where()}: required key {key!r} is missing')
            return default
        value = self.section.options[key][0]
        try:
            return convert(value)
        except (ValueError, OverflowError):
            raise DarknetError(f'{self.where(key)}: expected {what}, got {value!r}') from None

    def int(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self._get(key, default, _parse_int, 'an integer')
        if minimum is not None and value < minimum:
            raise DarknetError(f'{self.where(key)}: must be >= {minimum}, got {value}')
        return value

    def float(self, key: str, default: float | None = None) -> float:
        value = self._get(key, default, float, 'a number')
        if value != value or value in (float('inf'), float('-inf')):
            raise DarknetError(f'{self.where(key)}: must be finite, got {value}')
        return value

    # The methods ``int`` and ``float`` shadow the builtins in this class body, hence
    # ``builtins.int``/``builtins.float`` in the annotations below.
    def ints(self, key: str, default: tuple[builtins.int, ...] | None = None,
             ) -> tuple[builtins.int, ...]:
        return self._get(key, default, _parse_int_list, 'a comma-separated list of integers')

    def floats(self, key: str, default: tuple[builtins.float, ...] | None = None,
               ) -> tuple[builtins.float, ...]:
        values = self._get(key, default, _parse_float_list, 'a comma-separated list of numbers')
        if any(v != v or v in (float('inf'), float('-inf')) for v in values):
            raise DarknetError(f'{self.where(key)}: values must be finite')
        return values

    def activation(self, default: str = 'linear') -> str:
        value = self._get('activation', default, str.strip, 'an activation').lower()
        if value not in ACTIVATIONS:
            raise DarknetError(f'{self.where("activation")}: unsupported activation {value!r} '
                               f'(supported: {", ".join(ACTIVATIONS)})')
        return value

    def reject_unknown(self, ignored: set[str]) -> None:
        for key, (_, _line) in self.section.options.items():
            if key not in self.used and key not in ignored:
                raise DarknetError(f'{self.where(key)}: unknown key for '
                                   f'[{self.section.name}]')


def _parse_int(text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r'[+-]?\d+', text):
        raise ValueError(text)
    return int(text)


def _parse_int_list(text: str) -> tuple[int, ...]:
    parts = [p for p in (p.strip() for p in text.split(',')) if p]
    if not parts:
        raise ValueError(text)
    return tuple(_parse_int(p) for p in parts)


def _parse_float_list(text: str) -> tuple[float, ...]:
    parts = [p for p in (p.strip() for p in text.split(',')) if p]
    if not parts:
        raise ValueError(text)
    return tuple(float(p) for p in parts)


_MAX_DIM = 1 << 16
_MAX_KERNEL = 64
_MAX_VALUES = 1 << 30  # per layer output and per layer parameters (4 GiB as float32)
_MAX_PARAMS = 1 << 30  # the whole network


def _check_shape(opts: _Options, shape: Shape) -> Shape:
    if min(shape) < 1:
        raise DarknetError(f'{opts.where()}: output shape (C, H, W) = {shape} is empty; the '
                           'input is too small for this layer')
    if max(shape) > _MAX_DIM or shape[0] * shape[1] * shape[2] > _MAX_VALUES:
        raise DarknetError(f'{opts.where()}: output shape (C, H, W) = {shape} is too large')
    return shape


def _resolve(opts: _Options, key: str, ref: int, index: int) -> int:
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise DarknetError(f'{opts.where(key)}: layer reference {ref} resolves to {target}, '
                           f'which is not an earlier layer of layer {index}')
    return target


def _conv(opts: _Options, index: int, line: int, shape: Shape) -> Convolutional:
    filters = opts.int('filters', 1, minimum=1)
    size = opts.int('size', 1, minimum=1)
    if size > _MAX_KERNEL:
        raise DarknetError(f'{opts.where("size")}: kernel size {size} is over {_MAX_KERNEL}')
    stride = opts.int('stride', 1, minimum=1)
    if 'stride_x' in opts.section.options or 'stride_y' in opts.section.options:
        sx, sy = opts.int('stride_x', stride, minimum=1), opts.int('stride_y', stride, minimum=1)
        if sx != stride or sy != stride:
            raise DarknetError(f'{opts.where("stride_x")}: different x/y strides are not '
                               'supported')
    pad_flag = opts.int('pad', 0)
    padding = opts.int('padding', 0, minimum=0)
    pad = size // 2 if pad_flag else padding
    groups = opts.int('groups', 1, minimum=1)
    bn = opts.int('batch_normalize', 0)
    if bn not in (0, 1):
        raise DarknetError(f'{opts.where("batch_normalize")}: must be 0 or 1, got {bn}')
    dilation = opts.int('dilation', 1, minimum=1)
    if dilation != 1:
        raise DarknetError(f'{opts.where("dilation")}: dilated convolutions are not supported')
    activation = opts.activation()
    c, h, w = shape
    if c % groups or filters % groups:
        raise DarknetError(f'{opts.where("groups")}: groups={groups} must divide input '
                           f'channels {c} and filters {filters}')
    if filters * (c // groups) * size * size > _MAX_VALUES:
        raise DarknetError(f'{opts.where("filters")}: {filters} filters of {c // groups}x{size}'
                           f'x{size} are over {_MAX_VALUES} parameters for one layer')
    out = (filters, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1)
    return Convolutional(index, line, shape, _check_shape(opts, out), filters=filters,
                         size=size, stride=stride, pad=pad, groups=groups,
                         batch_normalize=bool(bn), activation=activation)


def _shortcut(opts: _Options, index: int, line: int, shapes: list[Shape]) -> Shortcut:
    refs = opts.ints('from')
    if len(refs) != 1:
        raise DarknetError(f'{opts.where("from")}: exactly one layer expected, got {refs}')
    if index == 0:
        raise DarknetError(f'{opts.where()}: a shortcut cannot be the first layer')
    source = _resolve(opts, 'from', refs[0], index)
    activation = opts.activation()
    prev = shapes[index - 1]
    if shapes[source] != prev:
        raise DarknetError(f'{opts.where("from")}: shapes differ: layer {source} gives '
                           f'{shapes[source]}, the previous layer gives {prev}')
    return Shortcut(index, line, prev, prev, source=source, activation=activation)


def _route(opts: _Options, index: int, line: int, shapes: list[Shape]) -> Route:
    refs = opts.ints('layers')
    sources = tuple(_resolve(opts, 'layers', ref, index) for ref in refs)
    groups = opts.int('groups', 1, minimum=1)
    group_id = opts.int('group_id', 0, minimum=0)
    if group_id >= groups:
        raise DarknetError(f'{opts.where("group_id")}: must be < groups={groups}')
    spatial = {shapes[s][1:] for s in sources}
    if len(spatial) != 1:
        detail = ', '.join(f'layer {s}: {shapes[s]}' for s in sources)
        raise DarknetError(f'{opts.where("layers")}: inputs differ in height/width ({detail})')
    for s in sources:
        if shapes[s][0] % groups:
            raise DarknetError(f'{opts.where("groups")}: layer {s} has {shapes[s][0]} '
                               f'channels, not divisible by groups={groups}')
    channels = sum(shapes[s][0] // groups for s in sources)
    h, w = spatial.pop()
    in_shape = shapes[sources[0]]
    return Route(index, line, in_shape, _check_shape(opts, (channels, h, w)), sources=sources,
                 groups=groups, group_id=group_id)


def _upsample(opts: _Options, index: int, line: int, shape: Shape) -> Upsample:
    stride = opts.int('stride', 2)
    if stride < 1:
        raise DarknetError(f'{opts.where("stride")}: only upsampling (stride >= 1) is '
                           f'supported, got {stride}')
    scale = opts.float('scale', 1.0)
    c, h, w = shape
    return Upsample(index, line, shape, _check_shape(opts, (c, h * stride, w * stride)),
                    stride=stride, scale=scale)


def _maxpool(opts: _Options, index: int, line: int, shape: Shape) -> Maxpool:
    stride = opts.int('stride', 1, minimum=1)
    size = opts.int('size', stride, minimum=1)
    padding = opts.int('padding', size - 1, minimum=0)
    if 'stride_x' in opts.section.options or 'stride_y' in opts.section.options:
        sx, sy = opts.int('stride_x', stride, minimum=1), opts.int('stride_y', stride, minimum=1)
        if sx != stride or sy != stride:
            raise DarknetError(f'{opts.where("stride_x")}: different x/y strides are not '
                               'supported')
    if padding // 2 >= size or padding - padding // 2 >= size:
        raise DarknetError(f'{opts.where("padding")}: padding {padding} is too large for '
                           f'size {size}')
    c, h, w = shape
    out = (c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
    return Maxpool(index, line, shape, _check_shape(opts, out), size=size, stride=stride,
                   padding=padding)


def _yolo(opts: _Options, index: int, line: int, shape: Shape) -> Yolo:
    classes = opts.int('classes', 20, minimum=1)
    values = opts.floats('anchors')
    if len(values) % 2:
        raise DarknetError(f'{opts.where("anchors")}: needs (width, height) pairs, got '
                           f'{len(values)} numbers')
    anchors = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2))
    if any(a <= 0 for pair in anchors for a in pair):
        raise DarknetError(f'{opts.where("anchors")}: anchors must be positive')
    num = opts.int('num', len(anchors), minimum=1)
    if num != len(anchors):
        raise DarknetError(f'{opts.where("num")}: num={num} but {len(anchors)} anchors given')
    mask = opts.ints('mask', tuple(range(num)))
    if any(not 0 <= m < num for m in mask) or len(set(mask)) != len(mask):
        raise DarknetError(f'{opts.where("mask")}: entries must be distinct anchor indices '
                           f'in [0, {num}), got {mask}')
    scale_x_y = opts.float('scale_x_y', 1.0)
    if scale_x_y <= 0:
        raise DarknetError(f'{opts.where("scale_x_y")}: must be positive')
    expected = len(mask) * (5 + classes)
    if shape[0] != expected:
        raise DarknetError(f'{opts.where()}: input has {shape[0]} channels but '
                           f'len(mask) * (5 + classes) = {len(mask)} * (5 + {classes}) = '
                           f'{expected}; set filters={expected} in the convolution before it')
    return Yolo(index, line, shape, shape, mask=mask, anchors=anchors, classes=classes,
                num=num, scale_x_y=scale_x_y)


def _avgpool(opts: _Options, index: int, line: int, shape: Shape) -> Avgpool:
    return Avgpool(index, line, shape, (shape[0], 1, 1))


def _softmax(opts: _Options, index: int, line: int, shape: Shape) -> Softmax:
    groups = opts.int('groups', 1, minimum=1)
    if shape[0] % groups:
        raise DarknetError(f'{opts.where("groups")}: {shape[0]} channels not divisible by '
                           f'groups={groups}')
    return Softmax(index, line, shape, shape, groups=groups)


def build_network(sections: list[Section] | tuple[Section, ...], source: str = '<string>',
                  width: int | None = None, height: int | None = None) -> Network:
    """Infer shapes for raw sections; ``width``/``height`` override the ``[net]`` size."""
    if not sections or sections[0].name not in ('net', 'network'):
        first = sections[0] if sections else None
        where = f'{source}:{first.line}' if first else source
        raise DarknetError(f'{where}: the first section must be [net]')
    net = _Options(sections[0], source)
    cfg_w = net.int('width', 416, minimum=1)
    cfg_h = net.int('height', 416, minimum=1)
    channels = net.int('channels', 3, minimum=1)
    net.reject_unknown(_NET_KEYS)
    width = cfg_w if width is None else width
    height = cfg_h if height is None else height
    if width < 1 or height < 1 or max(width, height) > _MAX_DIM:
        raise DarknetError(f'{source}: invalid input size {width}x{height}')
    shapes: list[Shape] = []
    layers: list[Layer] = []
    shape: Shape = (channels, height, width)
    total = 0
    for index, section in enumerate(sections[1:]):
        opts = _Options(section, source)
        line = section.line
        kind = section.name
        if kind in ('convolutional', 'conv'):
            layer: Layer = _conv(opts, index, line, shape)
        elif kind == 'shortcut':
            layer = _shortcut(opts, index, line, shapes)
        elif kind == 'route':
            layer = _route(opts, index, line, shapes)
        elif kind == 'upsample':
            layer = _upsample(opts, index, line, shape)
        elif kind in ('maxpool', 'max'):
            layer = _maxpool(opts, index, line, shape)
        elif kind == 'yolo':
            layer = _yolo(opts, index, line, shape)
        elif kind in ('avgpool', 'avg'):
            layer = _avgpool(opts, index, line, shape)
        elif kind in ('softmax', 'soft'):
            layer = _softmax(opts, index, line, shape)
        elif kind in ('net', 'network'):
            raise DarknetError(f'{opts.where()}: [net] may only be the first section')
        else:
            raise DarknetError(f'{opts.where()}: unsupported section [{kind}]')
        opts.reject_unknown(_TRAINING_KEYS.get(_KIND_OF[type(layer)], set()))
        total += layer.num_params
        if total > _MAX_PARAMS:
            raise DarknetError(f'{opts.where()}: the network exceeds {_MAX_PARAMS} parameters '
                               'at this layer')
        layers.append(layer)
        shapes.append(layer.out_shape)
        shape = layer.out_shape
    if not layers:
        raise DarknetError(f'{source}: the network has no layers after [net]')
    options = {key: value for key, (value, _) in sections[0].options.items()}
    return Network(source=source, width=width, height=height, channels=channels,
                   layers=tuple(layers), options=options, sections=tuple(sections))


def parse_cfg(text: str, source: str = '<string>', width: int | None = None,
              height: int | None = None) -> Network:
    """Parse Darknet cfg text; ``source`` names it in error messages."""
    return build_network(split_sections(text, source), source, width=width, height=height)


def load_cfg(path: str | Path, width: int | None = None, height: int | None = None) -> Network:
    """Read and parse a Darknet ``.cfg`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise DarknetError(f'{path}: cfg file not found') from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DarknetError(f'{path}: cannot read cfg file: {exc}') from None
    return parse_cfg(text, str(path), width=width, height=height)



def sections_to_text(sections: list[Section] | tuple[Section, ...]) -> str:
    """Write raw sections back as cfg text (comments are not preserved)."""
    blocks = []
    for section in sections:
        lines = [f'[{section.name}]']
        lines += [f'{key}={value}' for key, (value, _) in section.options.items()]
        blocks.append('\n'.join(lines) + '\n')
    return '\n'.join(blocks)
