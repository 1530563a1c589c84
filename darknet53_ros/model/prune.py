"""Filter pruning: remove the least important filters and write a smaller cfg + weights pair.

Only filters whose removal cannot break the network's structure are candidates: a
convolution is prunable when it has batch norm and its output is read by nothing but the
next convolution (not by a ``[shortcut]`` add, a ``[route]`` concat, an upsample or a head).
In Darknet-53 / YOLOv3 that is the stem, the inner 1x1 conv of every residual block and the
head's 1x1/3x3 convs that do not feed a route, so residual sums and concatenations keep their
channel counts. Removing filter ``k`` of a prunable conv also removes input channel ``k`` of
the conv that reads it; the result equals the unpruned model with those filters' outputs
masked to zero.

Methods: ``l1`` ranks filters by the L1 norm of their kernel, per layer, at a uniform ratio;
``bn-gamma`` ranks by ``|batch-norm gamma|`` with one global threshold (network slimming, best
after sparsity training). Every pruned layer keeps at least ``min_keep_fraction`` of its
filters (and ``min_filters``), and kept counts are rounded up to a multiple of
``channel_multiple`` (8 suits TensorRT's INT8/FP16 kernels).
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.model.cfg import Network, Section, build_network, sections_to_text
from darknet53_ros.model.layers import Convolutional, Route, Shortcut
from darknet53_ros.model.weights import ConvWeights, DarknetWeights

METHODS = ('l1', 'bn-gamma')


@dataclass(frozen=True)
class PruneResult:
    """A pruned network, its weights and the kept filter indices per pruned layer."""

    network: Network
    weights: DarknetWeights
    kept: dict[int, np.ndarray]
    cfg_text: str


def consumers(network: Network) -> dict[int, set[int]]:
    """For each layer index, the indices of the layers that read its output."""
    readers: dict[int, set[int]] = {layer.index: set() for layer in network.layers}
    for layer in network.layers:
        if isinstance(layer, Route):
            for source in layer.sources:
                readers[source].add(layer.index)
            continue
        if layer.index > 0:
            readers[layer.index - 1].add(layer.index)
        if isinstance(layer, Shortcut):
            readers[layer.source].add(layer.index)
    return readers


def prunable_layers(network: Network) -> list[int]:
    """Indices of convolutions whose filters can be removed without breaking the structure."""
    readers = consumers(network)
    result = []
    for layer in network.layers:
        if not (isinstance(layer, Convolutional) and layer.batch_normalize
                and layer.groups == 1):
            continue
        users = [network.layers[i] for i in readers[layer.index]]
        if users and all(isinstance(u, Convolutional) and u.groups == 1
                         and u.index == layer.index + 1 for u in users):
            result.append(layer.index)
    return result


def filter_importance(conv: ConvWeights, method: str) -> np.ndarray:
    """Importance of each filter of one conv under ``method``."""
    if method == 'l1':
        return np.abs(conv.weights).reshape(conv.weights.shape[0], -1).sum(axis=1)
    if method == 'bn-gamma':
        if conv.scales is None:
            raise ConfigError('bn-gamma pruning needs batch-normalised layers')
        return np.abs(conv.scales)
    raise ConfigError(f'--method: unknown pruning method {method!r} (use {", ".join(METHODS)})')


def _keep_count(filters: int, wanted: int, min_keep_fraction: float, min_filters: int,
                channel_multiple: int) -> int:
    floor = max(min_filters, math.ceil(filters * min_keep_fraction))
    keep = max(wanted, floor)
    keep = int(math.ceil(keep / channel_multiple) * channel_multiple)
    return min(filters, keep)


def select_filters(network: Network, weights: DarknetWeights, ratio: float,
                   method: str = 'l1', min_keep_fraction: float = 0.1, min_filters: int = 8,
                   channel_multiple: int = 8) -> dict[int, np.ndarray]:
    """Sorted indices of the filters to keep, for every prunable layer."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f'--ratio must be in [0, 1), got {ratio}')
    if method not in METHODS:
        raise ConfigError(f'--method: unknown pruning method {method!r} '
                          f'(use {", ".join(METHODS)})')
    layers = prunable_layers(network)
    scores = {i: filter_importance(weights.layers[i], method) for i in layers}
    threshold = None
    if method == 'bn-gamma' and layers and ratio > 0:
        threshold = float(np.quantile(np.concatenate(list(scores.values())), ratio))
    kept = {}
    for i in layers:
        score = scores[i]
        filters = score.size
        if ratio == 0:
            wanted = filters
        elif threshold is not None:
            wanted = int(np.count_nonzero(score > threshold))
        else:
            wanted = filters - int(round(filters * ratio))
        keep = _keep_count(filters, wanted, min_keep_fraction, min_filters, channel_multiple)
        order = np.argsort(-score, kind='stable')[:keep]
        kept[i] = np.sort(order)
    return kept


