"""Export a Darknet network with its weights to ONNX, ready for TensorRT 8.5+ and ONNX Runtime.

The graph uses opset 13 and only operators TensorRT's ONNX parser accepts: Conv (batch norm
folded in), LeakyRelu 0.1, Sigmoid, Relu, Tanh, Softplus, Add, Mul, Concat, Slice, MaxPool,
Resize (nearest, asymmetric coordinates, floor rounding: Darknet's upsample), Reshape,
Transpose, Exp, GlobalAveragePool, Softmax. The batch dimension is dynamic; height and width
are fixed at export (any multiple of 32, square or not).

Outputs (the contract every consumer relies on):

* ``boxes``  float32 [B, N, 4]: (x1, y1, x2, y2) in network-input pixels;
* ``scores`` float32 [B, N, C]: sigmoid(objectness) * sigmoid(class).

N concatenates the heads in cfg order; within a head, prediction ``(a, y, x)`` has index
``(a * H + y) * W + x``, as reshaping the head to (anchors, 5 + C, H, W) gives. With
``raw=True`` the raw output of each head's last convolution is added as ``head_<index>``.
A network without ``[yolo]`` layers (the darknet53 classifier) has one output, ``output``.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from darknet53_ros import __version__
from darknet53_ros.errors import DarknetError, ExportError
from darknet53_ros.fileio import atomic_write_bytes
from darknet53_ros.model.cfg import Network
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
from darknet53_ros.model.weights import DarknetWeights, fold_batchnorm

OPSET = 13
"""ONNX opset: per-channel Q/DQ needs 13; TensorRT 8.5's parser accepts up to 17."""

INPUT_NAME = 'images'
BOXES_NAME = 'boxes'
SCORES_NAME = 'scores'


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


def _activation(g: _Graph, x: str, activation: str, name: str) -> str:
    if activation == 'linear':
        return x
    if activation == 'leaky':
        return g.node('LeakyRelu', [x], f'{name}_leaky', alpha=0.1)
    if activation == 'logistic':
        return g.node('Sigmoid', [x], f'{name}_logistic')
    if activation == 'relu':
        return g.node('Relu', [x], f'{name}_relu')
    if activation == 'tanh':
        return g.node('Tanh', [x], f'{name}_tanh')
    if activation == 'mish':
        soft = g.node('Softplus', [x], f'{name}_softplus')
        tanh = g.node('Tanh', [soft], f'{name}_mish_tanh')
        return g.node('Mul', [x, tanh], f'{name}_mish')
    if activation == 'swish':
        sig = g.node('Sigmoid', [x], f'{name}_swish_sigmoid')
        return g.node('Mul', [x, sig], f'{name}_swish')
    raise ExportError(f'activation {activation!r} cannot be exported')


def _conv(g: _Graph, layer: Convolutional, x: str, weights: DarknetWeights) -> str:
    name = f'conv_{layer.index}'
    conv = weights.layers.get(layer.index)
    if conv is None:
        raise ExportError(f'no weights for convolutional layer {layer.index}')
    try:
        kernel, bias = fold_batchnorm(conv)
    except DarknetError as exc:
        raise DarknetError(f'{weights.source or "weights"}: layer {layer.index} (cfg line '
                           f'{layer.line}): {exc}') from None
    w = g.const(f'{name}.weight', kernel)
    b = g.const(f'{name}.bias', bias)
    p = layer.pad
    y = g.node('Conv', [x, w, b], name, kernel_shape=[layer.size, layer.size],
               strides=[layer.stride, layer.stride], pads=[p, p, p, p], group=layer.groups,
               dilations=[1, 1])
    return _activation(g, y, layer.activation, name)


def _maxpool(g: _Graph, layer: Maxpool, x: str) -> str:
    begin = layer.padding // 2
    end = layer.padding - begin
    # Darknet pads by `padding` in total but only the windows that start inside the
    # image count; ONNX computes the same floor((h + pads - size) / stride) + 1 outputs.
    return g.node('MaxPool', [x], f'maxpool_{layer.index}',
                  kernel_shape=[layer.size, layer.size], strides=[layer.stride, layer.stride],
                  pads=[begin, begin, end, end])


def _upsample(g: _Graph, layer: Upsample, x: str) -> str:
    name = f'upsample_{layer.index}'
    scales = g.const(f'{name}.scales', np.array([1, 1, layer.stride, layer.stride], np.float32))
    y = g.node('Resize', [x, '', scales], name, mode='nearest',
               coordinate_transformation_mode='asymmetric', nearest_mode='floor')
    if layer.scale != 1.0:
        factor = g.const(f'{name}.scale', np.array(layer.scale, np.float32))
        y = g.node('Mul', [y, factor], f'{name}_scaled')
    return y


