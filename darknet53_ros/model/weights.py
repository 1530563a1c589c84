"""Darknet ``.weights`` files: read, write (byte-identical round trip) and random init.

Layout: a header of three int32 (major, minor, revision) and ``seen`` (images seen in
training), which is a uint64 when ``major * 10 + minor >= 2`` and a uint32 before; then, for
every ``[convolutional]`` layer in cfg order, either batch-norm parameters (beta, gamma,
rolling mean, rolling variance) or the bias, then the kernel in OIHW order, all float32
little-endian. A file shorter or longer than the cfg implies is an error giving both byte
counts (OpenCV's importer silently zero-fills a truncated file; we refuse it).

Batch norm follows Darknet's inference formula ``gamma * (x - mean) / (sqrt(var) + 1e-6) +
beta`` (``BN_EPSILON``, added to the standard deviation, not the variance). OpenCV adds 1e-6
to the variance instead; for the variances of trained models the two agree to better than
1e-6 relative.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from darknet53_ros.errors import DarknetError
from darknet53_ros.fileio import atomic_write_bytes
from darknet53_ros.model.cfg import Network
from darknet53_ros.model.layers import Convolutional, Shortcut, Yolo

BN_EPSILON = 1e-6
"""Darknet's batch-norm epsilon, added to sqrt(variance)."""

_HEADER = np.dtype([('major', '<i4'), ('minor', '<i4'), ('revision', '<i4')])


@dataclass
class ConvWeights:
    """Parameters of one convolutional layer, as stored in the file (float32)."""

    biases: np.ndarray
    weights: np.ndarray
    scales: np.ndarray | None = None
    rolling_mean: np.ndarray | None = None
    rolling_var: np.ndarray | None = None

    @property
    def batch_normalize(self) -> bool:
        """Whether the layer has batch-norm parameters."""
        return self.scales is not None


@dataclass
class DarknetWeights:
    """A whole ``.weights`` file: header fields and per-layer parameters by layer index;
    ``source`` names the file read (for error messages)."""

    layers: dict[int, ConvWeights] = field(default_factory=dict)
    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0
    source: str = ''

    @property
    def seen_is_64bit(self) -> bool:
        """Whether ``seen`` is stored as 64 bits (version 0.2 and later)."""
        return self.major * 10 + self.minor >= 2


def conv_layers(network: Network) -> list[Convolutional]:
    """The convolutional layers of ``network`` in file order."""
    return [layer for layer in network.layers if isinstance(layer, Convolutional)]


