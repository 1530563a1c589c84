"""The suite collects in full wherever it is started, launch_testing's pytest plugin included.

With ROS 2 sourced, launch_testing's pytest plugin (entry point ``launch_testing``) imports every
test module while collecting, to look for ``generate_test_description``; a module that skips at
import (a module-level ``pytest.importorskip``/``pytest.skip``) then raises out of the plugin and
the whole ``test`` package is skipped: ``colcon test`` reports success with nothing run. These
tests count the collected items with and without that import-at-collection behaviour (the real
plugin where it is installed, an equivalent stand-in everywhere) and fail when any is lost.
"""
from __future__ import annotations

from pathlib import Path
import re
import subprocess
import sys
import textwrap

import pytest

from ..conftest import optional_module

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / 'test'
NO_LAUNCH_PLUGINS = ['-p', 'no:launch_testing', '-p', 'no:launch_ros']

# Imports each test module at collection as launch_testing's plugin does, then lets pytest
# collect it as usual; a Skipped raised by the import escapes like it does from the plugin.
STAND_IN = textwrap.dedent("""
    import pytest


    def pytest_pycollect_makemodule(module_path, parent):
        from _pytest.pathlib import import_path

        try:
            import_path(module_path, root=parent.config.rootpath,
                        consider_namespace_packages=False)
        except TypeError:  # pytest < 8.1
            import_path(module_path, root=parent.config.rootpath)
        return None
""")


def _collect(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
             ) -> tuple[int, str]:
    """``(items collected, output)`` of ``pytest --collect-only -q`` in a subprocess."""
    proc = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q',
                           '-p', 'no:cacheprovider', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    match = re.search(r'(\d+) tests? collected', out)
    count = int(match.group(1)) if match else 0
    assert proc.returncode in (0, 5), out[-3000:]
    assert not re.search(r'\d+ (skipped|errors?)\b', out.splitlines()[-1] if out else ''), \
        out[-3000:]
    return count, out


def test_no_module_level_skip_in_any_test_module():
    offenders = []
    for path in sorted(TESTS.rglob('*.py')):
        for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
            if re.match(r'(\w+\s*=\s*)?pytest\.(importorskip|skip)\(', line) \
                    or re.search(r'allow_module_level\s*=\s*True', line):
                offenders.append(f'{path.relative_to(TESTS)}:{number}: {line.strip()}')
    assert not offenders, 'module-level skips (use conftest.requires):\n' + '\n'.join(offenders)


@pytest.fixture(scope='module')
def full_count() -> int:
    count, out = _collect(*NO_LAUNCH_PLUGINS)
    assert count > 100, out[-3000:]
    return count


def test_import_at_collection_loses_nothing(full_count, tmp_path, monkeypatch):
    """The stand-in for launch_testing's plugin: available everywhere."""
    (tmp_path / 'import_at_collection.py').write_text(STAND_IN)
    import os

    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(tmp_path), env.get('PYTHONPATH'))
                                        if p)
    count, out = _collect(*NO_LAUNCH_PLUGINS, '-p', 'import_at_collection', env=env)
    assert count == full_count, out[-3000:]


@pytest.mark.skipif(optional_module('launch_testing.pytest.hooks') is None,
                    reason='launch_testing is not installed (ROS 2 not sourced)')
def test_launch_testing_plugin_loses_nothing(full_count):
    """The real plugin, as ``python3 -m pytest`` and ``colcon test`` load it with ROS
    sourced: every test is still collected (the launch test module becomes one launch test
    item instead of its placeholder)."""
    count, out = _collect()  # the plugin loads through its pytest11 entry point
    assert count >= full_count, out[-3000:]
    assert 'test_launch_ros.py' in out and 'test_launch_test_needs_launch_testing' not in out, \
        'launch_testing plugin not active: ' + out[-3000:]