def _slice_conv(conv: ConvWeights, out_keep: np.ndarray | None,
                in_keep: np.ndarray | None) -> ConvWeights:
    def rows(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (a if out_keep is None else a[out_keep])
    kernel = conv.weights if out_keep is None else conv.weights[out_keep]
    if in_keep is not None:
        kernel = kernel[:, in_keep]
    biases = conv.biases if out_keep is None else conv.biases[out_keep]
    return ConvWeights(biases=biases, weights=np.ascontiguousarray(kernel),
                       scales=rows(conv.scales), rolling_mean=rows(conv.rolling_mean),
                       rolling_var=rows(conv.rolling_var))


def apply_pruning(network: Network, weights: DarknetWeights,
                  kept: dict[int, np.ndarray]) -> PruneResult:
    """Build the smaller network and weights that keep only the ``kept`` filters."""
    allowed = set(prunable_layers(network))
    for index in kept:
        if index not in allowed:
            raise ConfigError(f'layer {index} cannot be pruned: its output feeds a shortcut, '
                              'route, upsample or head')
    sections = list(network.sections)
    new_layers: dict[int, ConvWeights] = {}
    for layer in network.layers:
        if not isinstance(layer, Convolutional):
            continue
        out_keep = kept.get(layer.index)
        in_keep = kept.get(layer.index - 1)
        new_layers[layer.index] = _slice_conv(weights.layers[layer.index], out_keep, in_keep)
        if out_keep is not None:
            section = sections[layer.index + 1]
            options = dict(section.options)
            line = options.get('filters', ('', section.line))[1]
            options['filters'] = (str(len(out_keep)), line)
            sections[layer.index + 1] = Section(section.name, section.line, options)
    pruned = build_network(sections, network.source, network.width, network.height)
    new_weights = DarknetWeights(layers=new_layers, major=weights.major, minor=weights.minor,
                                 revision=weights.revision, seen=weights.seen)
    return PruneResult(pruned, new_weights, dict(kept), sections_to_text(sections))


def prune(network: Network, weights: DarknetWeights, ratio: float, method: str = 'l1',
          min_keep_fraction: float = 0.1, min_filters: int = 8,
          channel_multiple: int = 8) -> PruneResult:
    """Select and remove the least important filters (see the module docstring and
    :func:`select_filters` for the floors)."""
    kept = select_filters(network, weights, ratio, method, min_keep_fraction, min_filters,
                          channel_multiple)
    return apply_pruning(network, weights, kept)


def masked_weights(network: Network, weights: DarknetWeights,
                   kept: dict[int, np.ndarray]) -> DarknetWeights:
    """The unpruned weights with every removed filter's output forced to zero.

    Batch norm gamma and beta of a removed filter are zeroed, so the filter outputs
    ``leaky(0) = 0``: the reference the pruned model must reproduce.
    """
    layers = {}
    for index, conv in weights.layers.items():
        keep = kept.get(index)
        if keep is None:
            layers[index] = conv
            continue
        drop = np.setdiff1d(np.arange(conv.biases.size), keep)
        scales = conv.scales.copy() if conv.scales is not None else None
        biases = conv.biases.copy()
        biases[drop] = 0.0
        if scales is not None:
            scales[drop] = 0.0
        layers[index] = ConvWeights(biases=biases, weights=conv.weights, scales=scales,
                                    rolling_mean=conv.rolling_mean,
                                    rolling_var=conv.rolling_var)
    return DarknetWeights(layers=layers, major=weights.major, minor=weights.minor,
                          revision=weights.revision, seen=weights.seen)
