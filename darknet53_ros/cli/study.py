"""``darknet53 study``: input size x precision x pruning, measured (mAP, latency, size)."""
from __future__ import annotations

import argparse
from pathlib import Path
import shlex

from darknet53_ros.cli.common import parse_sizes
from darknet53_ros.cli.train import add_train_arguments, train_options
from darknet53_ros.errors import ConfigError
from darknet53_ros.training.options import TrainOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` subcommand."""
    p = subparsers.add_parser(
        'study', help='speed/accuracy trade-off study: sizes x FP32/INT8 x pruning',
        description='For each pruning ratio (pruned with darknet53 prune, fine-tuned with '
        'darknet53 train), input size and precision: export, quantise (calibrated on the '
        'train split), evaluate mAP on the val split and time ONNX Runtime. Writes study.json, '
        'study.md and pareto.png.')
    p.add_argument('--cfg', type=Path, help='Darknet cfg (default: the bundled demo model)')
    p.add_argument('--weights', type=Path, help='Darknet weights for --cfg')
    p.add_argument('--data', type=Path, help='dataset.yaml or its folder (required unless '
                   '--retime)')
    p.add_argument('--sizes', default='256,320,416,512,608,416x256',
                   help='input sizes, N or WxH')
    p.add_argument('--prune', default='0,0.3,0.5', help='pruning ratios')
    p.add_argument('--no-int8', action='store_true', help='FP32 only')
    p.add_argument('--int8-target', choices=('onnxruntime', 'tensorrt'), default='onnxruntime',
                   help='Q/DQ layout of the INT8 points (onnxruntime: fast on CPU)')
    p.add_argument('--finetune-epochs', type=int, default=3,
                   help='darknet53 train epochs after pruning (0 = none)')
    p.add_argument('--finetune-args', default='',
                   help='extra darknet53 train options, e.g. "--batch 16 --img-size 256"')
    p.add_argument('--calib-count', type=int, default=64,
                   help='train-split images for INT8 calibration')
    p.add_argument('--iterations', type=int, default=30,
                   help='timed runs per point, all points timed round-robin')
    p.add_argument('--retime', action='store_true',
                   help='only re-time the models of the study already in --output (no '
                        'pruning, training or evaluation) and rewrite its table and plot')
    p.add_argument('--eval-limit', type=int, help='evaluate on the first N val images only')
    p.add_argument('-o', '--output', type=Path, default=Path('doc/study'),
                   help='output folder')
    p.set_defaults(func=run)


def finetune_template(cfg: Path, data: Path, epochs: int, extra: str) -> TrainOptions | None:
    """``--finetune-args`` parsed as ``darknet53 train`` options into a TrainOptions template
    (None when empty)."""
    if not extra.strip() or epochs < 1:
        return None
    parser = argparse.ArgumentParser(prog='darknet53 study --finetune-args', add_help=False)
    add_train_arguments(parser)
    try:
        args = parser.parse_args(['--cfg', str(cfg), '--data', str(data), '--epochs', str(epochs),
                                  *shlex.split(extra), '-o', 'finetuned.weights'])
    except SystemExit:
        raise ConfigError(f'--finetune-args {extra!r}: not darknet53 train options') from None
    return train_options(args)


def run(args: argparse.Namespace) -> int:
    """Run the study and print the table."""
    from darknet53_ros.tools.demo import demo_model_files
    from darknet53_ros.tools.study import retime_study, run_study

    if args.retime:
        points = retime_study(args.output, args.iterations)
        print((args.output / 'study.md').read_text())
        print(f'{len(points)} points re-timed; rewrote {args.output}/study.json, study.md, '
              'pareto.png')
        return 0
    if args.data is None:
        raise ConfigError('--data is required (the dataset to evaluate on)')
    if args.cfg is None:
        cfg, weights, _ = demo_model_files()
    else:
        if args.weights is None:
            raise ConfigError('--weights is required with --cfg')
        cfg, weights = args.cfg, args.weights
    try:
        ratios = [float(r) for r in args.prune.split(',')]
    except ValueError:
        raise ConfigError(f'--prune: expected numbers, got {args.prune!r}') from None
    template = finetune_template(cfg, args.data, args.finetune_epochs, args.finetune_args)
    points = run_study(cfg, weights, args.data, args.output, parse_sizes(args.sizes), ratios,
                       int8=not args.no_int8, finetune_epochs=args.finetune_epochs,
                       finetune_options=template, calib_count=args.calib_count,
                       iterations=args.iterations, eval_limit=args.eval_limit,
                       int8_target=args.int8_target)
    print((args.output / 'study.md').read_text())
    print(f'{len(points)} points; wrote {args.output}/study.json, study.md, pareto.png')
    return 0
