"""Dataset plots for ``darknet53 dataset check --plot``: box sizes against the anchors and the
class histogram (matplotlib, PNG)."""
from __future__ import annotations

from collections.abc import Sequence
import os
from pathlib import Path

import numpy as np

from darknet53_ros.fileio import atomic_path
from darknet53_ros.io.dataset_check import SplitReport


def plot_box_sizes(reports: Sequence[SplitReport], path: str | os.PathLike[str]) -> None:
    """Scatter of box width x height (network pixels) per split with the anchors marked, and
    the objects per class, as one PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 4.5))
    for report in reports:
        sizes = report.sizes
        ax.scatter(sizes[:, 0], sizes[:, 1], s=3, alpha=0.4, label=f'{report.name} boxes')
    anchors = np.asarray(reports[0].anchors if reports else [], np.float64).reshape(-1, 2)
    if len(anchors):
        ax.scatter(anchors[:, 0], anchors[:, 1], marker='x', s=80, c='red', label='anchors')
    ax.set_xlabel('box width (network px)')
    ax.set_ylabel('box height (network px)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    names = reports[0].names if reports else []
    x = np.arange(len(names))
    width = 0.8 / max(1, len(reports))
    for k, report in enumerate(reports):
        bars.bar(x + k * width, report.class_counts, width, label=report.name)
    bars.set_xticks(x + 0.4 - width / 2)
    bars.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
    bars.set_ylabel('objects')
    bars.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path), suffix='.png') as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)