def _route(g: _Graph, layer: Route, outputs: list[str], layers: Sequence[Layer]) -> str:
    name = f'route_{layer.index}'
    parts = []
    for source in layer.sources:
        tensor = outputs[source]
        if layer.groups > 1:
            channels = layers[source].out_shape[0] // layer.groups
            start = g.const(f'{name}.{source}.start',
                            np.array([channels * layer.group_id], np.int64))
            end = g.const(f'{name}.{source}.end',
                          np.array([channels * (layer.group_id + 1)], np.int64))
            axes = g.const(f'{name}.{source}.axes', np.array([1], np.int64))
            tensor = g.node('Slice', [tensor, start, end, axes], f'{name}_slice_{source}')
        parts.append(tensor)
    if len(parts) == 1:
        return parts[0]
    return g.node('Concat', parts, name, axis=1)


def _yolo(g: _Graph, layer: Yolo, x: str, network: Network) -> tuple[str, str]:
    """Decode one head into ([B, N, 4] boxes, [B, N, C] scores) in network pixels."""
    name = f'yolo_{layer.index}'
    anchors = layer.masked_anchors
    num_anchors, attrs = len(anchors), 5 + layer.classes
    _, h, w = layer.in_shape
    n = num_anchors * h * w
    stride = np.array([network.width / w, network.height / h], np.float32)
    shape1 = g.const(f'{name}.shape1', np.array([-1, num_anchors, attrs, h * w], np.int64))
    y = g.node('Reshape', [x, shape1], f'{name}_reshape1')
    y = g.node('Transpose', [y], f'{name}_transpose', perm=[0, 1, 3, 2])
    shape2 = g.const(f'{name}.shape2', np.array([-1, n, attrs], np.int64))
    y = g.node('Reshape', [y, shape2], f'{name}_reshape2')

    def part(start: int, end: int, label: str) -> str:
        s = g.const(f'{name}.{label}.start', np.array([start], np.int64))
        e = g.const(f'{name}.{label}.end', np.array([end], np.int64))
        axes = g.const(f'{name}.{label}.axes', np.array([2], np.int64))
        return g.node('Slice', [y, s, e, axes], f'{name}_{label}')

    # Center: (sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2 + grid) * stride.
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                         indexing='ij')
    grid = np.stack([xs.ravel(), ys.ravel()], axis=-1)            # [H*W, 2], index y*W + x
    grid = np.tile(grid, (num_anchors, 1))                         # [A*H*W, 2]
    sxy = layer.scale_x_y
    offset = ((grid - 0.5 * (sxy - 1.0)) * stride)[None].astype(np.float32)
    gain = g.const(f'{name}.xy_gain', (stride * sxy).reshape(1, 1, 2).astype(np.float32))
    xy = g.node('Sigmoid', [part(0, 2, 'txy')], f'{name}_sig_xy')
    xy = g.node('Mul', [xy, gain], f'{name}_xy_scaled')
    xy = g.node('Add', [xy, g.const(f'{name}.xy_offset', offset)], f'{name}_xy')
    # Size: exp(t) * anchor; anchors are in network pixels.
    anchor = np.repeat(np.array(anchors, np.float32), h * w, axis=0)[None] * 0.5
    wh = g.node('Exp', [part(2, 4, 'twh')], f'{name}_exp_wh')
    half = g.node('Mul', [wh, g.const(f'{name}.half_anchor', anchor)], f'{name}_half_wh')
    x1y1 = g.node('Sub', [xy, half], f'{name}_x1y1')
    x2y2 = g.node('Add', [xy, half], f'{name}_x2y2')
    boxes = g.node('Concat', [x1y1, x2y2], f'{name}_boxes', axis=2)
    obj = g.node('Sigmoid', [part(4, 5, 'tobj')], f'{name}_obj')
    cls = g.node('Sigmoid', [part(5, attrs, 'tcls')], f'{name}_cls')
    scores = g.node('Mul', [obj, cls], f'{name}_scores')
    return boxes, scores


def _check_input_size(network: Network) -> None:
    for label, value in (('width', network.width), ('height', network.height)):
        if value % 32:
            raise ExportError(f'{network.source}: input {label} {value} is not a multiple '
                              'of 32')


