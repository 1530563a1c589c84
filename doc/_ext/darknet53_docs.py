"""The documentation's generated pages, and the Sphinx extension that writes them at build time.

Reference material is generated from the code, never written by hand:

- ``reference/parameters.md``: the node's parameters from the schema in
  ``darknet53_ros/ros/params.py`` (name, type, default, range, runtime-changeable, description)
  and the launch files' arguments;
- ``reference/cli.md``: every ``darknet53`` subcommand from the argparse parsers that
  ``darknet53_ros/cli/main.py`` builds.

``doc/conf.py`` loads this module as a Sphinx extension: on every build it rewrites both pages
(so a changed default shows without editing a page), writes the README as the front page of
the site (``_readme.md``, its ``doc/`` links made relative to the site) and provides the
``optional-toctree`` directive. The committed copies under ``doc/reference/`` are what GitHub
shows; ``test/doc/test_reference.py`` fails when they are stale, and
``python3 doc/_ext/darknet53_docs.py`` rewrites them. Nothing here imports Sphinx at module
level: the tests import it without Sphinx, on every Python the package supports.
"""
from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator, Sequence
from pathlib import Path
import re
import sys
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
"""The repository (package) root when this file sits in ``<root>/doc/_ext``."""

GENERATED = {'parameters': 'reference/parameters.md', 'cli': 'reference/cli.md'}
"""Generated page -> its path under the documentation source folder."""

_NOTE = ('<!-- Generated from {source} by doc/_ext/darknet53_docs.py: do not edit. '
         '`python3 doc/_ext/darknet53_docs.py` rewrites it; every docs build does too. -->')


def _cell(text: str) -> str:
    """Text for one Markdown table cell."""
    return ' '.join(str(text).split()).replace('|', '\\|')


def _code(text: str) -> str:
    return f'`{text}`' if '`' not in text else f'`` {text} ``'


# -- node parameters ---------------------------------------------------------------------------
def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1e6 else f'{value:g}'


def _range_text(spec: Any) -> str:
    if spec.choices:
        return ', '.join(_code(c) for c in spec.choices)
    if spec.minimum is not None and spec.maximum is not None:
        return f'{_number(spec.minimum)} .. {_number(spec.maximum)}'
    return ''


