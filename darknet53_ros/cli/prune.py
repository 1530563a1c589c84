"""``darknet53 prune``: remove the least important filters, write a smaller cfg + weights."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prune`` subcommand."""
    p = subparsers.add_parser(
        'prune', help='filter pruning: write a smaller cfg + weights pair',
        description='Remove the least important filters of the convolutions whose outputs feed '
        'only the next convolution (residual sums and concatenations keep their channels). '
        'Fine-tune the result with `darknet53 train --weights OUT.weights`.')
    p.add_argument('--cfg', type=Path, required=True, help='Darknet .cfg file')
    p.add_argument('--weights', type=Path, required=True, help='Darknet .weights file')
    p.add_argument('--ratio', type=float, required=True,
                   help='fraction of prunable filters to remove, in [0, 1)')
    p.add_argument('--method', choices=('l1', 'bn-gamma'), default='l1',
                   help='l1: kernel L1 norm per layer; bn-gamma: |BN gamma| with a global '
                   'threshold (after sparsity training)')
    p.add_argument('--min-keep', type=float, default=0.1,
                   help="keep at least this fraction of each layer's filters")
    p.add_argument('--channel-multiple', type=int, default=8,
                   help='round kept filter counts up to a multiple of this')
    p.add_argument('-o', '--output', type=Path, required=True,
                   help='output prefix: writes OUTPUT.cfg and OUTPUT.weights')
    p.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    """Prune and write the smaller model; print parameters and BFLOPs before and after."""
    from darknet53_ros.errors import ConfigError
    from darknet53_ros.fileio import atomic_write_text
    from darknet53_ros.model.cfg import load_cfg
    from darknet53_ros.model.prune import prune
    from darknet53_ros.model.weights import read_weights, write_weights

    if args.channel_multiple < 1:
        raise ConfigError('--channel-multiple must be >= 1')
    if not 0.0 < args.min_keep <= 1.0:
        raise ConfigError('--min-keep must be in (0, 1]')
    network = load_cfg(args.cfg)
    weights = read_weights(args.weights, network)
    result = prune(network, weights, args.ratio, args.method,
                   min_keep_fraction=args.min_keep, channel_multiple=args.channel_multiple)
    out = args.output
    cfg_path = out.with_name(out.name + '.cfg')
    weights_path = out.with_name(out.name + '.weights')
    atomic_write_text(cfg_path, result.cfg_text)
    write_weights(weights_path, result.network, result.weights)
    before, after = network, result.network
    removed = sum(weights.layers[i].biases.size - len(k) for i, k in result.kept.items())
    print(f'pruned {removed} filters in {len(result.kept)} layers ({args.method}, '
          f'ratio {args.ratio})')
    print(f'parameters: {before.num_params:,} -> {after.num_params:,} '
          f'({after.num_params / before.num_params:.1%})')
    print(f'BFLOPs at {before.width}x{before.height}: {before.bflops:.3f} -> '
          f'{after.bflops:.3f} ({after.bflops / before.bflops:.1%})')
    print(f'wrote {cfg_path} and {weights_path}')
    return 0
