"""Darknet ``.weights`` <-> :class:`~darknet53_ros.training.torch_model.DarknetModel`:
exact loading and saving, pretrained loading (other class counts, backbone prefixes) and
Darknet-style initialisation."""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from darknet53_ros.errors import DarknetError
from darknet53_ros.model.cfg import Network, Section, build_network
from darknet53_ros.model.layers import Convolutional
from darknet53_ros.model.weights import (
    ConvWeights,
    DarknetWeights,
    conv_layers,
    expected_size,
    parse_weights,
    read_weights,
    write_weights,
)
from darknet53_ros.training.torch_model import ConvBlock, DarknetModel

_LOG = logging.getLogger(__name__)



def _conv_blocks(model: DarknetModel) -> list[tuple[Convolutional, ConvBlock]]:
    return [(layer, module) for layer, module in zip(model.network.layers, model.module_list)
            if isinstance(layer, Convolutional) and isinstance(module, ConvBlock)]


def _copy(param: torch.Tensor, array: np.ndarray | None) -> None:
    assert array is not None
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array, np.float32)).view_as(param))


def set_conv_weights(block: ConvBlock, conv: ConvWeights) -> None:
    """Copy one layer's Darknet parameters into ``block`` (shapes must match)."""
    _copy(block.conv.weight, conv.weights)
    if block.bn is not None:
        assert block.bn.running_mean is not None and block.bn.running_var is not None
        _copy(block.bn.bias, conv.biases)
        _copy(block.bn.weight, conv.scales)
        _copy(block.bn.running_mean, conv.rolling_mean)
        _copy(block.bn.running_var, conv.rolling_var)
    else:
        assert block.conv.bias is not None
        _copy(block.conv.bias, conv.biases)


def get_conv_weights(block: ConvBlock) -> ConvWeights:
    """One layer's parameters as Darknet stores them (float32 copies)."""
    def arr(t: torch.Tensor | None) -> np.ndarray:
        assert t is not None
        return t.detach().to('cpu', torch.float32).numpy().copy()

    if block.bn is not None:
        return ConvWeights(biases=arr(block.bn.bias), weights=arr(block.conv.weight),
                           scales=arr(block.bn.weight), rolling_mean=arr(block.bn.running_mean),
                           rolling_var=arr(block.bn.running_var))
    return ConvWeights(biases=arr(block.conv.bias), weights=arr(block.conv.weight))


def to_darknet_weights(model: DarknetModel, seen: int | None = None) -> DarknetWeights:
    """The model's parameters as :class:`DarknetWeights` (header from ``model.header``)."""
    header = model.header
    weights = DarknetWeights(major=header.major, minor=header.minor, revision=header.revision,
                             seen=header.seen if seen is None else int(seen))
    for layer, block in _conv_blocks(model):
        weights.layers[layer.index] = get_conv_weights(block)
    return weights


def load_darknet_weights(model: DarknetModel, source: str | Path | DarknetWeights,
                         ) -> DarknetWeights:
    """Load a ``.weights`` file (or parsed weights) matching the model's cfg exactly."""
    weights = source if isinstance(source, DarknetWeights) else read_weights(
        source, model.network)
    for layer, block in _conv_blocks(model):
        conv = weights.layers.get(layer.index)
        if conv is None:
            raise DarknetError(f'no weights for convolutional layer {layer.index}')
        set_conv_weights(block, conv)
    model.header = DarknetWeights(major=weights.major, minor=weights.minor,
                                  revision=weights.revision, seen=weights.seen)
    return weights


