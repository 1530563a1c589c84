"""Explicit INT8 post-training quantisation: insert Q/DQ pairs into a contract ONNX model.

The output is a *Q/DQ* ("explicit quantisation") ONNX model, opset 13, that TensorRT (8.5, 10,
11) builds into an INT8 engine without a calibrator and that ONNX Runtime runs as is:

* symmetric signed int8 everywhere, zero points of type int8 equal to 0, ``scale = amax / 127``;
* the activation input of every quantised ``Conv`` gets a ``QuantizeLinear`` ->
  ``DequantizeLinear`` pair (one pair per tensor, shared by all its quantised consumers);
* Conv weights are quantised per output channel (``axis=0``) as a Q/DQ pair on the FP32
  weight (``weight_format='qdq'``, accepted by every TensorRT version) or as a
  ``DequantizeLinear`` on an int8 initializer (``'int8'``, smaller; TensorRT >= 10);
* residual ``Add``: both inputs are quantised or neither (NVIDIA's Q/DQ placement
  recommendations: quantise the inputs of weighted operations and the residual input of
  element-wise additions so TensorRT can fuse them, leave ``Concat``/``Resize``/``MaxPool``
  for TensorRT to propagate Q/DQ through);
* ``target='onnxruntime'`` additionally quantises Conv outputs and the biases (int32, scale
  ``x_scale * w_scale``), which is what ONNX Runtime needs to fuse ``DQ -> Conv -> Q`` into
  ``QLinearConv``. TensorRT accepts the extra output Q/DQ, but its ONNX parser only takes 8-bit
  (not int32) ``DequantizeLinear`` inputs, so that variant is for ONNX Runtime only; the
  default ``target='tensorrt'`` keeps FP32 biases and leaves Conv outputs unquantised.

Activation ranges come from calibration images run through ONNX Runtime (intermediate tensors
added as outputs) with the same letterbox preprocessing as inference, and one of three
methods: ``minmax`` (max ``|x|``), ``percentile`` (of ``|x|``) or ``entropy`` (TensorRT's KL
divergence method over a 2048-bin histogram of ``|x|``, 128 quantised bins).

The calibration set must be disjoint from any data the model is evaluated on: the report
records the path/key and the pixel hash (:func:`darknet53_ros.optimize.calibration.image_digest`)
of every calibration and held-out image so an evaluation can check it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
import datetime
import fnmatch
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError

_LOG = logging.getLogger(__name__)

METHODS = ('entropy', 'percentile', 'minmax')
TARGETS = ('tensorrt', 'onnxruntime')
WEIGHT_FORMATS = ('qdq', 'int8')
HIST_BINS = 2048
"""Histogram bins over ``[0, max |x|]`` used by the percentile and entropy methods."""
QUANT_BINS = 128
"""Quantised levels of ``|x|`` that the entropy method compares against (TensorRT's 128)."""
OPSET = 13
"""Minimum opset: per-channel (``axis``) Q/DQ needs 13."""
_EPS = 1e-12
_INT8_MAX = 127.0

Method = Literal['entropy', 'percentile', 'minmax']
Target = Literal['tensorrt', 'onnxruntime']
Preprocess = Callable[[np.ndarray, int, int], np.ndarray]

DISJOINT_NOTE = ('The calibration images must be disjoint from every evaluation set; their '
                 'keys and pixel sha256 digests are listed here so evaluation can check.')


# --------------------------------------------------------------------------------------------
# Calibration statistics


class Histogram:
    """Streaming histogram of ``|x|`` over ``[0, limit]`` with a fixed number of bins.

    When a batch exceeds ``limit`` the range doubles (adjacent bins merge) until it fits, so
    counts stay exact up to the bin width. ``amax`` is the exact running maximum of ``|x|``.
    """

    def __init__(self, bins: int = HIST_BINS) -> None:
        if bins < QUANT_BINS or bins % 2:
            raise ConfigError(f'histogram bins {bins}: need an even number >= {QUANT_BINS}')
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.limit = 0.0
        self.amax = 0.0

    @property
    def bin_width(self) -> float:
        """Width of one bin (0 before any non-zero value)."""
        return self.limit / self.bins

    def update(self, values: np.ndarray) -> None:
        """Add the absolute values of ``values`` (any shape, finite floats)."""
        data = np.abs(np.asarray(values, np.float32).ravel())
        if data.size == 0:
            return
        top = float(data.max())
        if not np.isfinite(top):
            raise ModelError('calibration produced a non-finite activation (inf/nan)')
        self.amax = max(self.amax, top)
        if self.limit == 0.0:
            if top == 0.0:
                self.counts[0] += data.size
                return
            self.limit = top
        while top > self.limit:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(self.bins // 2, np.int64)])
            self.limit *= 2.0
        index = np.minimum((data * np.float32(self.bins / self.limit)).astype(np.int64),
                           self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    def amax_for(self, method: str, percentile: float = 99.99) -> float:
        """The clipping threshold for ``method`` (one of :data:`METHODS`)."""
        if method == 'minmax':
            return self.amax
        if self.limit == 0.0:
            return 0.0
        if method == 'percentile':
            return percentile_threshold(self.counts, self.bin_width, percentile)
        if method == 'entropy':
            return min(entropy_threshold(self.counts, self.bin_width), self.amax)
        raise ConfigError(f'calibration method {method!r}: expected one of {METHODS}')


def minmax_threshold(values: np.ndarray) -> float:
    """The min-max threshold: ``max |x|``."""
    data = np.asarray(values)
    return float(np.abs(data).max()) if data.size else 0.0


def percentile_threshold(counts: np.ndarray, bin_width: float, percentile: float) -> float:
    """The ``percentile`` of ``|x|`` from a histogram over ``[0, len(counts) * bin_width]``.

    Returns the upper edge of the first bin whose cumulative share reaches ``percentile``.
    """
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f'percentile {percentile}: must be in (0, 100]')
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    cdf = np.cumsum(counts) / total
    index = int(np.searchsorted(cdf, percentile / 100.0 - 1e-12))
    return float(min(index + 1, len(counts)) * bin_width)


def entropy_threshold(counts: np.ndarray, bin_width: float, quant_bins: int = QUANT_BINS,
                      start: int | None = None) -> float:
    """TensorRT-style entropy calibration: the threshold minimising KL(P || Q).

    For every candidate ``i`` (bins kept, from ``quant_bins`` up to the last non-empty bin),
    ``P`` is the histogram clipped to ``i`` bins with the outliers added to the last kept bin,
    and ``Q`` is the first ``i`` bins merged into ``quant_bins`` levels and spread back
    uniformly over the non-empty bins of each level (a bin where ``P > 0`` but ``Q = 0`` costs
    as if ``Q = 1e-12``). Returns the upper edge of the best ``i``. All candidates are
    evaluated at once from prefix sums (``O(candidates * quant_bins)``).
    """
    hist = np.asarray(counts, np.float64)
    total = hist.sum()
    if total <= 0:
        return 0.0
    last = int(np.flatnonzero(hist)[-1]) + 1
    if last <= quant_bins:
        return float(last * bin_width)
    first = quant_bins if start is None else min(max(start, quant_bins), last)
    zero = np.zeros(1)
    csum = np.concatenate([zero, np.cumsum(hist)])
    nonzero = np.concatenate([zero, np.cumsum(hist > 0)])
    hlogh = np.concatenate([zero, np.cumsum(hist * np.log(np.where(hist > 0, hist, 1.0)))])
    cand = np.arange(first, last + 1)
    edges = (np.arange(quant_bins + 1)[None, :] * cand[:, None]) // quant_bins
    sums = csum[edges[:, 1:]] - csum[edges[:, :-1]]
    filled = nonzero[edges[:, 1:]] - nonzero[edges[:, :-1]]
    per_bin = np.divide(sums, filled, out=np.zeros_like(sums), where=filled > 0)
    h_last = hist[cand - 1]
    inner = sums.copy()  # mass of bins 0 .. i-2 per level (the last bin is handled apart)
    inner[:, -1] -= h_last
    log_per = np.log(np.where(inner > 0, per_bin, 1.0))
    q_total = csum[cand]
    valid = q_total > 0  # all kept bins empty: Q is undefined, the candidate is skipped
    q_total = np.where(valid, q_total, 1.0)
    # sum_j p_j log p_j and sum_j p_j log q_j over j < i - 1, with p_j = h_j / total
    own = (hlogh[cand - 1] - csum[cand - 1] * np.log(total)) / total
    cross = (np.sum(np.where(inner > 0, inner * log_per, 0.0), axis=1)
             - csum[cand - 1] * np.log(q_total)) / total
    p_last = (h_last + total - csum[cand]) / total
    q_last = np.where(h_last > 0, per_bin[:, -1] / q_total, 1e-12)
    safe_p = np.where(p_last > 0, p_last, 1.0)
    tail = np.where(p_last > 0, p_last * (np.log(safe_p) - np.log(q_last)), 0.0)
    kl = np.where(valid, own - cross + tail, np.inf)
    return float(cand[int(np.argmin(kl))] * bin_width)


# --------------------------------------------------------------------------------------------
# Graph analysis


@dataclass
class QuantPlan:
    """Which tensors get Q/DQ pairs and which nodes consume the dequantised versions."""

    convs: list[str] = field(default_factory=list)
    """Names of the Conv nodes whose input and weight are quantised."""
    kept: list[str] = field(default_factory=list)
    """Names of nodes kept in floating point (matched by ``keep_fp``)."""
    activations: dict[str, list[str]] = field(default_factory=dict)
    """Tensor name -> names of the nodes that read its dequantised version."""
    conv_outputs: list[str] = field(default_factory=list)
    """Tensors quantised as Conv outputs (``target='onnxruntime'``)."""


def _node_names(model: Any) -> None:
    """Give every unnamed node a unique name (``<op>_<index>``) so patterns can match it."""
    used = {node.name for node in model.graph.node if node.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f'{node.op_type}_{i}'
            while name in used:
                name += '_'
            node.name = name
            used.add(name)


def _consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def _producers(model: Any) -> dict[str, Any]:
    return {name: node for node in model.graph.node for name in node.output if name}


def head_convs(model: Any) -> list[str]:
    """Names of the Conv nodes that produce the model outputs (the YOLO head convolutions).

    These are the Convs from which a graph output is reachable without passing through
    another Conv.
    """
    producers = _producers(model)
    found: list[str] = []
    seen: set[int] = set()
    stack = [out.name for out in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producers.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == 'Conv':
            found.append(node.name)
            continue
        stack.extend(name for name in node.input if name)
    order = {node.name: i for i, node in enumerate(model.graph.node)}
    return sorted(found, key=order.__getitem__)


def decode_nodes(model: Any) -> set[str]:
    """Names of the nodes downstream of the head convolutions: the YOLO box decode.

    The decode (sigmoid, grid offsets, ``exp(t) * anchor``, corner arithmetic) works on box
    coordinates in pixels; it is never quantised, whatever its operators look like (its Adds
    are not residual connections).
    """
    consumers = _consumers(model)
    heads = set(head_convs(model))
    found: set[str] = set()
    stack = [out for node in model.graph.node if node.name in heads for out in node.output]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.name not in found:
                found.add(node.name)
                stack.extend(node.output)
    return found


def first_convs(model: Any) -> list[str]:
    """Names of the Conv nodes with no other Conv upstream (normally the first convolution)."""
    producers = _producers(model)
    result = []
    for node in model.graph.node:
        if node.op_type != 'Conv':
            continue
        stack, upstream_conv = [node.input[0]], False
        seen: set[int] = set()
        while stack and not upstream_conv:
            tensor = stack.pop()
            parent = producers.get(tensor)
            if parent is None or id(parent) in seen:
                continue
            seen.add(id(parent))
            if parent.op_type == 'Conv':
                upstream_conv = True
            stack.extend(name for name in parent.input if name)
        if not upstream_conv:
            result.append(node.name)
    return result


def default_keep_fp(model: Any) -> list[str]:
    """The usual layers kept in floating point: the first Conv and the YOLO head Convs."""
    import onnx

    model = _as_model(model)
    if any(not node.name for node in model.graph.node):
        named = onnx.ModelProto()
        named.CopyFrom(model)
        _node_names(named)
        model = named
    names = first_convs(model) + head_convs(model)
    return list(dict.fromkeys(names))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_quantization(model: Any, keep_fp: Sequence[str] = (),
                      target: Target = 'tensorrt') -> QuantPlan:
    """Decide the Q/DQ placement for ``model`` (see the module docstring for the rules).

    ``keep_fp`` holds node names or :mod:`fnmatch` patterns of nodes left in floating point.
    """
    if target not in TARGETS:
        raise ConfigError(f'quantisation target {target!r}: expected one of {TARGETS}')
    _node_names(model)
    initializers = {init.name for init in model.graph.initializer}
    consumers = _consumers(model)
    plan = QuantPlan()
    decode = decode_nodes(model)
    unused = [p for p in keep_fp if not any(_matches(n.name, [p]) for n in model.graph.node)]
    if unused:
        raise ConfigError(f'--keep-fp {", ".join(unused)}: matches no node of the model')

    def want(tensor: str, node: Any) -> None:
        readers = plan.activations.setdefault(tensor, [])
        if node.name not in readers:
            readers.append(node.name)

    for node in model.graph.node:
        if _matches(node.name, keep_fp):
            plan.kept.append(node.name)
            continue
        if node.op_type == 'Conv':
            if len(node.input) < 2 or node.input[1] not in initializers:
                continue  # weights computed at run time: leave in float
            if node.input[0] in initializers:
                continue
            plan.convs.append(node.name)
            want(node.input[0], node)
        elif node.op_type == 'Add' and node.name not in decode:
            inputs = [name for name in node.input if name]
            if len(inputs) == 2 and not any(name in initializers for name in inputs):
                for name in inputs:
                    want(name, node)

    if target == 'onnxruntime':
        quantised = set(plan.convs)
        fusable = {'LeakyRelu', 'Relu', 'Add', 'Concat', 'MaxPool', 'Resize', 'Conv'}
        kept = set(plan.kept)
        for node in model.graph.node:
            if node.name not in quantised:
                continue
            out = node.output[0]
            readers = [c for c in consumers.get(out, [])
                       if c.op_type in fusable and c.name not in kept]
            if readers and len(readers) == len(consumers.get(out, [])) and \
                    out not in {o.name for o in model.graph.output}:
                plan.conv_outputs.append(out)
                for reader in readers:
                    want(out, reader)
    return plan


# --------------------------------------------------------------------------------------------
# Q/DQ insertion


def _weight_scales(weight: np.ndarray, per_channel: bool) -> np.ndarray:
    if per_channel:
        amax = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    else:
        amax = np.array(np.abs(weight).max())
    return np.maximum(amax / _INT8_MAX, _EPS).astype(np.float32)


def insert_qdq(model: Any, plan: QuantPlan, amax: dict[str, float], per_channel: bool = True,
               weight_format: str = 'qdq', target: Target = 'tensorrt') -> Any:
    """Return a copy of ``model`` with Q/DQ nodes inserted following ``plan``.

    ``amax`` maps every tensor in ``plan.activations`` to its clipping threshold.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if weight_format not in WEIGHT_FORMATS:
        raise ConfigError(f'weight format {weight_format!r}: expected one of {WEIGHT_FORMATS}')
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    _node_names(out)
    inits = {init.name: init for init in graph.initializer}
    new_inits: list[Any] = []
    zero = helper.make_tensor('qdq_zero_point_int8', TensorProto.INT8, [], [0])
    new_inits.append(zero)
    act_scale: dict[str, float] = {}
    dq_name: dict[str, str] = {}
    q_nodes: dict[str, list[Any]] = {}
    for tensor in plan.activations:
        if tensor not in amax:
            raise ModelError(f'no calibration range for tensor {tensor!r}')
        scale = max(float(amax[tensor]), _EPS) / _INT8_MAX
        act_scale[tensor] = scale
        scale_name = f'{tensor}_scale'
        new_inits.append(helper.make_tensor(scale_name, TensorProto.FLOAT, [],
                                            [np.float32(scale)]))
        q_out, dq_out = f'{tensor}_quantized', f'{tensor}_dequantized'
        q_nodes[tensor] = [
            helper.make_node('QuantizeLinear', [tensor, scale_name, zero.name], [q_out],
                             name=f'{tensor}_QuantizeLinear'),
            helper.make_node('DequantizeLinear', [q_out, scale_name, zero.name], [dq_out],
                             name=f'{tensor}_DequantizeLinear')]
        dq_name[tensor] = dq_out

    readers: dict[str, dict[str, str]] = {}
    for tensor, names in plan.activations.items():
        for name in names:
            readers.setdefault(name, {})[tensor] = dq_name[tensor]

    weight_nodes: dict[str, list[Any]] = {}
    convs = set(plan.convs)
    for node in graph.node:
        if node.name not in convs:
            continue
        wname = node.input[1]
        weight = numpy_helper.to_array(inits[wname]).astype(np.float32)
        scales = _weight_scales(weight, per_channel)
        axis = {'axis': 0} if per_channel else {}
        zeros = np.zeros(scales.shape, np.int8)
        w_scale = f'{node.name}_weight_scale'
        w_zero = f'{node.name}_weight_zero_point'
        new_inits += [numpy_helper.from_array(scales, w_scale),
                      numpy_helper.from_array(zeros, w_zero)]
        w_dq = f'{node.name}_weight_dequantized'
        nodes = []
        if weight_format == 'int8':
            shape = (-1,) + (1,) * (weight.ndim - 1) if per_channel else ()
            q = np.clip(np.rint(weight / scales.reshape(shape)), -127, 127).astype(np.int8)
            w_int8 = f'{node.name}_weight_int8'
            new_inits.append(numpy_helper.from_array(q, w_int8))
            nodes.append(helper.make_node('DequantizeLinear', [w_int8, w_scale, w_zero], [w_dq],
                                          name=f'{node.name}_weight_DequantizeLinear', **axis))
        else:
            w_q = f'{node.name}_weight_quantized'
            nodes += [
                helper.make_node('QuantizeLinear', [wname, w_scale, w_zero], [w_q],
                                 name=f'{node.name}_weight_QuantizeLinear', **axis),
                helper.make_node('DequantizeLinear', [w_q, w_scale, w_zero], [w_dq],
                                 name=f'{node.name}_weight_DequantizeLinear', **axis)]
        node.input[1] = w_dq
        if target == 'onnxruntime' and len(node.input) > 2 and node.input[2] in inits:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            b_scale = (act_scale[node.input[0]] * scales.astype(np.float64)).astype(np.float32)
            b_scale = np.broadcast_to(b_scale, bias.shape).copy() if per_channel else b_scale
            limit = np.iinfo(np.int32).max
            b_int = np.clip(np.rint(bias / b_scale), -limit, limit).astype(np.int32)
            b_names = (f'{node.name}_bias_int32', f'{node.name}_bias_scale',
                       f'{node.name}_bias_zero_point')
            new_inits += [numpy_helper.from_array(b_int, b_names[0]),
                          numpy_helper.from_array(b_scale.astype(np.float32), b_names[1]),
                          numpy_helper.from_array(np.zeros(b_scale.shape, np.int32), b_names[2])]
            b_dq = f'{node.name}_bias_dequantized'
            nodes.append(helper.make_node('DequantizeLinear', list(b_names), [b_dq],
                                          name=f'{node.name}_bias_DequantizeLinear', **axis))
            node.input[2] = b_dq
        weight_nodes[node.name] = nodes

    producers = _producers(out)
    graph_inputs = {i.name for i in graph.input}
    new_nodes: list[Any] = []
    pending = dict(q_nodes)
    for tensor in list(pending):
        if tensor in graph_inputs or tensor not in producers:
            new_nodes += pending.pop(tensor)
    for node in graph.node:
        new_nodes += weight_nodes.get(node.name, [])
        for i, name in enumerate(node.input):
            replacement = readers.get(node.name, {}).get(name)
            if replacement is not None:
                node.input[i] = replacement
        new_nodes.append(node)
        for name in node.output:
            new_nodes += pending.pop(name, [])
    if pending:
        raise ModelError(f'tensors {sorted(pending)} have no producer in the graph')
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept_inits = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + [i for i in new_inits if i.name in used])
    _set_opset(out)
    return out


def _set_opset(model: Any) -> None:
    for opset in model.opset_import:
        if opset.domain in ('', 'ai.onnx') and opset.version < OPSET:
            opset.version = OPSET


# --------------------------------------------------------------------------------------------
# Calibration run


def _as_model(model: Any) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f'{path}: ONNX model not found')
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f'{path}: cannot read ONNX model: {exc}') from exc


def model_input_size(model: Any) -> tuple[str, int, int]:
    """``(input name, width, height)`` from the contract metadata or the input shape."""
    graph_inputs = [i for i in model.graph.input
                    if i.name not in {init.name for init in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ModelError(f'expected one model input, found {[i.name for i in graph_inputs]}')
    name = graph_inputs[0].name
    props = {p.key: p.value for p in model.metadata_props}
    dims = graph_inputs[0].type.tensor_type.shape.dim
    try:
        if 'input_width' in props and 'input_height' in props:
            return name, int(props['input_width']), int(props['input_height'])
        return name, int(dims[3].dim_value), int(dims[2].dim_value)
    except (IndexError, ValueError) as exc:
        raise ModelError(f'input {name!r}: cannot tell the input size (need metadata '
                         'input_width/input_height or a static NCHW shape)') from exc


def _default_preprocess() -> Preprocess:
    try:
        from darknet53_ros.inference.preprocess import preprocess as letterbox_batch
    except ImportError:  # pragma: no cover - preprocess.py ships with the package
        return _letterbox

    def run(image: np.ndarray, width: int, height: int) -> np.ndarray:
        batch, _ = letterbox_batch([image], width, height)
        return batch[0]
    return run


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Minimal Darknet letterbox (fallback only): BGR uint8 -> [3, H, W] RGB float32."""
    import cv2

    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    src_h, src_w = image.shape[:2]
    if width * src_h < height * src_w:
        new_w, new_h = width, max(src_h * width // src_w, 1)
    else:
        new_w, new_h = max(src_w * height // src_h, 1), height
    resized = cv2.resize(image[..., :3], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.full((3, height, width), 0.5, np.float32)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    out[:, y0:y0 + new_h, x0:x0 + new_w] = resized[..., ::-1].transpose(2, 0, 1) / 255.0
    return out


@dataclass(frozen=True)
class _Sample:
    key: str
    digest: str
    tensor: np.ndarray


def _samples(images: Iterable[Any], width: int, height: int, preprocess: Preprocess | None,
             prefix: str) -> Iterator[_Sample]:
    """Preprocess calibration inputs lazily into ``[3, H, W]`` float32 samples."""
    from darknet53_ros.optimize.calibration import CalibrationImage, image_digest, load_image

    prep = preprocess or _default_preprocess()
    for i, item in enumerate(images):
        if isinstance(item, CalibrationImage):
            key, image = item.key, item.image
        elif isinstance(item, (str, Path)):
            key, image = str(item), load_image(item)
        else:
            key, image = f'{prefix}[{i}]', np.asarray(item)
        if image.dtype == np.float32 and image.shape == (3, height, width):
            tensor = image
        else:
            tensor = np.asarray(prep(image, width, height), np.float32)
            if tensor.shape != (3, height, width):
                raise ModelError(f'{key}: preprocess returned shape {tensor.shape}, '
                                 f'expected {(3, height, width)}')
        yield _Sample(key, image_digest(image), tensor)


def _session(model: Any, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=['CPUExecutionProvider'])


def collect_histograms(model: Any, tensors: Sequence[str], samples: Iterable[np.ndarray],
                       batch_size: int = 1, progress: bool = True) -> dict[str, Histogram]:
    """Run ``samples`` through ``model`` on ONNX Runtime; histogram every tensor in ``tensors``.

    ``samples`` are preprocessed ``[3, H, W]`` float32 arrays, consumed lazily.
    """
    import onnx
    from onnx import TensorProto, helper

    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    existing = {o.name for o in calib.graph.output}
    for name in tensors:
        if name not in existing:
            calib.graph.output.append(helper.make_empty_tensor_value_info(name))
            calib.graph.output[-1].type.tensor_type.elem_type = TensorProto.FLOAT
    session = _session(calib)
    input_name = session.get_inputs()[0].name
    hists = {name: Histogram() for name in tensors}
    total = len(samples) if isinstance(samples, Sized) else None
    bar = _progress(progress, 'calibrating', total)
    batch: list[np.ndarray] = []

    def flush() -> None:
        values = session.run(list(tensors), {input_name: np.stack(batch)})
        for name, value in zip(tensors, values):
            hists[name].update(value)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:
        for sample in samples:
            batch.append(sample)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    finally:
        if bar is not None:
            bar.close()
    return hists


def _progress(enabled: bool, desc: str, total: int | None) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the extras
        return None
    return tqdm(desc=desc, total=total, unit='img', leave=False)


# --------------------------------------------------------------------------------------------
# Accuracy check


def compare_outputs(fp32: Any, int8: Any, samples: Sequence[np.ndarray],
                    top_k: int = 10) -> dict[str, Any]:
    """Output error of the INT8 model against FP32 on ``samples`` (held-out images).

    Returns per output ``mean_abs``/``max_abs`` differences and, for contract models, the
    share of images whose top-scoring (prediction, class) agrees and the mean overlap of the
    top-``top_k`` sets.
    """
    if not samples:
        return {'images': 0}
    s32, s8 = _session(fp32), _session(int8)
    input_name = s32.get_inputs()[0].name
    names = [o.name for o in s32.get_outputs()]
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    top1, overlap = [], []
    for sample in samples:
        batch = sample[None]
        ref = dict(zip(names, s32.run(names, {input_name: batch})))
        got = dict(zip(names, s8.run(names, {input_name: batch})))
        for name in names:
            diffs[name].append(np.abs(ref[name].astype(np.float64) - got[name]).ravel())
        if 'scores' in ref:
            a, b = ref['scores'][0].ravel(), got['scores'][0].ravel()
            k = min(top_k, a.size)
            ta, tb = np.argsort(-a)[:k], np.argsort(-b)[:k]
            top1.append(float(ta[0] == tb[0]))
            overlap.append(len(set(ta.tolist()) & set(tb.tolist())) / k)
    result: dict[str, Any] = {'images': len(samples), 'outputs': {}}
    for name in names:
        d = np.concatenate(diffs[name])
        result['outputs'][name] = {'mean_abs': float(d.mean()), 'max_abs': float(d.max())}
    if top1:
        result['top1_agreement'] = float(np.mean(top1))
        result[f'top{top_k}_overlap'] = float(np.mean(overlap))
    return result


# --------------------------------------------------------------------------------------------
# Entry point


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did; :meth:`to_json` is what the report file holds."""

    data: dict[str, Any]

    def to_json(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.data, indent=2, sort_keys=False) + '\n'

    def summary(self) -> str:
        """A short human-readable summary."""
        d = self.data
        lines = [
            f"INT8 Q/DQ model: {d['output']}",
            f"  method {d['method']}"
            + (f" ({d['percentile']}%)" if d['method'] == 'percentile' else '')
            + f", target {d['target']}, weights {d['weight_format']}"
            + f", per-channel {d['per_channel']}",
            f"  calibration images: {d['calibration']['count']}, "
            f"quantised convs: {len(d['quantized_convs'])}, "
            f"activation tensors: {len(d['tensors'])}",
            f"  kept in floating point: {', '.join(d['kept_fp']) or 'none'}",
        ]
        err = d.get('error', {})
        if err.get('images'):
            lines.append(f"  held-out images: {err['images']}")
            for name, stats in err['outputs'].items():
                lines.append(f"    {name}: mean |diff| {stats['mean_abs']:.4g}, "
                             f"max |diff| {stats['max_abs']:.4g}")
            if 'top1_agreement' in err:
                lines.append(f"    top-1 agreement {err['top1_agreement']:.2%}, "
                             f"top-10 overlap {err.get('top10_overlap', 0.0):.2%}")
        else:
            lines.append('  no held-out images: output error vs FP32 not measured')
        lines.append(f'  note: {DISJOINT_NOTE}')
        return '\n'.join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def calibration_hash(digests: Iterable[str]) -> str:
    """One sha256 over the calibration images' digests (order independent)."""
    return hashlib.sha256('\n'.join(sorted(digests)).encode()).hexdigest()


def quantize_model(model_path: str | Path | Any, calib_images: Iterable[Any] | str | Path,
                   out_path: str | Path | None = None, method: Method = 'percentile',
                   percentile: float = 99.99, keep_fp: Sequence[str] | None = None,
                   per_channel: bool = True, preprocess: Preprocess | None = None,
                   held_out: Iterable[Any] = (), target: Target = 'tensorrt',
                   weight_format: str | None = None, report_path: str | Path | None = None,
                   batch_size: int = 1, progress: bool = True,
                   print_summary: bool = False) -> QuantizationReport:
    """Calibrate ``model_path`` on ``calib_images`` and write the Q/DQ INT8 model.

    Args:
        model_path: a contract ONNX model (path or ``onnx.ModelProto``).
        calib_images: BGR ``uint8`` images, :class:`~darknet53_ros.optimize.calibration.
            CalibrationImage` items, image paths, already preprocessed ``[3, H, W]`` float32
            arrays, or a source (folder, video, rosbag2) given to
            :func:`darknet53_ros.optimize.calibration.calibration_images`.
        out_path: where to write the quantised model (atomically); ``None`` writes nothing.
        method: ``'entropy'``, ``'percentile'`` or ``'minmax'``.
        percentile: percentile of ``|x|`` for ``method='percentile'``.
        keep_fp: node names or fnmatch patterns kept in floating point; ``None`` keeps
            :func:`default_keep_fp` (first conv and heads), ``()`` keeps nothing.
        per_channel: per-output-channel weight scales (``axis=0``).
        preprocess: ``f(image, width, height) -> [3, H, W]`` float32; defaults to
            :func:`darknet53_ros.inference.preprocess.preprocess` (Darknet letterbox).
        held_out: images (same kinds as ``calib_images``) used only to measure the INT8
            error against FP32; they must be disjoint from the calibration images.
        target: ``'tensorrt'`` (default) or ``'onnxruntime'`` (see the module docstring).
        weight_format: ``'qdq'`` (Q/DQ on FP32 weights; the default for TensorRT, whose
            8.x parser rejects int8 initializers) or ``'int8'`` (int8 initializers; the
            default for ONNX Runtime).
        report_path: where to write the JSON report (atomically).
        batch_size: calibration batch size.
        progress: show a tqdm progress bar.
        print_summary: print :meth:`QuantizationReport.summary` when done.

    Returns:
        The :class:`QuantizationReport` (also written to ``report_path``).
    """
    import onnx

    from darknet53_ros.fileio import atomic_write_bytes, atomic_write_text

    if method not in METHODS:
        raise ConfigError(f'calibration method {method!r}: expected one of {METHODS}')
    if batch_size < 1:
        raise ConfigError(f'batch size {batch_size}: must be >= 1')
    if target not in TARGETS:
        raise ConfigError(f'quantisation target {target!r}: expected one of {TARGETS}')
    if weight_format is None:
        weight_format = 'qdq' if target == 'tensorrt' else 'int8'
    if weight_format not in WEIGHT_FORMATS:
        raise ConfigError(f'weight format {weight_format!r}: expected one of {WEIGHT_FORMATS}')
    if target == 'tensorrt' and weight_format == 'int8':
        _LOG.warning('int8 weight initializers need TensorRT >= 10 (8.x rejects them)')
    model = _as_model(model_path)
    source_path = None if isinstance(model_path, onnx.ModelProto) else Path(model_path)
    _node_names(model)
    input_name, width, height = model_input_size(model)
    if isinstance(calib_images, (str, Path)):
        from darknet53_ros.optimize.calibration import calibration_images
        calib_images = calibration_images(calib_images)
    held = list(_samples(held_out, width, height, preprocess, 'held_out'))
    held_digests = {s.digest: s.key for s in held}
    calib_meta: list[tuple[str, str]] = []

    def calibration_tensors() -> Iterator[np.ndarray]:
        for sample in _samples(calib_images, width, height, preprocess, 'calib'):
            if sample.digest in held_digests:
                raise ConfigError(f'{sample.key}: also a held-out image '
                                  f'({held_digests[sample.digest]}); the sets must be disjoint')
            calib_meta.append((sample.key, sample.digest))
            yield sample.tensor

    keep = default_keep_fp(model) if keep_fp is None else list(keep_fp)
    plan = plan_quantization(model, keep, target)
    if not plan.convs:
        raise ModelError('no Conv node can be quantised (all kept or no constant weights)')
    tensors = list(plan.activations)
    hists = collect_histograms(model, tensors, calibration_tensors(), batch_size, progress)
    if not calib_meta:
        raise ConfigError('no calibration images')
    amax = {name: hists[name].amax_for(method, percentile) for name in tensors}
    qmodel = insert_qdq(model, plan, amax, per_channel, weight_format, target)
    calib_sha = calibration_hash(digest for _, digest in calib_meta)
    onnx.helper.set_model_props(qmodel, {
        **{p.key: p.value for p in qmodel.metadata_props},
        'quantization': json.dumps({'method': method, 'target': target,
                                    'calibration_images': len(calib_meta),
                                    'calibration_sha256': calib_sha}),
    })
    onnx.checker.check_model(qmodel)
    error = compare_outputs(model, qmodel, [s.tensor for s in held])
    if out_path is not None:
        atomic_write_bytes(out_path, qmodel.SerializeToString())

    from darknet53_ros import __version__

    data: dict[str, Any] = {
        'producer': f'darknet53_ros {__version__}',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'model': str(source_path) if source_path else '<in memory>',
        'model_sha256': _sha256(source_path) if source_path else None,
        'output': str(out_path) if out_path is not None else None,
        'input': {'name': input_name, 'width': width, 'height': height},
        'method': method,
        'percentile': percentile,
        'target': target,
        'weight_format': weight_format,
        'per_channel': per_channel,
        'opset': OPSET,
        'kept_fp': plan.kept,
        'quantized_convs': plan.convs,
        'calibration': {
            'count': len(calib_meta),
            'sha256': calib_sha,
            'images': [{'key': key, 'sha256': digest} for key, digest in calib_meta],
            'note': DISJOINT_NOTE,
        },
        'held_out': {'count': len(held),
                     'images': [{'key': s.key, 'sha256': s.digest} for s in held]},
        'tensors': {name: {'amax': amax[name], 'scale': max(amax[name], _EPS) / _INT8_MAX,
                           'max_abs': hists[name].amax,
                           'conv_output': name in plan.conv_outputs,
                           'readers': plan.activations[name]}
                    for name in tensors},
        'error': error,
    }
    report = QuantizationReport(data)
    if report_path is not None:
        atomic_write_text(report_path, report.to_json())
    if print_summary:
        print(report.summary())
    _LOG.info('quantised %d convs, %d activation tensors (%s)', len(plan.convs), len(tensors),
              method)
    return report


def qdq_summary(model: Any) -> dict[str, Any]:
    """Counts and checks of a Q/DQ model, for tests and the CLI.

    Returns the numbers of Q and DQ nodes, the Conv nodes without a DQ'd input or weight, and a
    list of problems (non-int8 or non-zero zero points).
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = _producers(model)
    problems = []
    q = dq = 0
    for node in model.graph.node:
        if node.op_type not in ('QuantizeLinear', 'DequantizeLinear'):
            continue
        q += node.op_type == 'QuantizeLinear'
        dq += node.op_type == 'DequantizeLinear'
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f'{node.name}: no constant zero point')
            continue
        zp = inits[node.input[2]]
        values = numpy_helper.to_array(zp)
        if zp.data_type == TensorProto.INT32 and node.op_type == 'DequantizeLinear':
            if np.any(values != 0):
                problems.append(f'{node.name}: non-zero int32 zero point')
            continue
        if zp.data_type != TensorProto.INT8:
            problems.append(f'{node.name}: zero point type {zp.data_type}, expected int8')
        if np.any(values != 0):
            problems.append(f'{node.name}: non-zero zero point')
    float_convs = []
    for node in model.graph.node:
        if node.op_type != 'Conv':
            continue
        parents = [producers.get(name) for name in node.input[:2]]
        if not all(p is not None and p.op_type == 'DequantizeLinear' for p in parents):
            float_convs.append(node.name)
    return {'quantize': q, 'dequantize': dq, 'float_convs': float_convs, 'problems': problems}