def launch_arguments(launch_dir: Path) -> list[tuple[str, list[str], str, str]]:
    """``(name, [launch files], default, description)`` of every launch argument, read from
    the launch files' ``DeclareLaunchArgument`` calls and the shared node arguments."""
    from darknet53_ros.ros.launching import NODE_LAUNCH_ARGUMENTS

    found: dict[str, tuple[list[str], str, str]] = {}
    for path in sorted(launch_dir.glob('*.launch.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
            if isinstance(node, ast.Starred) and isinstance(node.value, ast.Call) and \
                    getattr(node.value.func, 'id', None) == 'node_launch_arguments':
                for name, default, description in NODE_LAUNCH_ARGUMENTS:
                    found.setdefault(name, ([], default, description))[0].append(path.name)
            if not (isinstance(node, ast.Call)
                    and getattr(node.func, 'id', None) == 'DeclareLaunchArgument'):
                continue
            name = ast.literal_eval(node.args[0])
            keywords = {k.arg: k.value for k in node.keywords}
            default = _launch_default_text(keywords['default_value'])
            description = ast.literal_eval(keywords['description'])
            found.setdefault(name, ([], default, description))[0].append(path.name)
    return [(name, files, default, description)
            for name, (files, default, description) in sorted(found.items())]


def _launch_default_text(node: ast.expr) -> str:
    """A launch argument's default as text: a literal, or for the package's share directory
    joined with a path (``PathJoinSubstitution([FindPackageShare(...), ...])``)
    ``<share>/config/...``."""
    if isinstance(node, ast.Constant):
        return str(node.value) if node.value != '' else "''"
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.List):
        parts = [item.value if isinstance(item, ast.Constant) else '<share>'
                 for item in node.args[0].elts]
        return '/'.join(str(part) for part in parts)
    return '(computed)'


def _parameter_rows(specs: Sequence[Any], prefix: str = '') -> list[str]:
    """One table row per parameter spec (name, type, default, range, runtime, description)."""
    return ['| ' + ' | '.join([
        _code(prefix + spec.name), spec.type, _code(spec.default_text), _range_text(spec),
        'no' if spec.read_only else '**yes**', _cell(spec.description)]) + ' |'
        for spec in specs]


def parameter_reference(parameters: Sequence[Any] | None = None,
                        launch_dir: Path | None = None,
                        camera_parameters: Sequence[Any] | None = None) -> str:
    """The node parameter reference (Markdown) from the schema in ``ros/params.py`` and the
    per-camera one in ``ros/cameras.py``."""
    from darknet53_ros.ros import cameras
    from darknet53_ros.ros import params as schema

    specs = schema.PARAMETERS if parameters is None else parameters
    per_camera = cameras.CAMERA_PARAMETERS if camera_parameters is None else camera_parameters
    lines = [
        _NOTE.format(source='darknet53_ros/ros/params.py and launch/*.launch.py'), '',
        '# Node parameters and launch arguments', '',
        f'The parameters of `detector_node` (node name `{schema.NODE_NAME}`), generated from '
        'the schema in `darknet53_ros/ros/params.py`, the one place they are declared. Set '
        'them in a params file (`config/detector.yaml` lists every one with its default), with '
        '`--ros-args -p name:=value`, or through the launch files. *Runtime* parameters can be '
        'changed while the node runs (`ros2 param set /darknet53_detector conf_threshold 0.4`); '
        'the others are read-only and take a restart. `ros2 param describe` shows the same '
        'descriptions and ranges.', '',
        '| parameter | type | default | range / choices | runtime | description |',
        '|---|---|---|---|---|---|',
    ]
    lines += _parameter_rows(specs)
    lines += [
        '', '## Per-camera parameters', '',
        'Every name `NAME` of `cameras` has these parameters (`front.topic`, `front.transport`, '
        '...), declared once in `darknet53_ros/ros/cameras.py`; defaults derive from the name. '
        '`config/multi_camera.yaml` spells them out for its first camera.', '',
        '| parameter | type | default | range / choices | runtime | description |',
        '|---|---|---|---|---|---|',
    ]
    lines += _parameter_rows(per_camera, 'NAME.')
    arguments = launch_arguments(launch_dir or ROOT / 'launch')
    lines += [
        '', '## Launch arguments', '',
        '`ros2 launch darknet53_ros <file> --show-args` lists them too. An empty `model` or '
        "`backend` keeps the params file's value.", '',
        '| argument | launch files | default | description |', '|---|---|---|---|',
    ]
    for name, files, default, description in arguments:
        lines.append(f'| {_code(name)} | {", ".join(files)} | {_code(default)} | '
                     f'{_cell(description)} |')
    return '\n'.join(lines) + '\n'


# -- command line ------------------------------------------------------------------------------
def subcommands(parser: argparse.ArgumentParser, name: str = 'darknet53',
                ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(full command name, parser)`` of ``parser`` and every subcommand below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from subcommands(sub, f'{name} {sub_name}')


_USAGE_WIDTH = 92  # fixed, not the terminal's: the page must not depend on who generates it


def _anchor(name: str) -> str:
    return name.replace(' ', '-')


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The ``darknet53`` command-line reference (Markdown) from its argparse parsers."""
    if parser is None:
        from darknet53_ros.cli.main import build_parser

        parser = build_parser()
    commands = list(subcommands(parser))
    lines = [
        _NOTE.format(source='darknet53_ros/cli/ (the parsers of darknet53_ros.cli.main)'), '',
        '# Command line: `darknet53`', '',
        'Generated from the argparse parsers, as `darknet53 <command> --help` prints them. '
        'Installed by `pip install` on `PATH`; in a colcon workspace run it as '
        '`ros2 run darknet53_ros darknet53 ...`. Every command ends a failure with one '
        '`ERROR darknet53: ...` line and exit code 2 (see [Reliability](../reliability.md)).',
        '', '| command | what it does |', '|---|---|',
    ]
    summaries = {}  # the one-line help each subcommand has in its parent's --help
    for name, sub in commands:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                summaries.update({f'{name} {choice.dest}': choice.help or ''
                                  for choice in action._choices_actions})
    for name, sub in commands[1:]:
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            continue
        summary = summaries.get(name) or (sub.description or '').split('. ')[0]
        lines.append(f'| [{name}](#{_anchor(name)}) | {_cell(summary)} |')
    for name, sub in commands:
        formatter = sub.formatter_class(prog=sub.prog, width=_USAGE_WIDTH)
        lines += ['', f'## `{name}`', '']
        if sub.description:
            lines += [' '.join(sub.description.split()), '']
        formatter.add_usage(sub.usage, sub._actions, sub._mutually_exclusive_groups)
        usage = formatter.format_help().strip()
        lines += ['```text', usage, '```', '']
        rows = []
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                lines += ['Subcommands: ' + ', '.join(
                    f'[{choice}](#{_anchor(f"{name} {choice}")})'
                    for choice in action.choices), '']
                continue
            if action.help is argparse.SUPPRESS or action.dest == 'help':
                continue
            invocation = formatter._format_action_invocation(action)
            help_text = formatter._expand_help(action) if action.help else ''
            rows.append(f'| {_code(invocation)} | {_cell(help_text)} |')
        if rows:
            lines += ['| argument | description |', '|---|---|', *rows]
    return '\n'.join(lines) + '\n'


# -- README as the site's front page -----------------------------------------------------------
def readme_for_site(text: str) -> str:
    """The README with its links into ``doc/`` made relative to the documentation root."""
    return re.sub(r'(\]\(|src=")doc/', r'\1', text)


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it; True when written."""
    if path.is_file() and path.read_text(encoding='utf-8') == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding='utf-8')
    return True


def generated_pages() -> dict[str, str]:
    """Path under the documentation source folder -> generated text."""
    return {GENERATED['parameters']: parameter_reference(),
            GENERATED['cli']: cli_reference()}


def write_generated(srcdir: Path, root: Path = ROOT) -> list[Path]:
    """Write the generated pages (and the front page) into ``srcdir``; the written paths."""
    pages = generated_pages()
    pages['_readme.md'] = readme_for_site((root / 'README.md').read_text(encoding='utf-8'))
    return [srcdir / rel for rel, text in pages.items() if write_if_changed(srcdir / rel, text)]


# -- Sphinx ------------------------------------------------------------------------------------
def _builder_inited(app: Any) -> None:
    root = Path(app.config.darknet53_root)
    for path in write_generated(Path(app.srcdir), root):
        print(f'[darknet53_docs] wrote {path}', file=sys.stderr)


def _link_readme(app: Any, docname: str, source: list[str]) -> None:
    # The pages link the README as ../README.md (right on GitHub); on the site the README is
    # the front page.
    if docname != 'index':
        up = '../' * docname.count('/')
        source[0] = source[0].replace('](../' + up + 'README.md', '](' + up + 'index.rst')


def _mock_imports(app: Any, config: Any) -> None:
    # rosdoc2's generated conf.py replaces autodoc_mock_imports after it runs doc/conf.py:
    # merge the package's optional dependencies back in here.
    config.autodoc_mock_imports = sorted(set(config.autodoc_mock_imports or ())
                                         | set(config.darknet53_mock_imports))


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    from docutils.parsers.rst import directives
    from docutils.statemachine import StringList
    from sphinx.directives.other import TocTree
    from sphinx.util import docname_join

    class OptionalTocTree(TocTree):
        """A toctree some of whose entries (those its ``:optional:`` option names) may be
        pages that do not exist yet: those are left out without a warning, so a page another
        branch adds appears once it is merged. Any other missing entry still warns."""

        option_spec = {**TocTree.option_spec, 'optional': directives.unchanged}

        def run(self) -> list[Any]:
            optional = set(self.options.pop('optional', '').split())

            def keep(line: str) -> bool:
                target = line.strip()
                if target.endswith('>') and '<' in target:
                    target = target[target.rindex('<') + 1:-1]
                return target not in optional or \
                    docname_join(self.env.docname, target) in self.env.found_docs

            self.content = StringList([line for line in self.content if keep(line)])
            return super().run()

    app.add_config_value('darknet53_root', str(ROOT), 'env')
    app.add_config_value('darknet53_mock_imports', [], 'env')
    app.add_directive('optional-toctree', OptionalTocTree)
    app.connect('config-inited', _mock_imports)
    app.connect('builder-inited', _builder_inited, priority=400)
    app.connect('source-read', _link_readme)
    return {'version': '1', 'parallel_read_safe': True, 'parallel_write_safe': True}


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the committed generated pages under ``doc/`` (or check them with --check)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('--check', action='store_true',
                        help='only report stale pages (exit 1), write nothing')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    stale = []
    for rel, text in generated_pages().items():
        path = ROOT / 'doc' / rel
        if args.check:
            if not path.is_file() or path.read_text(encoding='utf-8') != text:
                stale.append(rel)
        elif write_if_changed(path, text):
            print(f'wrote {path}')
    for rel in stale:
        print(f'doc/{rel} is out of date: run python3 doc/_ext/darknet53_docs.py',
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
