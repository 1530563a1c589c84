"""``darknet53 bench``: per-stage latency vs an OpenCV DNN baseline (see
:mod:`darknet53_ros.tools.bench`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from darknet53_ros.cli.common import parse_sizes
from darknet53_ros.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser(
        'bench', help='per-stage latency vs an OpenCV DNN baseline',
        description='Time preprocess / infer / postprocess (median, p90, p99, fps) on 640x480 '
        'frames for each model and batch size, and in the same run the OpenCV DNN path '
        '(blobFromImage + NMSBoxes) on the same model; prints ratios. Models: --model files '
        'as they are, and --cfg/--weights (default: the bundled demo model) exported at '
        'each --sizes entry.')
    p.add_argument('--model', type=Path, action='append', default=[],
                   help='ONNX model to time (repeatable; FP32 or INT8 Q/DQ)')
    p.add_argument('--cfg', type=Path, help='Darknet cfg to export at each size')
    p.add_argument('--weights', type=Path, help='weights for --cfg (default: random)')
    p.add_argument('--sizes', default='320,416,608',
                   help='input sizes for --cfg / the demo model: N or WxH, comma-separated '
                   '("none" to time only --model files)')
    p.add_argument('--batches', default='1,4', help='batch sizes')
    p.add_argument('--int8', action='store_true',
                   help='also quantise each exported model, in the TensorRT Q/DQ layout and '
                   'the ONNX Runtime one (calibrated on synthetic frames)')
    p.add_argument('--iterations', type=int, default=100, help='timed rounds')
    p.add_argument('--warmup', type=int, default=3, help='untimed runs first')
    p.add_argument('--threads', type=int, default=0, help='ONNX Runtime threads (0: all)')
    p.add_argument('--no-baseline', action='store_true', help='skip the OpenCV DNN baseline')
    p.add_argument('--plot', type=Path, help='write a latency-vs-size plot (PNG)')
    p.add_argument('--json', type=Path, help='write the measurements as JSON')
    p.add_argument('--cameras', help='camera counts, e.g. 1,2,4,8: instead of the stage '
                   'timing, drive the node core with that many synthetic cameras, shared '
                   'batched engine vs one Detector per camera (model: the first --model, '
                   'default the bundled demo model)')
    p.add_argument('--rate', type=float, default=15.0,
                   help='--cameras: frames per second per camera')
    p.add_argument('--duration', type=float, default=5.0,
                   help='--cameras: seconds per design and count')
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Time every model x batch and print the table and ratios."""
    from darknet53_ros.tools.bench import format_rows, plot_rows, run_bench, write_json

    if args.cameras:
        return run_cameras(args)
    try:
        batches = [int(b) for b in args.batches.split(',')]
    except ValueError:
        raise ConfigError(f'--batches: expected integers, got {args.batches!r}') from None
    if not batches or min(batches) < 1 or args.iterations < 1:
        raise ConfigError('--batches and --iterations must be >= 1')
    rows = run_bench(args.model, batches, parse_sizes(args.sizes), cfg=args.cfg,
                     weights=args.weights, int8=args.int8, iterations=args.iterations,
                     warmup=args.warmup, baseline=not args.no_baseline, threads=args.threads,
                     log=lambda text: print(text, flush=True))
    print(format_rows(rows))
    if args.plot:
        plot_rows(rows, args.plot)
        print(f'wrote {args.plot}')
    if args.json:
        write_json(rows, args.json)
        print(f'wrote {args.json}')
    return 0


def run_cameras(args: argparse.Namespace) -> int:
    """``--cameras``: the multi-camera table (and plot / JSON)."""
    import json

    from darknet53_ros.fileio import atomic_write_text
    from darknet53_ros.tools.bench_cameras import (
        bench_cameras,
        format_cameras,
        plot_cameras,
        runs_as_dicts,
    )

    try:
        counts = [int(c) for c in args.cameras.split(',')]
    except ValueError:
        raise ConfigError(f'--cameras: expected integers, got {args.cameras!r}') from None
    model = str(args.model[0]) if args.model else 'models/demo.cfg'
    runs = bench_cameras(model, counts, args.rate, args.duration)
    print(format_cameras(runs))
    if args.plot:
        plot_cameras(runs, args.plot)
        print(f'wrote {args.plot}')
    if args.json:
        atomic_write_text(args.json, json.dumps(runs_as_dicts(runs), indent=1))
        print(f'wrote {args.json}')
    return 0
