"""The dataset check (no PyTorch): what ``darknet53 dataset check`` prints and ``darknet53
train`` runs before training.

Per split: image count, objects, class histogram, box sizes (in network pixels after the
inference letterbox) against the anchors, and the findings below. **Errors** (the check fails,
training refuses): unreadable images, malformed label lines, class ids out of range, boxes
reaching more than one pixel outside the image, degenerate boxes (no width or height), and
what a reader reports (COCO annotations of unknown images or categories, images listed
twice). **Warnings**: images without a label file (Darknet trains them as background), label
files without an image, empty label files, duplicate boxes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from darknet53_ros.errors import DatasetError
from darknet53_ros.io.dataset import Objects, Sample, SplitData, load_image, parse_label_file

__all__ = ['ERRORS', 'SIZE_BINS', 'WARNINGS', 'SplitReport', 'check_split', 'require_trainable',
           'shape_iou_np']

ERRORS = ('unreadable image', 'malformed label line', 'class id out of range',
          'box outside the image', 'degenerate box', 'dataset reader')
WARNINGS = ('image without labels', 'label file without image', 'empty label file',
            'duplicate box')
SIZE_BINS = (0, 8, 16, 32, 64, 128, 256)
"""Lower edges of the box-size histogram (sqrt(w * h), network pixels)."""
EXAMPLES = 5
"""Examples kept per finding."""
OUTSIDE_TOLERANCE = 1.0
"""Pixels a box may reach beyond the image edge before it counts as outside."""


@dataclass
class SplitReport:
    """Findings and statistics of one split (see the module docstring)."""

    name: str
    names: list[str]
    images: int = 0
    objects: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)
    box_sizes: list[tuple[float, float]] = field(default_factory=list)
    anchors: list[tuple[float, float]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        """Record one finding of ``kind`` (an entry of :data:`ERRORS` or :data:`WARNINGS`)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(message)

    @property
    def errors(self) -> int:
        """Number of error findings."""
        return sum(self.counts.get(kind, 0) for kind in ERRORS)

    @property
    def sizes(self) -> np.ndarray:
        """``[M, 2]`` box sizes in network pixels."""
        return np.array(self.box_sizes, np.float64).reshape(-1, 2)

    def size_histogram(self) -> list[int]:
        """Box counts per :data:`SIZE_BINS` bin."""
        side = np.sqrt(self.sizes.prod(1)) if len(self.sizes) else np.zeros(0)
        edges = list(SIZE_BINS) + [np.inf]
        return [int(((side >= lo) & (side < hi)).sum()) for lo, hi in zip(edges, edges[1:])]

    def anchor_counts(self) -> tuple[list[int], float]:
        """Boxes whose best anchor (shape IoU) is each anchor, and the mean best IoU."""
        if not self.anchors or not len(self.sizes):
            return [0] * len(self.anchors), 0.0
        iou = shape_iou_np(self.sizes, np.asarray(self.anchors, np.float64))
        best = iou.argmax(1)
        return ([int((best == k).sum()) for k in range(len(self.anchors))],
                float(iou.max(1).mean()))

    def format(self) -> str:
        """Human-readable report."""
        lines = [f'split {self.name}: {self.images} images, {self.objects} objects, '
                 f'{self.errors} errors']
        lines.append('  classes: ' + ', '.join(
            f'{n} {c}' for n, c in zip(self.names, self.class_counts)))
        labels = [f'{lo}-{hi}' for lo, hi in zip(SIZE_BINS, SIZE_BINS[1:])] + \
            [f'{SIZE_BINS[-1]}+']
        lines.append('  box size sqrt(w*h) px: ' + ', '.join(
            f'{label} {count}' for label, count in zip(labels, self.size_histogram())))
        if self.anchors:
            counts, mean_iou = self.anchor_counts()
            lines.append(f'  best anchor (mean best IoU {mean_iou:.3f}): ' + ', '.join(
                f'{int(w)}x{int(h)} {c}' for (w, h), c in zip(self.anchors, counts)))
        for kind in ERRORS + WARNINGS:
            if self.counts.get(kind):
                level = 'ERROR' if kind in ERRORS else 'warning'
                lines.append(f'  {level}: {self.counts[kind]} x {kind}')
                lines += [f'    {m}' for m in self.examples.get(kind, [])]
        return '\n'.join(lines)


