"""``darknet53 cfg``, ``darknet53 info`` and ``darknet53 export``: model files."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

from darknet53_ros.errors import ConfigError
from darknet53_ros.model.cfg import Network, load_cfg
from darknet53_ros.model.layers import Convolutional, Layer, Maxpool, Route, Shortcut


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cfg``, ``info`` and ``export`` subcommands."""
    p = subparsers.add_parser('cfg', help='print the Darknet-53/YOLOv3 cfg for given options',
                              description='Write the seed architecture (Darknet-53 backbone, '
                              'YOLOv3 three-scale head) as Darknet cfg text.')
    p.add_argument('--classes', type=int, default=80, help='object classes')
    _add_size(p, default=416)
    p.add_argument('--anchors', help='nine "w,h" pairs in network pixels, e.g. '
                   '"10,13, 16,30, ..." (default: the COCO anchors)')
    p.add_argument('--width-multiplier', type=float, default=1.0,
                   help='scale hidden filters (small or pruned models)')
    p.add_argument('--classifier', action='store_true',
                   help='Darknet-53 ImageNet classifier head instead of YOLOv3')
    p.add_argument('-o', '--output', type=Path, help='write here instead of stdout')
    p.set_defaults(func=run_cfg)

    p = subparsers.add_parser('info', help='layer table, parameters and BFLOPs of a cfg')
    p.add_argument('cfg', type=Path, help='Darknet .cfg file')
    _add_size(p)
    p.set_defaults(func=run_info)

    p = subparsers.add_parser('export', help='export cfg + weights to ONNX',
                              description='Export a Darknet cfg/weights pair to ONNX (opset 13, '
                              'dynamic batch, outputs boxes and scores).')
    p.add_argument('--cfg', type=Path, required=True, help='Darknet .cfg file')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--weights', type=Path, help='Darknet .weights file')
    source.add_argument('--random-weights', type=int, metavar='SEED',
                        help='use random weights (for trying the pipeline without a model)')
    p.add_argument('--names', type=Path, help='class names file (one per line)')
    _add_size(p)
    p.add_argument('--raw', action='store_true',
                   help="also output each head's raw conv output as head_<layer index>")
    p.add_argument('-o', '--output', type=Path, required=True, help='output .onnx file')
    p.set_defaults(func=run_export)


def _add_size(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    suffix = '' if default else ' (default: from the cfg)'
    parser.add_argument('--width', type=int, default=default,
                        help='network input width, a multiple of 32' + suffix)
    parser.add_argument('--height', type=int, default=default,
                        help='network input height, a multiple of 32' + suffix)


def parse_anchors(text: str) -> list[tuple[float, float]]:
    """Parse ``"w,h, w,h, ..."`` into (width, height) pairs."""
    try:
        values = [float(v) for v in text.replace(' ', ',').split(',') if v.strip()]
    except ValueError:
        raise ConfigError(f'--anchors: expected numbers, got {text!r}') from None
    if len(values) % 2 or not values or min(values) <= 0:
        raise ConfigError(f'--anchors: expected positive "w,h" pairs, got {text!r}')
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def run_cfg(args: argparse.Namespace) -> int:
    """Print or write the generated cfg."""
    from darknet53_ros.fileio import atomic_write_text
    from darknet53_ros.model.generator import darknet53_classifier_cfg, yolov3_cfg

    if args.classifier:
        text = darknet53_classifier_cfg(args.classes if args.classes != 80 else 1000,
                                        args.width, args.height, args.width_multiplier)
    else:
        anchors = parse_anchors(args.anchors) if args.anchors else None
        text = yolov3_cfg(args.classes, args.width, args.height, anchors,
                          args.width_multiplier)
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _describe(layer: Layer) -> tuple[str, str]:
    if isinstance(layer, Convolutional):
        groups = f' g{layer.groups}' if layer.groups > 1 else ''
        return 'conv', f'{layer.filters:5d} {layer.size}x{layer.size}/{layer.stride}{groups}'
    if isinstance(layer, Maxpool):
        return 'max', f'      {layer.size}x{layer.size}/{layer.stride}'
    if isinstance(layer, Shortcut):
        return 'shortcut', f'      from {layer.source}'
    if isinstance(layer, Route):
        return 'route', '      ' + ' '.join(str(s) for s in layer.sources)
    return layer.kind, ''


def format_info(network: Network) -> str:
    """The layer table with parameters and BFLOPs, Darknet style."""
    rows = [f'{network.source}: input {network.width}x{network.height}x{network.channels}',
            f'{"layer":>5}  {"type":<9}{"":<18}{"input":>16}  {"output":>16}'
            f'{"params":>11}{"BFLOPs":>9}']
    for layer in network.layers:
        kind, detail = _describe(layer)
        c, h, w = layer.in_shape
        oc, oh, ow = layer.out_shape
        rows.append(f'{layer.index:5d}  {kind:<9}{detail:<18}{f"{w}x{h}x{c}":>16}  '
                    f'{f"{ow}x{oh}x{oc}":>16}{layer.num_params:11d}{layer.bflops:9.3f}')
    rows.append(f'Total: {len(network.layers)} layers, {network.num_params:,} parameters, '
                f'{network.bflops:.3f} BFLOPs')
    return '\n'.join(rows) + '\n'


def run_info(args: argparse.Namespace) -> int:
    """Print the layer table of a cfg."""
    sys.stdout.write(format_info(load_cfg(args.cfg, args.width, args.height)))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export cfg + weights to ONNX."""
    from darknet53_ros.model.names import read_names
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import random_weights, read_weights

    network = load_cfg(args.cfg, args.width, args.height)
    if args.weights is not None:
        weights = read_weights(args.weights, network)
    else:
        weights = random_weights(network, args.random_weights)
    names = read_names(args.names) if args.names else None
    export_onnx(network, weights, args.output, raw=args.raw, names=names)
    heads = len(network.yolo_layers())
    print(f'wrote {args.output}: {network.width}x{network.height}, {network.classes} classes, '
          f'{heads} heads, {network.num_params:,} parameters')
    return 0
