"""YOLO anchor estimation: k-means of a dataset's box sizes with distance ``1 - IoU``."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.dataset import SplitData, load_image, read_objects
from darknet53_ros.io.dataset_check import shape_iou_np
from darknet53_ros.model.cfg import Network
from darknet53_ros.model.layers import Convolutional
from darknet53_ros.training.augment import letterbox_params
from darknet53_ros.training.loss import shape_iou


def conv_count(network: Network) -> int:
    """Number of convolutional layers (for messages)."""
    return sum(isinstance(layer, Convolutional) for layer in network.layers)


def label_sizes(split: SplitData, width: int, height: int) -> np.ndarray:
    """``[M, 2]`` box sizes of a split in network pixels after the inference letterbox."""
    sizes = []
    for sample in split.samples:
        src_h, src_w = load_image(sample.image).shape[:2]
        boxes, _ = read_objects(sample, src_w, src_h, len(split.names)).trainable()
        ax, _, ay, _ = letterbox_params(src_w, src_h, width, height)
        for box in boxes:
            sizes.append(((box[2] - box[0]) * ax, (box[3] - box[1]) * ay))
    return np.array(sizes, np.float64).reshape(-1, 2)


def kmeans_anchors(sizes: np.ndarray, count: int = 9, seed: int = 0, iterations: int = 300,
                   ) -> list[tuple[float, float]]:
    """K-means of box sizes with distance ``1 - IoU`` (YOLOv2's anchor estimation).

    Returns ``count`` anchors sorted by area, rounded to whole pixels (at least 1).
    """
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) < count:
        raise DatasetError(f'{len(sizes)} boxes are too few to estimate {count} anchors')
    rng = np.random.default_rng(seed)

    iou = shape_iou_np
    # k-means++ seeding on 1 - IoU, then Lloyd iterations with median updates.
    centres = [sizes[rng.integers(len(sizes))]]
    for _ in range(1, count):
        d = 1.0 - iou(sizes, np.array(centres)).max(1)
        probs = d ** 2 / max(float((d ** 2).sum()), 1e-12)
        centres.append(sizes[rng.choice(len(sizes), p=probs)])
    c = np.array(centres)
    for _ in range(iterations):
        assign = iou(sizes, c).argmax(1)
        new = np.array([np.median(sizes[assign == k], 0) if np.any(assign == k) else c[k]
                        for k in range(count)])
        if np.allclose(new, c):
            break
        c = new
    c = c[np.argsort(c.prod(1))]
    return [(max(1.0, float(round(w))), max(1.0, float(round(h)))) for w, h in c]


def anchor_fitness(sizes: np.ndarray, anchors: Sequence[tuple[float, float]]) -> float:
    """Mean best IoU of the boxes with the anchors (shape only)."""
    s = torch.as_tensor(np.asarray(sizes, np.float64).reshape(-1, 2), dtype=torch.float64)
    a = torch.as_tensor(np.asarray(anchors, np.float64), dtype=torch.float64)
    return float(shape_iou(s, a).max(1).values.mean()) if len(s) else 0.0
