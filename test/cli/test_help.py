"""Every ``darknet53`` subcommand's ``--help`` shows the defaults of its options."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
import re

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
                    or default is argparse.SUPPRESS or default in ('', [])):
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


def _readme_commands() -> Iterator[list[str]]:
    """``darknet53`` command lines of the README and the pages under doc/ (generated
    references excluded: they are the parsers' own output)."""
    from pathlib import Path
    import shlex

    root = Path(__file__).resolve().parents[2]
    pages = [root / 'README.md', *sorted((root / 'doc').glob('*.md'))]
    text = '\n'.join(page.read_text(encoding='utf-8') for page in pages)
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        while line.endswith('\\'):
            line = line[:-1] + ' ' + next(lines).strip()
        line = re.sub(r'^(ros2 run darknet53_ros |[A-Z_]+=\$\()', '', line)
        if line.startswith('darknet53 '):
            line = line.split(' #', 1)[0].split(' | ', 1)[0].split(' > ', 1)[0].rstrip(')')
            yield shlex.split(line.replace('...', ''))[1:]


def test_readme_commands_use_existing_options() -> None:
    """Every ``darknet53 ...`` line in the README and the doc/ pages names a subcommand and
    options it has."""
    root = build_parser()
    commands = dict(_parsers(root))
    count = 0
    for argv in _readme_commands():
        name, words = 'darknet53', list(argv)
        while words and f'{name} {words[0]}' in commands:
            name = f'{name} {words.pop(0)}'
        if name == 'darknet53':  # `darknet53 --help`, `darknet53 --version`
            assert words and all(w.startswith('-') for w in words), argv
        assert name in commands or name == 'darknet53', argv
        known = {s for a in commands[name]._actions for s in a.option_strings}
        for word in words:
            if (word.startswith('-') and ' ' not in word
                    and not word.lstrip('-').replace('.', '').isdigit()):
                assert word.split('=', 1)[0] in known, f'{name}: {word} in {argv}'
        count += 1
    assert count > 30
