"""Training data for PyTorch: the augmented detection dataset and the multi-scale sampler."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import math

import numpy as np
import torch

from darknet53_ros.io.dataset import SplitData, load_image, read_objects
from darknet53_ros.training.augment import AugmentParams, augment


class DetectionDataset(torch.utils.data.Dataset):
    """Items are ``(index, width, height, epoch)`` tuples from :class:`MultiScaleBatchSampler`;
    each returns ``(CHW uint8 RGB tensor, boxes [M, 4], classes [M])``."""

    def __init__(self, split: SplitData, params: AugmentParams | None, seed: int = 0) -> None:
        self.split = split
        self.params = params
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, item: tuple[int, int, int, int],
                    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        index, width, height, epoch = item
        sample = self.split.samples[index]
        image = load_image(sample.image)
        boxes, classes = read_objects(sample, image.shape[1], image.shape[0],
                                      len(self.split.names)).trainable()
        rng = np.random.default_rng([self.seed, epoch, index])
        out, boxes, classes = augment(image, boxes, classes, width, height, rng, self.params)
        rgb = np.ascontiguousarray(out[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(rgb), boxes, classes


def collate(items: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray]],
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images (uint8) and build ``[M, 6]`` targets ``(image, class, x1, y1, x2, y2)``."""
    images = torch.stack([item[0] for item in items])
    rows = [np.concatenate([np.full((len(b), 1), i), c.reshape(-1, 1), b.reshape(-1, 4)], 1)
            for i, (_, b, c) in enumerate(items)]
    targets = np.concatenate(rows, 0) if rows else np.zeros((0, 6))
    return images, torch.from_numpy(targets.astype(np.float32)).reshape(-1, 6)


def multiscale_sizes(width: int, height: int, low: float = 0.7, high: float = 1.3,
                     ) -> list[tuple[int, int]]:
    """Input sizes (multiples of 32) from ``low`` to ``high`` times the base size."""
    sizes = []
    for k in range(-20, 21):
        f = 1.0 + k * 0.05
        if low - 1e-9 <= f <= high + 1e-9:
            size = (max(32, round(width * f / 32) * 32), max(32, round(height * f / 32) * 32))
            if size not in sizes:
                sizes.append(size)
    return sizes


class MultiScaleBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of ``(index, width, height, epoch)``; the size changes every
    ``interval`` batches when several ``sizes`` are given. Deterministic given the seed."""

    def __init__(self, count: int, batch_size: int, sizes: Sequence[tuple[int, int]],
                 seed: int = 0, interval: int = 10, drop_last: bool = True) -> None:
        self.count, self.batch_size = count, batch_size
        self.sizes = list(sizes)
        self.seed, self.interval, self.drop_last = seed, interval, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        if self.drop_last and self.count >= self.batch_size:
            return self.count // self.batch_size
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        order = rng.permutation(self.count)
        size = self.sizes[0]
        for k in range(len(self)):
            if len(self.sizes) > 1 and k % self.interval == 0:
                size = self.sizes[int(rng.integers(len(self.sizes)))]
            chunk = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield [(int(i), size[0], size[1], self.epoch) for i in chunk]
