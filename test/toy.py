"""A small contract model and natural-ish images shared by the quantisation and TensorRT tests.

The model: Convs (BN folded), LeakyRelu 0.1, residual Add, Resize, Concat, two heads decoded
with Sigmoid into boxes/scores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

try:  # the images work without onnx; the model needs it
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # a robot's python3 (onnx has no rosdep key): tests using the model skip
    onnx = None  # type: ignore[assignment]

SIZE = 32
CLASSES = 2


# --------------------------------------------------------------------------------------------
# A small contract model: Convs (BN folded), LeakyRelu 0.1, residual Add, Resize, Concat, two
# heads decoded with Sigmoid into boxes/scores.


def toy_model(size: int = SIZE, seed: int = 0) -> onnx.ModelProto:
    """A YOLO-like contract model with two heads (strides 2 and 1) at ``size`` x ``size``."""
    if onnx is None:
        pytest.skip('onnx not installed (the toy model is built with it)')
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, x: str, cin: int, cout: int, k: int, stride: int = 1,
             leaky: bool = True) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        w *= rng.uniform(0.5, 1.5, (cout, 1, 1, 1)).astype(np.float32)  # folded BN scale
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f'{name}.w'),
                      numpy_helper.from_array(b, f'{name}.b')])
        nodes.append(helper.make_node('Conv', [x, f'{name}.w', f'{name}.b'], [f'{name}.y'],
                                      name=name, kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[k // 2] * 4))
        if not leaky:
            return f'{name}.y'
        nodes.append(helper.make_node('LeakyRelu', [f'{name}.y'], [f'{name}.a'],
                                      name=f'{name}_leaky', alpha=0.1))
        return f'{name}.a'

    x0 = conv('conv_0', 'images', 3, 8, 3)
    x1 = conv('conv_1', x0, 8, 16, 3, stride=2)
    r = conv('conv_2', x1, 16, 8, 1)
    r = conv('conv_3', r, 8, 16, 3)
    nodes.append(helper.make_node('Add', [x1, r], ['shortcut_4'], name='shortcut_4'))
    h1 = conv('conv_5', 'shortcut_4', 16, 3 * (5 + CLASSES), 1, leaky=False)
    u = conv('conv_6', 'shortcut_4', 16, 8, 1)
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), 'up.scales'))
    nodes.append(helper.make_node('Resize', [u, '', 'up.scales'], ['up.y'], name='upsample_7',
                                  mode='nearest', coordinate_transformation_mode='asymmetric',
                                  nearest_mode='floor'))
    nodes.append(helper.make_node('Concat', ['up.y', x0], ['route_8'], name='route_8', axis=1))
    c = conv('conv_9', 'route_8', 16, 16, 3)
    h2 = conv('conv_10', c, 16, 3 * (5 + CLASSES), 1, leaky=False)

    preds = []
    for i, (head, cells) in enumerate(((h1, (size // 2) ** 2), (h2, size ** 2))):
        shape = f'shape{i}'
        inits.append(numpy_helper.from_array(np.array([0, 3, 5 + CLASSES, cells], np.int64),
                                             shape))
        nodes.append(helper.make_node('Reshape', [head, shape], [f'r{i}']))
        nodes.append(helper.make_node('Transpose', [f'r{i}'], [f't{i}'], perm=[0, 1, 3, 2]))
        flat = f'flat{i}'
        inits.append(numpy_helper.from_array(np.array([0, 3 * cells, 5 + CLASSES], np.int64),
                                             flat))
        nodes.append(helper.make_node('Reshape', [f't{i}', flat], [f'p{i}']))
        preds.append(f'p{i}')
    nodes.append(helper.make_node('Concat', preds, ['pred'], axis=1))
    nodes.append(helper.make_node('Sigmoid', ['pred'], ['sig']))

    def const(name: str, values: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    nodes.append(helper.make_node('Slice', ['sig', const('s0', [0]), const('e4', [4]),
                                            const('ax', [2])], ['xywh']))
    nodes.append(helper.make_node('Slice', ['sig', const('s4', [4]), const('e5', [5]), 'ax'],
                                  ['obj']))
    nodes.append(helper.make_node('Slice', ['sig', const('s5', [5]),
                                            const('e7', [5 + CLASSES]), 'ax'], ['cls']))
    nodes.append(helper.make_node('Mul', ['obj', 'cls'], ['scores']))
    inits.append(numpy_helper.from_array(np.array(float(size), np.float32), 'px'))
    nodes.append(helper.make_node('Mul', ['xywh', 'px'], ['boxes']))
    total = 3 * ((size // 2) ** 2 + size ** 2)
    graph = helper.make_graph(
        nodes, 'toy',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, ['batch', 3, size, size])],
        [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, ['batch', total, 4]),
         helper.make_tensor_value_info('scores', TensorProto.FLOAT,
                                       ['batch', total, CLASSES])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)],
                              producer_name='darknet53_ros')
    model.ir_version = 8
    helper.set_model_props(model, {
        'names': json.dumps(['a', 'b']), 'classes': str(CLASSES), 'input_width': str(size),
        'input_height': str(size), 'producer': 'darknet53_ros'})
    onnx.checker.check_model(model)
    return model


def smooth_images(count: int, seed: int = 1, shape: tuple[int, int] = (48, 64)) -> list:
    """Natural-ish BGR uint8 images: upsampled noise plus a gradient."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 8, 3), np.uint8)
        img = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
        out.append(img)
    return out


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose (CRC-valid) IHDR declares ``width`` x ``height`` grey pixels, with a tiny
    IDAT: what a decompression bomb looks like to a header check."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b'\x00' * 4096, 9)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')