def _layer_sizes(layer: Convolutional) -> tuple[int, tuple[int, int, int, int]]:
    kernel = (layer.filters, layer.in_shape[0] // layer.groups, layer.size, layer.size)
    return layer.filters, kernel


def expected_size(network: Network, seen_is_64bit: bool = True) -> int:
    """Byte size of a ``.weights`` file for ``network``."""
    header = 12 + (8 if seen_is_64bit else 4)
    return header + 4 * sum(layer.num_params for layer in conv_layers(network))


def read_weights(path: str | Path, network: Network) -> DarknetWeights:
    """Read a ``.weights`` file for ``network``; its size must match the cfg exactly."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DarknetError(f'{path}: weights file not found') from None
    except OSError as exc:
        raise DarknetError(f'{path}: cannot read weights file: {exc}') from None
    return parse_weights(data, network, str(path))


def parse_weights(data: bytes, network: Network, source: str = '<bytes>') -> DarknetWeights:
    """Parse ``.weights`` bytes for ``network`` (``source`` names it in errors)."""
    if len(data) < 16:
        raise DarknetError(f'{source}: {len(data)} bytes is too short for a Darknet weights '
                           'header (16 or 20 bytes)')
    header = np.frombuffer(data, _HEADER, count=1)[0]
    major, minor, revision = (int(header[k]) for k in ('major', 'minor', 'revision'))
    if not (0 <= major < 1000 and 0 <= minor < 1000):
        raise DarknetError(f'{source}: invalid header version {major}.{minor}.{revision}; '
                           'is this a Darknet .weights file?')
    wide = major * 10 + minor >= 2
    expected = expected_size(network, wide)
    if len(data) != expected:
        kind = 'truncated' if len(data) < expected else 'too long'
        raise DarknetError(
            f'{source}: file is {kind}: expected {expected} bytes for {network.source} '
            f'({network.num_params} float32 parameters after a {12 + (8 if wide else 4)}-byte '
            f'header), got {len(data)} bytes' + size_hint(network, len(data), wide))
    seen = int(np.frombuffer(data, '<u8' if wide else '<u4', count=1, offset=12)[0])
    offset = 12 + (8 if wide else 4)
    floats = np.frombuffer(data, '<f4', offset=offset)
    weights = DarknetWeights(major=major, minor=minor, revision=revision, seen=seen,
                             source=source)
    pos = 0

    def take(count: int) -> np.ndarray:
        nonlocal pos
        chunk = floats[pos:pos + count]
        pos += count
        return chunk.astype(np.float32)

    for layer in conv_layers(network):
        filters, kernel = _layer_sizes(layer)
        if layer.batch_normalize:
            biases, scales, mean, var = (take(filters) for _ in range(4))
            conv = ConvWeights(biases, take(int(np.prod(kernel))).reshape(kernel), scales, mean,
                               var)
        else:
            biases = take(filters)
            conv = ConvWeights(biases, take(int(np.prod(kernel))).reshape(kernel))
        weights.layers[layer.index] = conv
    return weights


def size_hint(network: Network, size: int, seen_is_64bit: bool = True) -> str:
    """Why a ``.weights`` file of ``size`` bytes may not match ``network``: it fits the same
    cfg with another class count, or exactly its first convolutional layers (a backbone such
    as ``darknet53.conv.74``); else whether it looks cut off or belongs to another cfg."""
    header = 12 + (8 if seen_is_64bit else 4)
    if size < header or (size - header) % 4:
        return ' (not a whole number of float32 values: the file was cut off)'
    floats = (size - header) // 4
    extra = floats - sum(layer.num_params for layer in conv_layers(network))
    slope = sum(len(y.mask) * _head_params_per_channel(network, y) for y in network.yolo_layers())
    classes = network.classes
    if slope and classes and extra % slope == 0 and classes + extra // slope >= 1:
        return (f'; the size fits this cfg with classes={classes + extra // slope}: '
                'weights of a model trained on another class count?')
    done = 0
    for layer in conv_layers(network):
        done += layer.num_params
        if done == floats:
            return (f'; the size fits exactly layers 0-{layer.index} of this cfg: a backbone '
                    'or partial weights file (like darknet53.conv.74), not weights of the '
                    'whole model')
    return '; if the file is complete, it belongs to a different cfg'


def _head_params_per_channel(network: Network, head: Yolo) -> int:
    """Parameters per output channel of the convolution feeding a ``[yolo]`` head (0 if none)."""
    conv = network.layers[head.index - 1] if head.index else None
    if not isinstance(conv, Convolutional):
        return 0
    per_filter = conv.in_shape[0] // conv.groups * conv.size * conv.size
    return per_filter + (4 if conv.batch_normalize else 1)


def serialize_weights(network: Network, weights: DarknetWeights) -> bytes:
    """Return the ``.weights`` bytes for ``weights`` (validated against ``network``)."""
    header = np.array([(weights.major, weights.minor, weights.revision)], _HEADER).tobytes()
    header += np.array([weights.seen], '<u8' if weights.seen_is_64bit else '<u4').tobytes()
    parts = [header]
    for layer in conv_layers(network):
        conv = weights.layers.get(layer.index)
        where = f'{network.source}: layer {layer.index} (line {layer.line})'
        if conv is None:
            raise DarknetError(f'{where}: no weights for this convolutional layer')
        filters, kernel = _layer_sizes(layer)
        if conv.batch_normalize != layer.batch_normalize:
            raise DarknetError(f'{where}: batch_normalize={int(layer.batch_normalize)} in the '
                               'cfg does not match the weights')
        arrays = ([conv.biases, conv.scales, conv.rolling_mean, conv.rolling_var]
                  if layer.batch_normalize else [conv.biases])
        for name, array in zip(('biases', 'scales', 'rolling_mean', 'rolling_var'), arrays):
            if array is None or np.shape(array) != (filters,):
                raise DarknetError(f'{where}: {name} must have shape ({filters},), got '
                                   f'{None if array is None else np.shape(array)}')
        if np.shape(conv.weights) != kernel:
            raise DarknetError(f'{where}: weights must have shape {kernel}, got '
                               f'{np.shape(conv.weights)}')
        parts.extend(np.ascontiguousarray(a, '<f4').tobytes() for a in arrays)
        parts.append(np.ascontiguousarray(conv.weights, '<f4').tobytes())
    return b''.join(parts)


def write_weights(path: str | Path, network: Network, weights: DarknetWeights) -> None:
    """Write a ``.weights`` file atomically (a failed write never replaces a good file)."""
    atomic_write_bytes(path, serialize_weights(network, weights))


def random_weights(network: Network, seed: int = 0) -> DarknetWeights:
    """Random but well-scaled weights (He init, plausible BN statistics) for ``network``.

    Activations keep a stable magnitude through deep stacks, so outputs are meaningful for
    numeric parity tests.
    """
    rng = np.random.default_rng(seed)
    weights = DarknetWeights(seen=0)
    feeds_shortcut = {layer.index - 1 for layer in network.layers
                      if isinstance(layer, Shortcut)}
    for layer in conv_layers(network):
        filters, kernel = _layer_sizes(layer)
        fan_in = kernel[1] * kernel[2] * kernel[3]
        gain = 2.0 if layer.activation in ('leaky', 'relu') else 0.5
        kernel_w = rng.normal(0.0, np.sqrt(gain / fan_in), kernel).astype(np.float32)
        if layer.batch_normalize:
            var = rng.uniform(0.5, 1.5, filters).astype(np.float32)
            # Residual branches start small so the sum F(x) + x keeps its scale.
            gamma = (0.05, 0.2) if layer.index in feeds_shortcut else (0.5, 1.0)
            conv = ConvWeights(
                biases=rng.normal(0.0, 0.1, filters).astype(np.float32), weights=kernel_w,
                scales=rng.uniform(*gamma, filters).astype(np.float32),
                rolling_mean=rng.normal(0.0, 0.1, filters).astype(np.float32),
                rolling_var=var)
        else:
            conv = ConvWeights(biases=rng.normal(0.0, 0.1, filters).astype(np.float32),
                               weights=kernel_w)
        weights.layers[layer.index] = conv
    return weights


def fold_batchnorm(conv: ConvWeights) -> tuple[np.ndarray, np.ndarray]:
    """Return (kernel, bias) with batch norm folded in, as float32."""
    if not conv.batch_normalize:
        return conv.weights.astype(np.float32), conv.biases.astype(np.float32)
    assert conv.scales is not None and conv.rolling_mean is not None
    assert conv.rolling_var is not None
    if np.any(~(conv.rolling_var >= 0)):
        raise DarknetError('batch-norm rolling_var has negative or NaN entries')
    std = np.sqrt(conv.rolling_var.astype(np.float64)) + BN_EPSILON
    factor = conv.scales.astype(np.float64) / std
    kernel = conv.weights.astype(np.float64) * factor[:, None, None, None]
    bias = conv.biases.astype(np.float64) - conv.rolling_mean.astype(np.float64) * factor
    return kernel.astype(np.float32), bias.astype(np.float32)
