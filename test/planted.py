"""A model with planted weights whose detections are known exactly (for end-to-end tests).

Input 64x64; a 32x32 max pool gives a 2x2 grid; a 1x1 head conv sets, per cell,
objectness = 20 * mean(RGB) - 10, class 0 = +10, class 1 = -10, and t = 0 for the box, so a
white cell yields one box of the anchor's size (32x32) centred on that cell, and a black cell
none. For a 128x128 source (scale 0.5, no padding) a white 64x64 quadrant at column c, row r
gives the source box (64c, 64r, 64c + 64, 64r + 64) with score sigmoid(10)^2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from darknet53_ros.model.cfg import parse_cfg
from darknet53_ros.model.weights import ConvWeights, DarknetWeights

PLANTED_CFG = """[net]
width=64
height=64
channels=3

[maxpool]
size=32
stride=32
padding=0

[convolutional]
size=1
stride=1
pad=1
filters=7
activation=linear

[yolo]
mask=0
anchors=32,32
classes=2
num=1
"""

SCORE = float(1.0 / (1.0 + np.exp(-10.0))) ** 2


def planted_network():
    """The planted network and its weights."""
    network = parse_cfg(PLANTED_CFG, source='planted.cfg')
    kernel = np.zeros((7, 3, 1, 1), np.float32)
    kernel[4, :, 0, 0] = 20.0 / 3.0
    bias = np.array([0, 0, 0, 0, -10, 10, -10], np.float32)
    return network, DarknetWeights(layers={1: ConvWeights(biases=bias, weights=kernel)})


def export_planted(path: Path) -> Path:
    """Write the planted ONNX model to ``path``."""
    pytest.importorskip('onnx', reason='onnx not installed (exporting the test model needs it)')
    from darknet53_ros.model.onnx_export import export_onnx

    network, weights = planted_network()
    export_onnx(network, weights, path, names=['target', 'other'])
    return path


def quadrant_image(col: int, row: int, size: int = 128) -> np.ndarray:
    """Black BGR image with a white quadrant at (col, row)."""
    image = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    image[row * half:(row + 1) * half, col * half:(col + 1) * half] = 255
    return image


def expected_box(col: int, row: int, size: int = 128) -> np.ndarray:
    """Source-pixel box of the white quadrant."""
    half = size // 2
    return np.array([col * half, row * half, (col + 1) * half, (row + 1) * half], np.float32)
