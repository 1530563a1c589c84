"""Training plots: loss per iteration and val mAP per epoch (matplotlib, PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.fileio import atomic_path


def plot_history(history: dict[str, Any], loss_png: Path, map_png: Path) -> None:
    """Write the loss curve to ``loss_png`` and the val mAP curve to ``map_png`` (when there
    is data for them)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    losses = history.get('loss', [])
    if losses:
        fig, ax = plt.subplots(figsize=(7, 4))
        its = [row[0] for row in losses]
        ax.plot(its, [row[1] for row in losses], lw=0.6, alpha=0.5, label='loss')
        k = max(1, len(losses) // 50)
        smooth = np.convolve([row[1] for row in losses], np.ones(k) / k, mode='valid')
        ax.plot(its[k - 1:], smooth, lw=1.5, label=f'mean of {k}')
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss per image')
        ax.set_yscale('log')
        _save(plt, fig, loss_png)
    maps = [row for row in history.get('val', []) if row.get('map50') is not None]
    if maps:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r['epoch'] for r in maps], [r['map50'] for r in maps], 'o-', label='mAP@0.5')
        ax.plot([r['epoch'] for r in maps], [r['map'] for r in maps], 's-',
                label='mAP@0.5:0.95')
        ax.set_xlabel('epoch')
        ax.set_ylabel('val mAP')
        ax.set_ylim(0, 1)
        _save(plt, fig, map_png)


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Finish an axes (grid, legend), write the figure atomically as PNG and close it."""
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)
