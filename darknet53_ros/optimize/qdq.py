"""Q/DQ placement and ONNX graph rewriting for explicit INT8 quantisation.

* symmetric signed int8 everywhere, zero points of type int8 equal to 0, ``scale = amax / 127``;
* the activation input of every quantised ``Conv`` gets a ``QuantizeLinear`` ->
  ``DequantizeLinear`` pair (one pair per tensor, shared by all its quantised consumers);
* Conv weights are quantised per output channel (``axis=0``) as a Q/DQ pair on the FP32
  weight (``weight_format='qdq'``, accepted by every TensorRT version) or as a
  ``DequantizeLinear`` on an int8 initializer (``'int8'``, smaller; TensorRT >= 10);
* residual ``Add``: both inputs are quantised or neither (NVIDIA's Q/DQ placement
  recommendations: quantise the inputs of weighted operations and the residual input of
  element-wise additions so TensorRT can fuse them, leave ``Concat``/``Resize``/``MaxPool``
  for TensorRT to propagate Q/DQ through); the YOLO box decode downstream of the head
  convolutions (:func:`decode_nodes`) is never quantised;
* ``target='onnxruntime'`` additionally quantises Conv outputs and the biases (int32, scale
  ``x_scale * w_scale``), which is what ONNX Runtime needs to fuse ``DQ -> Conv -> Q`` into
  ``QLinearConv``. TensorRT accepts the extra output Q/DQ, but its ONNX parser only takes 8-bit
  (not int32) ``DequantizeLinear`` inputs, so that variant is for ONNX Runtime only; the
  default ``target='tensorrt'`` keeps FP32 biases and leaves Conv outputs unquantised.

:func:`plan_quantization` decides the placement (a :class:`QuantPlan`), :func:`insert_qdq`
rewrites the graph, :func:`qdq_summary` checks the result.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import fnmatch
from pathlib import Path
from typing import Any, Literal

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError

TARGETS = ('tensorrt', 'onnxruntime')
WEIGHT_FORMATS = ('qdq', 'int8')
OPSET = 13
"""Minimum opset: per-channel (``axis``) Q/DQ needs 13."""
EPS = 1e-12
"""Smallest amax/scale (an all-zero tensor still gets a valid scale)."""
INT8_MAX = 127.0

Target = Literal['tensorrt', 'onnxruntime']


# --------------------------------------------------------------------------------------------
# Graph analysis and placement


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


def name_nodes(model: Any) -> None:
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


def _convs_upstream(producers: dict[str, Any], tensors: list[str]) -> list[Any]:
    """The nearest Conv nodes upstream of ``tensors`` (not looking past a Conv)."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = list(tensors)
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == 'Conv':
            found.append(node)
        else:
            stack.extend(name for name in node.input if name)
    return found


def head_convs(model: Any) -> list[str]:
    """Names of the Conv nodes that produce the model outputs (the YOLO head convolutions).

    These are the Convs from which a graph output is reachable without passing through
    another Conv.
    """
    found = {node.name for node in _convs_upstream(_producers(model),
                                                   [out.name for out in model.graph.output])}
    return [node.name for node in model.graph.node if node.name in found]


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
    return [node.name for node in model.graph.node if node.op_type == 'Conv'
            and not _convs_upstream(producers, [node.input[0]])]


def default_keep_fp(model: Any) -> list[str]:
    """The usual layers kept in floating point: the first Conv and the YOLO head Convs."""
    import onnx

    model = load_model(model)
    if any(not node.name for node in model.graph.node):
        named = onnx.ModelProto()
        named.CopyFrom(model)
        name_nodes(named)
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
    name_nodes(model)
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
    return np.maximum(amax / INT8_MAX, EPS).astype(np.float32)


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
    name_nodes(out)
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
        scale = max(float(amax[tensor]), EPS) / INT8_MAX
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
        axis: dict[str, Any] = {'axis': 0} if per_channel else {}
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
# Loading and checking models


def load_model(model: Any) -> Any:
    """``model`` itself when it is an ``onnx.ModelProto``, else the ONNX file it names."""
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
