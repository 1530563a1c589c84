"""``darknet53 dataset check`` and ``darknet53 dataset convert``: a dataset of any layout
(Darknet ``.data``, YOLO data YAML, COCO JSON, ``dataset.yaml``) checked or rewritten."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from darknet53_ros.training.options import parse_img_size

_LOG = logging.getLogger('darknet53.dataset')


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` subcommand with ``check`` and ``convert``."""
    parser = subparsers.add_parser(
        'dataset', help='check or convert a dataset (Darknet, YOLO, COCO layouts)',
        description='Datasets as users have them: a Darknet .data file, a YOLO/Ultralytics '
                    'data YAML, COCO JSON or a darknet53_ros dataset.yaml (auto-detected).')
    commands = parser.add_subparsers(dest='dataset_command', metavar='ACTION')
    commands.required = True
    p = commands.add_parser(
        'check', help='count images and objects, find label errors; exit 1 on errors',
        description='Per split: images, objects, class histogram, box sizes against the '
                    'anchors; errors (unreadable images, malformed lines, class ids out of '
                    'range, boxes outside the image or degenerate) and warnings (images '
                    'without labels, labels without images, empty labels, duplicate boxes). '
                    'Exit status 1 when there are errors.')
    p.add_argument('data', type=Path, help='dataset file or folder')
    p.add_argument('--split', action='append', help='split to check (repeatable; default all)')
    p.add_argument('--cfg', type=Path,
                   help='Darknet cfg whose input size and anchors the box sizes are compared '
                        'with (default: --size and the COCO anchors)')
    p.add_argument('--size', default='416', metavar='S|WxH',
                   help='network input size for the box sizes (without --cfg)')
    p.add_argument('--plot', type=Path, help='PNG of box sizes against the anchors')
    p.set_defaults(func=run_check)
    p = commands.add_parser(
        'convert', help='write a dataset as Darknet, YOLO or COCO',
        description='Write DATA (any layout) as a Darknet (obj.data, lists, labels/), YOLO '
                    '(data.yaml, images/, labels/) or COCO (annotations/instances_SPLIT.json) '
                    'dataset; OUT is replaced only when the conversion is complete.')
    p.add_argument('data', type=Path, help='dataset file or folder')
    p.add_argument('--to', required=True, choices=('darknet', 'yolo', 'coco'), help='layout')
    p.add_argument('-o', '--output', type=Path, required=True, help='output folder OUT')
    p.add_argument('--split', action='append', help='split to convert (repeatable; default all)')
    p.set_defaults(func=run_convert)


def run_check(args: argparse.Namespace) -> int:
    """Run ``darknet53 dataset check``; 1 when errors were found."""
    from darknet53_ros.io.dataset_check import check_split
    from darknet53_ros.io.dataset_formats import open_dataset
    from darknet53_ros.model.generator import COCO_ANCHORS

    anchors: list[tuple[float, float]] = [(float(w), float(h)) for w, h in COCO_ANCHORS]
    size = parse_img_size(args.size)
    assert size is not None
    if args.cfg is not None:
        from darknet53_ros.model.cfg import load_cfg
        from darknet53_ros.model.layers import Yolo

        network = load_cfg(args.cfg)
        size = (network.width, network.height)
        heads = [layer for layer in network.layers if isinstance(layer, Yolo)]
        if heads:
            anchors = [(float(w), float(h)) for w, h in heads[0].anchors]
    dataset = open_dataset(args.data)
    print(f'{dataset.path}: {dataset.layout} layout, splits {", ".join(sorted(dataset.splits))}')
    reports = [check_split(dataset.split(name), size, anchors)
               for name in (args.split or sorted(dataset.splits))]
    for report in reports:
        print(report.format())
    if args.plot is not None:
        from darknet53_ros.tools.dataset import plot_box_sizes

        plot_box_sizes(reports, args.plot)
        print(f'plot: {args.plot}')
    errors = sum(r.errors for r in reports)
    print(f'{errors} errors' if errors else 'no errors')
    return 1 if errors else 0


def run_convert(args: argparse.Namespace) -> int:
    """Run ``darknet53 dataset convert``."""
    from darknet53_ros.io.dataset_convert import convert_dataset

    data = convert_dataset(args.data, args.to, args.output, args.split, log=_LOG.info)
    print(f'use --data {data}')
    return 0
