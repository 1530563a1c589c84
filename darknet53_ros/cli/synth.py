"""``darknet53 synth``: write the synthetic benchmark dataset and/or a multi-camera rosbag2."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from darknet53_ros.errors import ConfigError

_LOG = logging.getLogger('darknet53.synth')


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``320x256``) into ``(width, height)``."""
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ConfigError(f'--size {text!r}: expected WIDTHxHEIGHT, e.g. 320x256')
    return int(parts[0]), int(parts[1])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        'synth', help='generate synthetic robot-camera detection scenes (dataset, rosbag2)',
        description='Deterministic synthetic scenes (box, cone, ball, person, sign): a '
                    'train/val dataset with COCO JSON, Darknet labels and dataset.yaml, and/or '
                    'a multi-camera rosbag2 (MCAP).')
    parser.add_argument('--out', type=Path, help='dataset folder (dataset.yaml is written here)')
    parser.add_argument('--train', type=int, default=0, metavar='N', help='train scenes')
    parser.add_argument('--val', type=int, default=0, metavar='M', help='val scenes')
    parser.add_argument('--seed', type=int, default=0, help='train seed')
    parser.add_argument('--val-seed', type=int, default=None,
                        help='val seed (default: seed + 1000003, disjoint from train)')
    parser.add_argument('--size', default='320x256', metavar='WxH', help='image size')
    parser.add_argument('--format', default='jpg', choices=('jpg', 'png'), help='image format')
    parser.add_argument('--bag', type=Path, help='also write a multi-camera rosbag2 (MCAP) here')
    parser.add_argument('--cameras', type=int, default=2, metavar='K', help='bag cameras')
    parser.add_argument('--frames', type=int, default=20, metavar='F',
                        help='frames per camera (bag) or per sequence (--sequences)')
    parser.add_argument('--fps', type=float, default=None,
                        help='frame rate (default: bag 10; sequences: drawn per sequence from '
                        '5, 10, 15, 25, 30)')
    parser.add_argument('--sequences', type=int, default=0, metavar='N',
                        help='write N tracking sequences with ground-truth identities into '
                        '--out (MOTChallenge layout: seqinfo.ini, img1/, gt/gt.txt)')
    parser.add_argument('--objects', type=int, default=6, metavar='K',
                        help='sequences: objects kept near the view')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``darknet53 synth``; returns the exit code."""
    from darknet53_ros.io.dataset import DATASET_FILE
    from darknet53_ros.tools.camera_bag import write_camera_bag
    from darknet53_ros.training import synthetic

    width, height = parse_size(args.size)
    if args.sequences:
        return _run_sequences(args, width, height)
    if args.out is None and args.bag is None:
        raise ConfigError('synth: give --out DIR (with --train/--val) and/or --bag PATH')
    if args.out is not None and args.train <= 0 and args.val <= 0:
        raise ConfigError('synth: --out needs --train N and/or --val M greater than 0')
    progress = not args.no_progress
    if args.out is not None:
        val_seed = (args.seed + synthetic.VAL_SEED_OFFSET if args.val_seed is None
                    else args.val_seed)
        for split, count, seed in (('train', args.train, args.seed), ('val', args.val, val_seed)):
            if count > 0:
                entry = synthetic.write_dataset(args.out, count, seed, width, height, split,
                                                image_format=args.format, progress=progress)
                _LOG.info('%s: %d images, %d objects (seed %d) in %s', split, entry['count'],
                          entry['objects'], seed, args.out / split)
        _LOG.info('dataset description: %s', args.out / DATASET_FILE)
    if args.bag is not None:
        counts = write_camera_bag(args.bag, cameras=args.cameras, frames=args.frames,
                                  seed=args.seed, width=width, height=height,
                                  fps=10.0 if args.fps is None else args.fps,
                                  overwrite=args.overwrite, progress=progress)
        for topic, count in counts.items():
            _LOG.info('%s: %d messages', topic, count)
        _LOG.info('bag: %s', args.bag)
    return 0


def _run_sequences(args: argparse.Namespace, width: int, height: int) -> int:
    """``--sequences N``: MOTChallenge sequences with ground-truth identities into ``--out``."""
    from darknet53_ros.training.synthetic.sequences import write_sequences

    if args.out is None or args.train or args.val or args.bag is not None:
        raise ConfigError('synth --sequences: give --out DIR, without --train, --val or --bag')
    if args.frames < 1 or args.objects < 0:
        raise ConfigError(f'synth --sequences: --frames {args.frames} must be >= 1 and '
                          f'--objects {args.objects} >= 0')
    done = write_sequences(args.out, args.sequences, args.seed, args.frames, width, height,
                           args.objects, args.fps, progress=not args.no_progress)
    for entry in done:
        _LOG.info('%s: %d frames at %g fps, %d identities, %d boxes', entry['name'],
                  entry['frames'], entry['fps'], entry['ids'], entry['boxes'])
    _LOG.info('sequences (MOTChallenge layout) and seqmaps/SYNTH-all.txt in %s', args.out)
    return 0
