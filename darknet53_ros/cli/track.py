"""``darknet53 track`` (detect and track offline) and ``darknet53 track-eval`` (TrackEval)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from darknet53_ros.cli.common import add_detector_options
from darknet53_ros.errors import ConfigError


def parse_tracker_options(items: list[str] | None) -> dict[str, Any]:
    """``--tracker KEY=VALUE`` items as typed :class:`TrackerConfig` fields."""
    from dataclasses import fields

    from darknet53_ros.tracking.tracker import TrackerConfig

    types = {f.name: f.type for f in fields(TrackerConfig)}
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition('=')
        key = key.strip().replace('-', '_')
        if not sep or key not in types:
            raise ConfigError(f'--tracker {item!r}: expected KEY=VALUE with KEY one of '
                              f'{", ".join(types)}')
        kind = str(types[key])
        try:
            if kind == 'bool':
                if text.lower() not in ('true', 'false', '1', '0'):
                    raise ValueError(text)
                values[key] = text.lower() in ('true', '1')
            elif kind == 'int':
                values[key] = int(text)
            elif kind == 'float':
                values[key] = float(text)
            else:
                values[key] = text
        except ValueError:
            raise ConfigError(f'--tracker {item!r}: {text!r} is not a {kind}') from None
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``track`` and ``track-eval`` subcommands."""
    p = subparsers.add_parser(
        'track', help='detect and track: MOTChallenge result files, bags with track ids',
        description='Detect and track offline (ByteTrack-class tracker, darknet53_ros.tracking). '
        'A MOTChallenge sequence (or a folder of them): one result file per sequence '
        '(frame,id,x,y,w,h,conf,-1,-1,-1). A video: <stem>.txt. A rosbag2: what detect writes, '
        'with Detection2D.id set to the track id, and one result file per image topic.')
    p.add_argument('--model', type=Path, help='.onnx model or TensorRT .engine')
    p.add_argument('--source', type=Path, required=True,
                   help='MOTChallenge sequence or folder of them, video, or rosbag2')
    p.add_argument('--output', type=Path, required=True, help='output folder')
    p.add_argument('--detections', choices=('model', 'det'), default='model',
                   help="track the model's detections, or the sequences' det/det.txt")
    p.add_argument('--save-detections', action='store_true',
                   help='also write the detections tracked (det/<sequence>.txt)')
    p.add_argument('--tracker', nargs='+', metavar='KEY=VALUE',
                   help='tracker settings, e.g. high_score=0.5 max_lost_s=1.5 (see '
                   'doc/tracking.md)')
    p.add_argument('--batch', type=int, default=1, help='frames per inference')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an output folder that is not empty (whole, atomically)')
    add_detector_options(p)
    p.set_defaults(func=run_track, conf=0.1)

    p = subparsers.add_parser(
        'track-eval', help='HOTA, DetA, AssA, IDF1, MOTA, ID switches of result files',
        description='Score MOTChallenge result files against ground truth with TrackEval '
        '(pip install trackeval): class-agnostic, every ground-truth box counts.')
    p.add_argument('--gt', type=Path, required=True,
                   help='MOTChallenge sequence folder or folder of them (gt/gt.txt)')
    p.add_argument('--results', type=Path, required=True,
                   help='folder of <sequence>.txt result files (darknet53 track --output)')
    p.add_argument('--sequences', nargs='+', help='sequence names (default: all)')
    p.set_defaults(func=run_track_eval)


def run_track(args: argparse.Namespace) -> int:
    """Run ``darknet53 track``."""
    from darknet53_ros.cli.common import build_detector
    from darknet53_ros.tools.track import run_track as track
    from darknet53_ros.tracking.tracker import TrackerConfig

    config = TrackerConfig.from_dict(parse_tracker_options(args.tracker))
    options = dict(batch=args.batch, progress=not args.no_progress, overwrite=args.overwrite,
                   save_detections=args.save_detections, detections=args.detections)
    if args.model is None:
        summary = track(args.source, args.output, None, config, **options)
    else:
        with build_detector(args.model, args) as detector:
            summary = track(args.source, args.output, detector, config, **options)
    print(summary.text())
    return 0 if summary.frames else 1


def run_track_eval(args: argparse.Namespace) -> int:
    """Run ``darknet53 track-eval``; prints the table."""
    from darknet53_ros.tools.track_eval import evaluate_tracking, format_table

    print(format_table(evaluate_tracking(args.gt, args.results, args.sequences)))
    return 0
