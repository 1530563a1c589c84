"""The ``darknet53`` command line: one entry point, one module per subcommand.

Each module named in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` (taking the parsed ``argparse.Namespace`` and returning an exit
code) as the parser default. Modules are imported only to register, so heavy dependencies
(ONNX Runtime, PyTorch, TensorRT) must be imported inside the command functions.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import importlib
import logging
import sys

from darknet53_ros.cli.common import CommandParser, check_dependencies
from darknet53_ros.errors import Darknet53Error
from darknet53_ros.fileio import os_error_text

COMMAND_MODULES: tuple[str, ...] = (
    'darknet53_ros.cli.model',
    'darknet53_ros.cli.detect',
    'darknet53_ros.cli.bench',
    'darknet53_ros.cli.prune',
    'darknet53_ros.cli.study',
    'darknet53_ros.cli.synth',
    'darknet53_ros.cli.train',
    'darknet53_ros.cli.engine',
    'darknet53_ros.cli.replay',
    'darknet53_ros.cli.dataset',
    'darknet53_ros.cli.track',
)

_LOG = logging.getLogger('darknet53')


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = CommandParser(
        prog='darknet53',
        description='Darknet-53 / YOLOv3 models: cfg/weights, ONNX export, detection, engines.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``darknet53`` command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        check_dependencies(args)
        return int(args.func(args) or 0)
    except Darknet53Error as exc:
        _LOG.error('%s', exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # read-only or full filesystem, a folder where a file goes ...
        _LOG.error('%s', os_error_text(exc))
        return 2
    except MemoryError:
        _LOG.error('out of memory (the model or input is too large for this machine)')
        return 2


if __name__ == '__main__':
    sys.exit(main())
