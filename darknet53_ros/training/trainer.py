"""The YOLOv3 training loop in PyTorch: optimiser, schedule, EMA, validation, checkpoints.

Targets and loss are :mod:`darknet53_ros.training.loss`, augmentation
:mod:`darknet53_ros.training.augment`, the data pipeline :mod:`darknet53_ros.training.data`,
options :mod:`darknet53_ros.training.options`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import copy
import json
import logging
import math
from pathlib import Path
import random
import time
from typing import Any

import numpy as np
import torch

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.fileio import atomic_path, atomic_write_text
from darknet53_ros.inference.postprocess import postprocess
from darknet53_ros.inference.preprocess import Preprocessor
from darknet53_ros.io.dataset import SplitData, load_image
from darknet53_ros.io.dataset_check import check_split, require_trainable
from darknet53_ros.io.dataset_formats import load_split
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.progress import progress_bar
from darknet53_ros.training.augment import AugmentParams
from darknet53_ros.training.data import (
    DetectionDataset,
    MultiScaleBatchSampler,
    collate,
    multiscale_sizes,
)
from darknet53_ros.training.loss import YoloLoss
from darknet53_ros.training.metrics import evaluate_detections, ground_truth_for_split
from darknet53_ros.training.options import (
    TrainOptions,
    TrainResult,
    output_paths,
    warmup_iterations,
)
from darknet53_ros.training.plots import plot_history
from darknet53_ros.training.torch_model import DarknetBatchNorm2d, DarknetModel
from darknet53_ros.training.torch_weights import (
    build_model,
    init_weights,
    load_pretrained,
    save_darknet_weights,
)

_LOG = logging.getLogger(__name__)

BACKBONE_LAYERS = 75
"""Layers 0-74 of YOLOv3 are Darknet-53 (52 convolutions, 23 shortcuts)."""


class ModelEMA:
    """Exponential moving average of parameters and buffers (decay ramps up from 0)."""

    def __init__(self, model: DarknetModel, decay: float = 0.999, tau: float = 500.0) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model: DarknetModel) -> None:
        """Blend ``model`` into the average."""
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            msd = model.state_dict()
            for name, value in self.model.state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(d).add_(msd[name].detach(), alpha=1.0 - d)
                else:
                    value.copy_(msd[name])


def frozen_layers(model: DarknetModel, count: int = BACKBONE_LAYERS) -> None:
    """Freeze layers ``0..count-1``: no gradients, batch norm kept in eval mode."""
    for layer, module in zip(model.network.layers, model.module_list):
        if layer.index < count:
            for p in module.parameters():
                p.requires_grad_(False)


def set_train_mode(model: DarknetModel, frozen: int = 0) -> None:
    """``model.train()`` with the batch norms of the first ``frozen`` layers in eval mode."""
    model.train()
    for layer, module in zip(model.network.layers, model.module_list):
        if layer.index < frozen:
            module.eval()


def _optimizer(model: DarknetModel, opts: TrainOptions) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, torch.nn.Conv2d) and name == 'weight':
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [{'params': decay, 'weight_decay': opts.weight_decay},
              {'params': no_decay, 'weight_decay': 0.0}]
    if opts.optimizer == 'adam':
        return torch.optim.AdamW(groups, lr=opts.lr, betas=(0.9, 0.999))
    if opts.optimizer == 'sgd':
        return torch.optim.SGD(groups, lr=opts.lr, momentum=0.9, nesterov=True)
    raise ConfigError(f'--optimizer {opts.optimizer!r}: use adam or sgd')


def _lr_at(iteration: int, total: int, opts: TrainOptions, warmup: int) -> float:
    """Linear warm-up (Darknet's burn-in) over ``warmup`` iterations, then cosine decay to
    5 % of ``lr``."""
    if iteration < warmup:
        return opts.lr * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return opts.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _sparsity_step(model: DarknetModel, strength: float) -> None:
    """Add the L1 subgradient ``strength * sign(gamma)`` to trainable batch-norm scales."""
    for module in model.modules():
        if isinstance(module, DarknetBatchNorm2d) and module.weight.grad is not None:
            module.weight.grad.add_(strength * torch.sign(module.weight.detach()))


def predict_detections(model: DarknetModel, images: Sequence[np.ndarray], width: int,
                       height: int, conf: float = 0.005, nms: float = 0.6,
                       max_detections: int = 100, device: str | torch.device = 'cpu',
                       ) -> list[Any]:
    """Detect with the PyTorch model through the inference pipeline's pre/postprocessing."""

    batch, transforms = Preprocessor(width, height)(list(images))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        boxes, scores = model.predict(torch.from_numpy(np.array(batch)).to(device))
    model.train(was_training)
    return postprocess(boxes.cpu().numpy(), scores.cpu().numpy(), transforms, conf, nms,
                       max_detections)


def validate(model: DarknetModel, split: SplitData, width: int, height: int,
             conf: float = 0.005, batch: int = 8, device: str | torch.device = 'cpu',
             ) -> dict[str, Any]:
    """mAP of the PyTorch model on ``split`` (COCO metrics via
    :mod:`darknet53_ros.training.metrics`)."""
    gt = ground_truth_for_split(split)
    detections = {}
    for start in range(0, len(split.samples), batch):
        chunk = split.samples[start:start + batch]
        images = [load_image(s.image) for s in chunk]
        for sample, det in zip(chunk, predict_detections(model, images, width, height, conf,
                                                         device=device)):
            detections[sample.name] = det
    return evaluate_detections(gt, detections).summary()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a Darknet cfg on a dataset; writes ``OUT.weights``, ``OUT.cfg`` and more.

    Beside the output: ``OUT.ckpt`` (checkpoint after every epoch, for ``resume``),
    ``OUT.names``, ``OUT.history.json``, ``OUT.loss.png`` and ``OUT.map.png``.
    """
    log = log or _LOG.info
    start_time = time.monotonic()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    seed_everything(opts.seed)
    cfg_text = Path(opts.cfg).read_text(encoding='utf-8')
    network = load_cfg(opts.cfg)
    width, height = opts.img_size or (network.width, network.height)
    if width % 32 or height % 32:
        raise ConfigError(f'input size {width}x{height} must be multiples of 32')
    network = network.with_input_size(width, height)
    device = torch.device(opts.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda: CUDA is not available to PyTorch')
    paths = output_paths(Path(opts.output))
    train_split = load_split(opts.data, opts.train_split)
    if network.classes != len(train_split.names):
        raise ConfigError(f'{opts.cfg}: {network.classes} classes but {opts.data} has '
                          f'{len(train_split.names)} ({", ".join(train_split.names)}); '
                          f'generate a cfg with classes={len(train_split.names)}')
    val_split = None
    if opts.val_split:
        try:
            val_split = load_split(opts.data, opts.val_split)
        except DatasetError as exc:
            log(f'no validation: {exc}')
    for split in (train_split, val_split):
        if split is not None:
            checked = check_split(split, (width, height))
            require_trainable(checked, opts.data, opts.allow_empty)
            warnings = sum(checked.counts.values()) - checked.errors
            log(f'split {split.name} ({split.layout}): {checked.images} images, '
                f'{checked.objects} objects' + (f', {warnings} warnings (darknet53 dataset '
                                                f'check)' if warnings else ''))

    model = build_model(network)
    if opts.weights is not None and opts.resume is None:
        report = load_pretrained(model, opts.weights)
        log(f'loaded {len(report.loaded)} conv layers from {opts.weights} ({report.mode}'
            + (f', source classes {report.source_classes}' if report.source_classes else '')
            + f'); re-initialised {len(report.reinitialised)}')
        if report.reinitialised:
            init_weights(model, report.reinitialised)
    frozen = BACKBONE_LAYERS if opts.freeze_backbone else 0
    if frozen:
        frozen_layers(model, frozen)
    model.to(device)
    ema = ModelEMA(model) if opts.ema else None
    optimizer = _optimizer(model, opts)
    loss_fn = YoloLoss(model.heads, opts.box_loss)
    params = (AugmentParams.from_network(network) if opts.augment else None)
    dataset = DetectionDataset(train_split, params, opts.seed)
    sizes = multiscale_sizes(width, height) if opts.multi_scale else [(width, height)]
    if opts.multi_scale:
        sizes.remove((width, height))
        sizes.insert(0, (width, height))
    sampler = MultiScaleBatchSampler(len(dataset), opts.batch, sizes, opts.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=opts.workers,
                                         persistent_workers=False)
    per_epoch = len(sampler) if opts.max_batches is None else min(len(sampler),
                                                                    opts.max_batches)
    total_iters = per_epoch * opts.epochs
    warmup = warmup_iterations(opts.warmup, per_epoch)
    log(f'{per_epoch} iterations per epoch, warm-up {warmup}')
    history: dict[str, Any] = {'loss': [], 'val': [], 'epochs': [],
                               'options': opts.to_json()}
    start_epoch, iteration, seen, elapsed_before = 0, 0, 0, 0.0
    if opts.resume is not None:
        state = torch.load(opts.resume, map_location=device, weights_only=False)
        if state.get('cfg_text') != cfg_text:
            raise ConfigError(f'{opts.resume}: checkpoint was trained with another cfg than '
                              f'{opts.cfg}')
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        if ema is not None and state.get('ema') is not None:
            ema.model.load_state_dict(state['ema'])
            ema.updates = state.get('ema_updates', 0)
        start_epoch, iteration = state['epoch'] + 1, state['iteration']
        seen, history = state['seen'], state['history']
        elapsed_before = state.get('elapsed', 0.0)
        log(f'resumed from {opts.resume} after epoch {state["epoch"] + 1}')

    last_map = None
    for epoch in range(start_epoch, opts.epochs):
        sampler.epoch = epoch
        set_train_mode(model, frozen)
        epoch_loss, batches = 0.0, 0
        bar = progress_bar(opts.progress, f'epoch {epoch + 1}/{opts.epochs}', per_epoch)
        for images, targets in loader:
            if batches >= per_epoch:
                break
            lr = _lr_at(iteration, total_iters, opts, warmup)
            for group in optimizer.param_groups:
                group['lr'] = lr
            x = images.to(device, non_blocking=True).float().div_(255.0)
            size = (x.shape[3], x.shape[2])
            outputs = model(x)
            loss, items = loss_fn(outputs, targets.to(device), size)
            if not torch.isfinite(loss):
                raise ConfigError(f'loss became {float(loss)} at iteration {iteration}; '
                                  'lower --lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opts.sparsity > 0:
                _sparsity_step(model, opts.sparsity)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            iteration += 1
            batches += 1
            seen += x.shape[0]
            value = float(loss.detach())
            epoch_loss += value
            history['loss'].append([iteration, value, items['box'], items['obj'],
                                    items['cls']])
            bar.set_postfix_str(f'loss={value:.3f}, size={size[0]}x{size[1]}, '
                                f'lr={lr:.2e}')
            bar.update(1)
        bar.close()
        eval_model = ema.model if ema is not None else model
        row: dict[str, Any] = {'epoch': epoch + 1, 'iteration': iteration,
                               'loss': epoch_loss / max(batches, 1),
                               'elapsed': elapsed_before + time.monotonic() - start_time}
        if val_split is not None:
            metrics = validate(eval_model, val_split, width, height, opts.val_conf,
                               device=device)
            row.update(map50=metrics['map50'], map=metrics['map'])
            last_map = metrics['map50']
            history['val'].append({'epoch': epoch + 1, 'map50': metrics['map50'],
                                   'map': metrics['map']})
        history['epochs'].append(row)
        log(f'epoch {epoch + 1}/{opts.epochs}: loss {row["loss"]:.4f}'
            + (f', val mAP@0.5 {row["map50"]:.4f}, mAP@0.5:0.95 {row["map"]:.4f}'
               if 'map50' in row else '') + f' ({row["elapsed"]:.0f} s)')
        _save_checkpoint(paths['checkpoint'], {
            'epoch': epoch, 'iteration': iteration, 'seen': seen, 'history': history,
            'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'ema': ema.model.state_dict() if ema is not None else None,
            'ema_updates': ema.updates if ema is not None else 0, 'cfg_text': cfg_text,
            'elapsed': row['elapsed'], 'options': opts.to_json()})
        atomic_write_text(paths['history'], json.dumps(history))
        plot_history(history, paths['loss_png'], paths['map_png'])

    final = ema.model if ema is not None else model
    final_cpu = copy.deepcopy(final).to('cpu').eval()
    # Written at the cfg's own input size; the weights do not depend on it.
    save_darknet_weights(final_cpu, paths['weights'], seen=seen)
    atomic_write_text(paths['cfg'], cfg_text)
    atomic_write_text(paths['names'], ''.join(f'{n}\n' for n in train_split.names))
    atomic_write_text(paths['history'], json.dumps(history))
    plot_history(history, paths['loss_png'], paths['map_png'])
    elapsed = elapsed_before + time.monotonic() - start_time
    return TrainResult(paths['weights'], paths['cfg'], history, paths['checkpoint'], elapsed,
                       last_map, [paths['names'], paths['history'], paths['loss_png'],
                                  paths['map_png']])
