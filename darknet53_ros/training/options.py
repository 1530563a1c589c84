"""Options and results of :func:`darknet53_ros.training.trainer.train` (no PyTorch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from darknet53_ros.errors import ConfigError

BOX_LOSSES = ('darknet', 'mse', 'giou', 'ciou')
"""``--box-loss`` choices (:mod:`darknet53_ros.training.loss`); the first is the default
(measured against ``mse`` in doc/training.md)."""
DEFAULT_WARMUP = 300
"""Warm-up iterations when none are given, capped by one epoch (:func:`warmup_iterations`)."""


def warmup_iterations(warmup: int | None, per_epoch: int) -> int:
    """Warm-up length: ``warmup`` when given, else :data:`DEFAULT_WARMUP` capped by the first
    epoch (``per_epoch`` iterations), so a small dataset leaves warm-up after one epoch."""
    if warmup is not None:
        return max(0, warmup)
    return max(1, min(DEFAULT_WARMUP, per_epoch))


@dataclass
class TrainOptions:
    """Options of :func:`train` (the ``darknet53 train`` flags)."""

    cfg: Path
    data: Path
    output: Path
    weights: Path | None = None
    epochs: int = 100
    batch: int = 16
    img_size: tuple[int, int] | None = None
    multi_scale: bool = False
    lr: float = 1e-3
    optimizer: str = 'adam'
    weight_decay: float = 5e-4
    warmup: int | None = None
    device: str = 'cpu'
    workers: int = 0
    resume: Path | None = None
    seed: int = 0
    freeze_backbone: bool = False
    sparsity: float = 0.0
    box_loss: str = BOX_LOSSES[0]
    ema: bool = True
    val_split: str | None = 'val'
    train_split: str = 'train'
    val_conf: float = 0.005
    threads: int | None = None
    progress: bool = True
    max_batches: int | None = None
    augment: bool = True
    allow_empty: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    weights: Path
    cfg: Path
    history: dict[str, Any]
    checkpoint: Path
    seconds: float
    final_map50: float | None = None
    extra_files: list[Path] = field(default_factory=list)


def parse_img_size(text: str | int | None) -> tuple[int, int] | None:
    """``'416'`` -> (416, 416); ``'320x256'`` -> (320, 256); multiples of 32."""
    if text is None:
        return None
    parts = str(text).lower().split('x')
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f'--img-size {text!r}: expected S or WxH, e.g. 416 or 320x256') \
            from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(v < 32 or v % 32 for v in values):
        raise ConfigError(f'--img-size {text!r}: width and height must be multiples of 32')
    return values[0], values[1]


def output_paths(output: Path) -> dict[str, Path]:
    """Files written beside ``OUT.weights``."""
    base = output.with_suffix('') if output.suffix == '.weights' else output
    return {'weights': base.with_suffix('.weights'), 'cfg': base.with_suffix('.cfg'),
            'names': base.with_suffix('.names'), 'checkpoint': base.with_suffix('.ckpt'),
            'history': Path(f'{base}.history.json'), 'loss_png': Path(f'{base}.loss.png'),
            'map_png': Path(f'{base}.map.png')}
