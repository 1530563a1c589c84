"""Helpers shared by the command modules: the parser class (every default shown in
``--help``), detector options and ``--sizes`` parsing."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.backends.registry import backend_choices


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default appended as ``(default: X)``; options without a
    default (``None``) and on/off flags are left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        default = action.default
        if ('%(default)' in text or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or not action.option_strings):
            return text
        return f'{text} (default: %(default)s)'


class CommandParser(argparse.ArgumentParser):
    """The parser of ``darknet53`` and, through ``add_subparsers``, of every subcommand: help
    shows the defaults (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('formatter_class', DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by commands that build a Detector."""
    parser.add_argument('--backend', choices=backend_choices(),
                        default='auto', help='inference backend (default: by file type)')
    parser.add_argument('--conf', type=float, default=0.25,
                        help='confidence threshold')
    parser.add_argument('--nms', type=float, default=0.45,
                        help='NMS IoU threshold')
    parser.add_argument('--max-det', type=int, default=100,
                        help='max detections per image')
    parser.add_argument('--names', type=Path, help='class names file (default: model metadata)')
    parser.add_argument('--threads', type=int, default=0,
                        help='ONNX Runtime intra-op threads (0: all cores)')


def build_detector(model: Path, args: argparse.Namespace) -> Any:
    """Detector from the shared command-line options."""
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.model.names import read_names

    names = read_names(args.names) if getattr(args, 'names', None) else None
    options = {}
    if getattr(args, 'threads', 0):
        options['intra_op_threads'] = args.threads
    return Detector.from_model(model, backend=args.backend, conf_threshold=args.conf,
                               nms_threshold=args.nms, max_detections=args.max_det,
                               class_names=names, **options)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``--sizes`` text: ``N`` or ``WxH`` entries, comma-separated, multiples of 32 (``none``:
    no sizes)."""
    if text.strip().lower() == 'none':
        return []
    sizes = []
    for item in text.split(','):
        parts = item.lower().strip().split('x')
        try:
            width, height = (int(parts[0]), int(parts[-1]))
        except ValueError:
            raise ConfigError(f'--sizes: expected N or WxH entries, got {item!r}') from None
        if len(parts) > 2 or width % 32 or height % 32 or min(width, height) < 32:
            raise ConfigError(f'--sizes: {item!r} is not a multiple of 32')
        sizes.append((width, height))
    return sizes