def shape_iou_np(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a centre: ``[M, 2]`` sizes against ``[K, 2]`` anchors."""
    inter = np.minimum(sizes[:, None, 0], anchors[None, :, 0]) * np.minimum(
        sizes[:, None, 1], anchors[None, :, 1])
    return inter / (sizes[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def _label_rows(report: SplitReport, sample: Sample, width: int, height: int,
                ) -> Objects | None:
    """Check a Darknet label file; its valid rows as pixel objects (None: no label file)."""
    assert sample.label is not None
    if not sample.label.is_file():
        report.add('image without labels', f'{sample.image} (no {sample.label})')
        return None
    rows, problems = parse_label_file(sample.label)
    for message in problems:
        report.add('malformed label line', message)
    if not len(rows) and not problems:
        report.add('empty label file', str(sample.label))
    cls, cx, cy, w, h = (rows[:, k] for k in range(5))
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                      (cy + h / 2) * height], 1).reshape(-1, 4)
    return Objects(boxes, cls.astype(np.int64), np.zeros(len(rows), bool))


def _check_objects(report: SplitReport, where: str, objects: Objects, width: int,
                   height: int, classes: int, scale: tuple[float, float]) -> None:
    seen: set[tuple[int, ...]] = set()
    for box, cls in zip(objects.boxes, objects.classes):
        text = f'{where}: class {cls} box {" ".join(f"{v:.1f}" for v in box)} (pixels)'
        if not 0 <= cls < classes:
            report.add('class id out of range', f'{text}; {classes} classes')
            continue
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            report.add('degenerate box', text)
            continue
        tol = OUTSIDE_TOLERANCE
        if box[0] < -tol or box[1] < -tol or box[2] > width + tol or box[3] > height + tol:
            report.add('box outside the image', f'{text}; image {width}x{height}')
            continue
        key = (int(cls), *(int(round(v * 100)) for v in box))
        if key in seen:
            report.add('duplicate box', text)
        seen.add(key)
        report.objects += 1
        report.class_counts[int(cls)] += 1
        report.box_sizes.append((float(box[2] - box[0]) * scale[0],
                                 float(box[3] - box[1]) * scale[1]))


def check_split(split: SplitData, size: tuple[int, int] = (416, 416),
                anchors: Sequence[tuple[float, float]] = ()) -> SplitReport:
    """Check every image and label of ``split``; box sizes are letterboxed to ``size``
    (network width, height) and compared with ``anchors``."""
    report = SplitReport(split.name, list(split.names), anchors=list(anchors))
    report.class_counts = [0] * len(split.names)
    for message in split.problems:
        report.add('dataset reader', message)
    labels_seen, image_dirs = set(), set()
    for sample in split.samples:
        image_dirs.add(sample.image.parent.resolve())
        report.images += 1
        if sample.label is not None:
            labels_seen.add(sample.label.resolve())
        try:
            height, width = load_image(sample.image).shape[:2]
        except DatasetError as exc:
            report.add('unreadable image', str(exc))
            continue
        if sample.objects is not None:
            rows = np.array(sample.objects, np.float64).reshape(-1, 6)
            objects: Objects | None = Objects(rows[:, 1:5], rows[:, 0].astype(np.int64),
                                              rows[:, 5] > 0)
        else:
            objects = _label_rows(report, sample, width, height)
        if objects is None:
            continue
        boxes, classes = objects.trainable()
        fit = min(size[0] / width, size[1] / height)
        _check_objects(report, str(sample.label or sample.image),
                       Objects(boxes, classes, np.zeros(len(boxes), bool)), width, height,
                       len(split.names), (fit, fit))
    for folder in split.label_dirs:
        if not folder.is_dir() or folder.resolve() in image_dirs:
            continue  # labels beside the images: other .txt files there are not labels
        for label in sorted(folder.rglob('*.txt')):
            if label.name != 'classes.txt' and label.resolve() not in labels_seen:
                report.add('label file without image', str(label))
    return report


def require_trainable(report: SplitReport, data: object, allow_empty: bool = False) -> None:
    """Raise :class:`DatasetError` (one line) when ``report`` has errors, or no objects
    unless ``allow_empty``."""
    if report.errors:
        kind = next(k for k in ERRORS if report.counts.get(k))
        raise DatasetError(f'{data}: split {report.name!r} has {report.errors} errors (first: '
                           f'{kind}: {report.examples[kind][0]}); see "darknet53 dataset check '
                           f'{data}"')
    if not report.objects and not allow_empty:
        raise DatasetError(f'{data}: split {report.name!r} has {report.images} images but no '
                           'objects (wrong labels path?); --allow-empty trains on it anyway')
