"""Helpers shared by the command modules: the parser class (every default shown in
``--help``), detector options, ``--sizes`` parsing and the optional-dependency check every
command runs before it starts."""
from __future__ import annotations

import argparse
from collections.abc import Callable
import importlib.util
from pathlib import Path
import sys
from typing import Any

from darknet53_ros.errors import ConfigError, Darknet53Error, require_python
from darknet53_ros.inference.backends.registry import backend_choices
from darknet53_ros.io.sources import source_kind


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default appended as ``(default: X)``; options without a
    default (``None``, empty) and on/off flags are left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        default = action.default
        if ('%(default)' in text or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or default in ('', [])
                or not action.option_strings):
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
                        default='auto', help='inference backend; auto: by the model file type')
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


# Optional module -> the extra that installs it (setup.py EXTRAS). onnx is a requirement of a
# pip install, but a colcon build on a robot gets only what package.xml's rosdep keys install,
# and onnx has none: the hint names the package itself.
_EXTRA_OF = {'cv2': 'cpu', 'onnxruntime': 'cpu', 'rosbags': 'bags', 'torch': 'train',
             'pycocotools': 'eval', 'matplotlib': 'eval', 'ray': 'fleet',
             'pyarrow': 'fleet', 'scipy': 'track', 'trackeval': 'track-eval'}
_PACKAGE_OF = {'onnx': 'onnx'}
_ALWAYS: Callable[[argparse.Namespace], bool] = lambda a: True  # noqa: E731


def _fleet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, 'fleet', None))


def _is_bag(args: argparse.Namespace) -> bool:
    if _fleet(args):
        return True  # fleets are mostly bags; the [fleet] extra installs rosbags
    if getattr(args, 'source', None) is None:
        return False
    try:
        return source_kind(args.source) == 'bag'
    except Darknet53Error:
        return False  # the command itself reports a missing or unknown source


# Command -> (module, condition on the arguments) it cannot start without.
_NEEDS: dict[str, tuple[tuple[str, Callable[[argparse.Namespace], bool]], ...]] = {
    'detect': (('cv2', lambda a: True), ('rosbags', _is_bag), ('ray', _fleet),
               ('pyarrow', _fleet)),
    'demo': (('cv2', lambda a: True), ('onnxruntime', lambda a: True),
             ('rosbags', lambda a: True), ('onnx', _ALWAYS)),
    'export': (('onnx', _ALWAYS),),
    'quantize': (('onnx', _ALWAYS),),
    'build-engine': (('onnx', _ALWAYS),),
    'synth': (('cv2', lambda a: True), ('rosbags', lambda a: a.bag is not None)),
    'replay': (('cv2', lambda a: True), ('rosbags', lambda a: True)),
    'eval': (('cv2', lambda a: True), ('pycocotools', lambda a: True),
             ('matplotlib', lambda a: True)),
    'train': (('torch', lambda a: True), ('cv2', lambda a: True)),
    'bench': (('matplotlib', lambda a: a.plot is not None),),
    'track': (('cv2', lambda a: True), ('scipy', lambda a: not _installed('lap')),
              ('rosbags', _is_bag)),
    'track-eval': (('trackeval', lambda a: True),),
}


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


#: Commands that run the PyTorch training code (Python 3.10+; the runtime works on 3.8).
TRAINING_COMMANDS = ('train', 'study')
#: Python that ``detect --fleet`` needs (Ray Data).
FLEET_PYTHON = (3, 10)


def check_dependencies(args: argparse.Namespace) -> None:
    """Raise ConfigError naming the extra to install when the command ``args.command`` needs
    an optional module that is missing, or a newer Python (checked before any work starts)."""
    command = getattr(args, 'command', '')
    if command in TRAINING_COMMANDS:
        require_python(f'darknet53 {command}')
    if command == 'detect' and _fleet(args):
        require_python('darknet53 detect --fleet (Ray Data)', FLEET_PYTHON,
                       advice='Run the fleet driver on Python 3.10+ (detect --source works '
                       'here).')
    missing = [module for module, wanted in _NEEDS.get(getattr(args, 'command', ''), ())
               if not _installed(module) and wanted(args)]
    if missing:
        extras = ','.join(sorted({_EXTRA_OF[m] for m in missing if m in _EXTRA_OF}))
        hints = [f"'darknet53_ros[{extras}]'"] if extras else []
        hints += sorted({_PACKAGE_OF[m] for m in missing if m in _PACKAGE_OF})
        raise ConfigError(f'darknet53 {args.command} needs {", ".join(missing)}, which is not '
                          f'installed: pip install {" ".join(hints)}')