def export_onnx(network: Network, weights: DarknetWeights, path: str | Path | None = None,
                raw: bool = False, names: Sequence[str] | None = None) -> onnx.ModelProto:
    """Build the ONNX model for ``network``; write it atomically to ``path`` when given."""
    _check_input_size(network)
    yolos = network.yolo_layers()
    if yolos and names is not None and len(names) != network.classes:
        raise ExportError(f'{len(names)} class names given but {network.source} has '
                          f'{network.classes} classes')
    if len({layer.classes for layer in yolos}) > 1:
        raise ExportError(f'{network.source}: [yolo] layers disagree on classes')
    g = _Graph()
    outputs: list[str] = []
    head_boxes: list[str] = []
    head_scores: list[str] = []
    raw_heads: list[tuple[str, str, Layer]] = []
    x = INPUT_NAME
    for layer in network.layers:
        if isinstance(layer, Convolutional):
            x = _conv(g, layer, x, weights)
        elif isinstance(layer, Shortcut):
            y = g.node('Add', [outputs[-1], outputs[layer.source]], f'shortcut_{layer.index}')
            x = _activation(g, y, layer.activation, f'shortcut_{layer.index}')
        elif isinstance(layer, Route):
            x = _route(g, layer, outputs, network.layers)
        elif isinstance(layer, Upsample):
            x = _upsample(g, layer, x)
        elif isinstance(layer, Maxpool):
            x = _maxpool(g, layer, x)
        elif isinstance(layer, Yolo):
            boxes, scores = _yolo(g, layer, x, network)
            head_boxes.append(boxes)
            head_scores.append(scores)
            prev = network.layers[layer.index - 1]
            raw_heads.append((x, f'head_{prev.index}', prev))
        elif isinstance(layer, Avgpool):
            x = g.node('GlobalAveragePool', [x], f'avgpool_{layer.index}')
        elif isinstance(layer, Softmax):
            if layer.groups != 1:
                raise ExportError(f'{network.source}:{layer.line}: softmax groups > 1 cannot '
                                  'be exported')
            x = g.node('Softmax', [x], f'softmax_{layer.index}', axis=1)
        else:  # pragma: no cover - the parser produces no other types
            raise ExportError(f'layer {layer.index}: {type(layer).__name__} not exportable')
        outputs.append(x)

    c, h, w = network.channels, network.height, network.width
    graph_outputs = []
    if yolos:
        boxes = (g.node('Concat', head_boxes, BOXES_NAME, axis=1) if len(head_boxes) > 1
                 else g.node('Identity', head_boxes, BOXES_NAME))
        scores = (g.node('Concat', head_scores, SCORES_NAME, axis=1) if len(head_scores) > 1
                  else g.node('Identity', head_scores, SCORES_NAME))
        total = sum(len(y.mask) * y.in_shape[1] * y.in_shape[2] for y in yolos)
        graph_outputs += [
            helper.make_tensor_value_info(boxes, TensorProto.FLOAT, ['batch', total, 4]),
            helper.make_tensor_value_info(scores, TensorProto.FLOAT,
                                          ['batch', total, network.classes])]
        if raw:
            for tensor, out_name, prev in raw_heads:
                g.node('Identity', [tensor], out_name)
                graph_outputs.append(helper.make_tensor_value_info(
                    out_name, TensorProto.FLOAT, ['batch', *prev.out_shape]))
    else:
        last = network.layers[-1]
        g.node('Identity', [x], 'output')
        graph_outputs.append(helper.make_tensor_value_info(
            'output', TensorProto.FLOAT, ['batch', *last.out_shape]))

    graph = helper.make_graph(
        g.nodes, Path(network.source).stem or 'darknet',
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ['batch', c, h, w])],
        graph_outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='darknet53_ros', producer_version=__version__)
    model.ir_version = 8  # readable by ONNX Runtime >= 1.14 and TensorRT 8.5's parser
    helper.set_model_props(model, _metadata(network, names))
    onnx.checker.check_model(model)
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
    return model


def _metadata(network: Network, names: Sequence[str] | None) -> dict[str, str]:
    yolos = network.yolo_layers()
    classes = network.classes
    if names is None:
        names = [f'class_{i}' for i in range(classes)]
    strides = [[network.width / y.in_shape[2], network.height / y.in_shape[1]] for y in yolos]
    return {
        'producer': 'darknet53_ros',
        'names': json.dumps(list(names)),
        'classes': str(classes),
        'input_width': str(network.width),
        'input_height': str(network.height),
        'strides': json.dumps(strides),
        'anchors': json.dumps([[list(a) for a in y.masked_anchors] for y in yolos]),
        'heads': json.dumps([y.index - 1 for y in yolos]),
        'source_cfg': Path(network.source).name,
    }
