"""Every ``darknet53`` subcommand's ``--help`` shows the defaults of its options."""
from __future__ import annotations

import argparse
from collections.abc import Iterator

from darknet53_ros.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = 'darknet53',
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f'{name} {sub_name}')


def test_every_subcommand_shows_its_defaults() -> None:
    checked = 0
    names = []
    for name, parser in _parsers(build_parser()):
        names.append(name)
        text = ' '.join(parser.format_help().split())
        for action in parser._actions:
            default = action.default
            if (not action.option_strings or default is None or isinstance(default, bool)
                    or default is argparse.SUPPRESS):
                continue
            assert action.help, f'{name} {action.option_strings[0]}: no help'
            assert f'(default: {default})' in text, f'{name} {action.option_strings[0]}'
            assert text.count(f'(default: {default})') >= 1
            checked += 1
    assert {'darknet53 train', 'darknet53 eval', 'darknet53 dataset check',
            'darknet53 dataset convert', 'darknet53 export'} <= set(names)
    assert checked > 50


def test_no_hand_written_default_repeats_the_shown_one() -> None:
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help and action.option_strings and action.default not in (None, False):
                assert f'(default {action.default})' not in action.help, name
                assert f'default {action.default})' not in action.help, name
