"""``darknet53 replay``: run a rosbag2 through the detector node's core, offline, into a new bag
(see :mod:`darknet53_ros.tools.replay`)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from darknet53_ros.inference.backends.registry import backend_choices

_LOG = logging.getLogger('darknet53.replay')


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        'replay', help='run a rosbag2 through the detector node offline, into a new bag',
        description='Feed the image topics of a rosbag2 (MCAP or SQLite3) through the ROS 2 '
                    "node's core (same parameters, scheduler and messages) and write "
                    'detections, annotated images, label_info and diagnostics to a new bag.')
    parser.add_argument('--bag', required=True, type=Path, help='input bag (directory or file)')
    parser.add_argument('--output', '-o', required=True, type=Path, help='output bag directory')
    parser.add_argument('--model', help='model file (.onnx, .engine, .cfg); default: the '
                                        "params file's model (or the bundled demo)")
    parser.add_argument('--params', type=Path, help='ROS 2 params YAML (config/detector.yaml '
                                                    'format)')
    parser.add_argument('--cameras', nargs='+', metavar='CAMERA',
                        help="cameras as 'NAME:TOPIC[:TRANSPORT]' or bag topics (default: "
                             "the params file's, else every image topic)")
    parser.add_argument('--backend', choices=backend_choices(),
                        help='override the backend parameter')
    parser.add_argument('--realtime', action='store_true',
                        help='replay at bag rate with the inference thread, honouring '
                             'max_frame_age (frames may be dropped as on the robot)')
    parser.add_argument('--rate', type=float, default=1.0, help='realtime speed factor')
    parser.add_argument('--no-annotated', action='store_true', help='no annotated images')
    parser.add_argument('--storage', default=None, choices=('mcap', 'sqlite3'),
                        help='output storage')
    parser.add_argument('--distro', default='humble', help='message definitions (humble, '
                                                           'jazzy)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``darknet53 replay``; returns the exit code."""
    from darknet53_ros.tools.replay import replay_bag

    summary = replay_bag(args.bag, args.output, model=args.model, params=args.params,
                         cameras=args.cameras, backend=args.backend, realtime=args.realtime,
                         rate=args.rate, annotated=not args.no_annotated,
                         storage=args.storage, distro=args.distro, overwrite=args.overwrite)
    for name, stats in summary.cameras.items():
        drops = ', '.join(f'{k} {v}' for k, v in stats['dropped'].items() if v) or 'none'
        _LOG.info('%s: %d received, %d published, dropped: %s', name, stats['received'],
                  stats['published'], drops)
    for topic, count in summary.undecodable.items():
        _LOG.warning('%s: %d messages could not be deserialised', topic, count)
    _LOG.info('wrote %s (%s)', summary.output,
              ', '.join(f'{t} {n}' for t, n in sorted(summary.topics.items())))
    return 0