def save_darknet_weights(model: DarknetModel, path: str | Path, seen: int | None = None,
                         ) -> None:
    """Write the model as a Darknet ``.weights`` file (atomically)."""
    write_weights(path, model.network, to_darknet_weights(model, seen))


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` loaded: layer indices loaded and re-initialised."""

    loaded: list[int] = field(default_factory=list)
    reinitialised: list[int] = field(default_factory=list)
    source_classes: int | None = None
    mode: str = 'exact'


def _with_classes(network: Network, classes: int) -> Network:
    """The same cfg with every ``[yolo]`` head (and the conv before it) set to ``classes``."""
    sections = [Section(s.name, s.line, dict(s.options)) for s in network.sections]
    for yolo in network.yolo_layers():
        ysec = sections[yolo.index + 1]
        ysec.options['classes'] = (str(classes), ysec.options.get('classes', ('', 0))[1])
        csec = sections[yolo.index]
        csec.options['filters'] = (str(len(yolo.mask) * (5 + classes)),
                                   csec.options.get('filters', ('', 0))[1])
    return build_network(sections, network.source, network.width, network.height)


def _infer_source_classes(network: Network, size: int, wide: bool) -> int | None:
    """Class count a weights file of ``size`` bytes was trained with (head convs differ)."""
    yolos = network.yolo_layers()
    if not yolos:
        return None
    base = expected_size(network, wide)
    # Each head conv has len(mask) * (5 + C) filters of in_c * k * k weights plus a bias.
    per_class = 0
    for yolo in yolos:
        conv = network.layers[yolo.index - 1]
        if not isinstance(conv, Convolutional) or conv.batch_normalize or conv.groups != 1:
            return None
        per_class += len(yolo.mask) * (conv.in_shape[0] * conv.size * conv.size + 1) * 4
    diff = size - base
    if per_class == 0 or diff % per_class:
        return None
    classes = network.classes + diff // per_class
    return classes if classes >= 1 else None


def load_pretrained(model: DarknetModel, path: str | Path) -> PretrainedReport:
    """Load ``.weights`` for fine-tuning, tolerating a different class count or a prefix.

    Tried in order: an exact match of the model's cfg; the same cfg with another class count
    (inferred from the file size; the head convolutions whose shapes differ keep their fresh
    initialisation); a prefix of the layers (a backbone file such as ``darknet53.conv.74``,
    loaded until the data ends).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DarknetError(f'{path}: cannot read weights file: {exc}') from None
    network = model.network
    if len(data) < 16:
        raise DarknetError(f'{path}: {len(data)} bytes is too short for a weights file')
    major, minor = (int(v) for v in np.frombuffer(data, '<i4', count=2))
    wide = major * 10 + minor >= 2
    blocks = _conv_blocks(model)
    report = PretrainedReport()
    if len(data) == expected_size(network, wide):
        load_darknet_weights(model, parse_weights(data, network, str(path)))
        report.loaded = [layer.index for layer, _ in blocks]
        return report
    classes = _infer_source_classes(network, len(data), wide)
    if classes is not None:
        source_net = _with_classes(network, classes)
        weights = parse_weights(data, source_net, str(path))
        report.mode, report.source_classes = 'classes', classes
    else:
        weights = _parse_prefix(data, network, str(path), wide)
        report.mode = 'prefix'
    for layer, block in blocks:
        conv = weights.layers.get(layer.index)
        if conv is not None and conv.weights.shape == tuple(block.conv.weight.shape):
            set_conv_weights(block, conv)
            report.loaded.append(layer.index)
        else:
            report.reinitialised.append(layer.index)
    model.header = DarknetWeights(major=weights.major, minor=weights.minor,
                                  revision=weights.revision, seen=0)
    if not report.loaded:
        raise DarknetError(f'{path}: no layer of the weights file fits {network.source}')
    return report


def _parse_prefix(data: bytes, network: Network, source: str, wide: bool) -> DarknetWeights:
    """Parse a weights file holding the first convolutional layers of ``network`` only."""
    convs = conv_layers(network)
    header = 12 + (8 if wide else 4)
    total = header
    last = None
    for layer in convs:
        total += 4 * layer.num_params
        if total == len(data):
            last = layer.index
            break
        if total > len(data):
            break
    if last is None:
        raise DarknetError(
            f'{source}: {len(data)} bytes match neither {network.source} '
            f'({expected_size(network, wide)} bytes), another class count of it, nor a prefix '
            'of its convolutional layers')
    prefix = build_network(network.sections[:last + 2], network.source, network.width,
                           network.height)
    return parse_weights(data, prefix, source)


def build_model(network: Network, weights: str | Path | DarknetWeights | None = None,
                ) -> DarknetModel:
    """Create a :class:`DarknetModel` (Darknet-style init) and optionally load exact weights."""
    model = DarknetModel(network)
    init_weights(model)
    if weights is not None:
        load_darknet_weights(model, weights)
    return model


def init_weights(model: DarknetModel, layers: list[int] | None = None) -> None:
    """Fresh initialisation: He-normal kernels, BN gamma 1 / beta 0, YOLO-friendly head biases.

    Head convolutions get an objectness bias of ``logit(1 / cells)`` (about one object per
    anchor and head) and class biases of ``log(0.6 / classes)``, which keeps the early losses
    small and makes training converge much faster than zero biases.
    """
    wanted = None if layers is None else set(layers)
    heads = {head.layer.index - 1: head for head in model.heads}
    for layer, block in _conv_blocks(model):
        if wanted is not None and layer.index not in wanted:
            continue
        nn.init.kaiming_normal_(block.conv.weight, a=0.1, mode='fan_in',
                                nonlinearity='leaky_relu')
        if block.bn is not None:
            nn.init.ones_(block.bn.weight)
            nn.init.zeros_(block.bn.bias)
            block.bn.reset_running_stats()
        elif block.conv.bias is not None:
            nn.init.zeros_(block.conv.bias)
        head = heads.get(layer.index)
        if head is not None and block.conv.bias is not None:
            with torch.no_grad():
                nn.init.normal_(block.conv.weight, 0.0, 0.01)
                attrs = 5 + head.layer.classes
                bias = block.conv.bias.view(len(head.anchors), attrs)
                cells = max(2.0, layer.out_shape[1] * layer.out_shape[2])
                bias[:, 4] = float(np.log(1.0 / (cells - 1.0)))
                bias[:, 5:] = float(np.log(0.6 / max(head.layer.classes - 0.99, 0.01)))
