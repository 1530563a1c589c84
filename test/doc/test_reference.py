"""The generated references (doc/_ext/darknet53_docs.py): the node parameter reference follows
the schema in ros/params.py, the CLI reference the argparse parsers, a changed default shows
without editing a page, and the copies committed under doc/reference/ are current."""
from __future__ import annotations

import argparse
from dataclasses import replace
import importlib.util
from pathlib import Path
import re
from types import ModuleType

import pytest

from darknet53_ros.cli.main import build_parser
from darknet53_ros.ros import params
from darknet53_ros.ros.cameras import CAMERA_PARAMETERS

ROOT = Path(__file__).resolve().parents[2]


def _docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location('darknet53_docs',
                                                  ROOT / 'doc' / '_ext' / 'darknet53_docs.py')
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs = _docs()


def _rows(text: str) -> dict[str, list[str]]:
    """First column (without backticks) -> cells, of every Markdown table row."""
    rows = {}
    for line in text.splitlines():
        if line.startswith('| `'):
            cells = [c.strip() for c in re.split(r'(?<!\\)\|', line)[1:-1]]
            rows[cells[0].strip('`')] = cells
    return rows


def test_parameter_reference_lists_the_schema() -> None:
    text = docs.parameter_reference()
    rows = _rows(text[:text.index('## Launch arguments')])
    specs = [(spec.name, spec) for spec in params.PARAMETERS]
    specs += [(f'NAME.{spec.name}', spec) for spec in CAMERA_PARAMETERS]
    assert list(rows) == [name for name, _ in specs]
    for key, spec in specs:
        name, kind, default, allowed, runtime, description = rows[key]
        assert (kind, default) == (spec.type, f'`{spec.default_text}`'), spec.name
        assert runtime == ('no' if spec.read_only else '**yes**'), spec.name
        assert ' '.join(spec.description.split())[:40] in description
        for choice in spec.choices or ():
            assert f'`{choice}`' in allowed
        if spec.minimum is not None:
            assert allowed.startswith(f'{spec.minimum:g} ..'), spec.name


def test_a_changed_default_shows_without_editing_a_page(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the docs build does (write_generated into its source folder), with a schema whose
    default changed: the new default is on the page, the old one is gone."""
    changed = tuple(replace(s, default=0.375) if s.name == 'conf_threshold' else s
                    for s in params.PARAMETERS)
    monkeypatch.setattr(params, 'PARAMETERS', changed)
    (tmp_path / 'README.md').write_text('# x\n', encoding='utf-8')
    docs.write_generated(tmp_path / 'src', root=tmp_path)
    page = (tmp_path / 'src' / 'reference' / 'parameters.md').read_text(encoding='utf-8')
    assert _rows(page)['conf_threshold'][2] == '`0.375`'
    assert (tmp_path / 'src' / '_readme.md').is_file()


def test_launch_arguments_are_listed() -> None:
    text = docs.parameter_reference()
    section = text[text.index('## Launch arguments'):]
    rows = _rows(section)
    for name in ('image_topic', 'cameras_file', 'node_per_camera', 'use_sim_time', 'lifecycle'):
        assert name in rows
    assert rows['params_file'][2] == '`<share>/config/detector.yaml`'
    assert {'multi_camera.launch.py', 'detector.launch.py'} <= set(rows['model'][1].split(', '))


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r'^## `(darknet53[^`]*)`$', text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_cli_reference_covers_every_command_and_option() -> None:
    sections = _sections(docs.cli_reference())
    commands = dict(docs.subcommands(build_parser()))
    assert set(sections) == set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if action.option_strings and action.help is not argparse.SUPPRESS \
                    and action.dest != 'help':
                assert action.option_strings[-1] in sections[name], (name, action.dest)
    assert '(default: 0.25)' in sections['darknet53 detect']  # --conf, through --help's text


def test_cli_reference_shows_a_changed_default() -> None:
    parser = build_parser()
    detect = dict(docs.subcommands(parser))['darknet53 detect']
    batch = next(a for a in detect._actions if '--batch' in a.option_strings)
    batch.default = 7
    section = _sections(docs.cli_reference(parser))['darknet53 detect']
    row = next(line for line in section.splitlines() if line.startswith('| `--batch'))
    assert '(default: 7)' in row


def test_readme_links_into_doc_are_made_relative_to_the_site() -> None:
    text = '![a](doc/images/x.jpg) [b](doc/ros2_node.md#dds) <img src="doc/y.png"> [c](docs/z)'
    assert docs.readme_for_site(text) == \
        '![a](images/x.jpg) [b](ros2_node.md#dds) <img src="y.png"> [c](docs/z)'


@pytest.mark.parametrize('page', sorted(docs.GENERATED.values()))
def test_committed_reference_is_current(page: str) -> None:
    """doc/reference/*.md as committed (what GitHub shows) equals what the code generates
    (compared word by word: argparse wraps usage lines differently across Pythons)."""
    committed = (ROOT / 'doc' / page).read_text(encoding='utf-8')
    generated = docs.generated_pages()[page]
    assert committed.split() == generated.split(), \
        f'doc/{page} is out of date: run python3 doc/_ext/darknet53_docs.py'
