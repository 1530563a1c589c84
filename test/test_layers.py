"""The package's shape: one-way layer dependencies, no import cycles, small modules.

Every ``import`` in the package is read with ``ast``, function-level ones included, so a
lower layer importing a higher one fails here even when the import hides inside a function.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'darknet53_ros'
MAX_LINES = 500

#: Layer of each top-level part of the package, and the layers each may import (itself
#: included). ``base`` holds the modules every layer uses (errors, atomic file writes,
#: progress bars, the version).
BASE = ('errors', 'fileio', 'progress', 'version')
ALLOWED: dict[str, frozenset[str]] = {
    'base': frozenset({'base'}),
    'model': frozenset({'base', 'model'}),
    'inference': frozenset({'base', 'model', 'inference'}),
    'io': frozenset({'base', 'model', 'inference', 'io'}),
    'optimize': frozenset({'base', 'model', 'inference', 'io', 'optimize'}),
    # tracking: above inference (boxes, scores, classes), below ros; no io, no ROS messages
    'tracking': frozenset({'base', 'model', 'inference', 'tracking'}),
    'ros': frozenset({'base', 'model', 'inference', 'io', 'optimize', 'tracking', 'ros'}),
    'training': frozenset({'base', 'model', 'inference', 'io', 'training'}),
    'tools': frozenset({'base', 'model', 'inference', 'io', 'optimize', 'tracking', 'ros',
                        'training', 'tools'}),
    'cli': frozenset({'base', 'model', 'inference', 'io', 'optimize', 'tracking', 'ros',
                      'training', 'tools', 'cli'}),
}

#: Third-party packages confined to a few modules (prefixes of the importing module).
CONFINED: dict[str, tuple[str, ...]] = {
    'rclpy': ('darknet53_ros.ros.',),
    'rcl_interfaces': ('darknet53_ros.ros.',),
    'lifecycle_msgs': ('darknet53_ros.ros.',),
    'tensorrt': ('darknet53_ros.inference.backends.tensorrt_backend',
                 'darknet53_ros.inference.backends.engine_file',
                 'darknet53_ros.optimize.engine_builder',
                 'darknet53_ros.optimize.engine_network'),
    'pycuda': ('darknet53_ros.inference.backends.cuda_pycuda',),
    'cuda': ('darknet53_ros.inference.backends.cuda_python',),
    'torch': ('darknet53_ros.training.',),
    # Ray (and the Arrow tables it moves) only in the fleet tool: darknet53_ros/tools/fleet*.py
    'ray': ('darknet53_ros.tools.fleet',),
    'pyarrow': ('darknet53_ros.tools.fleet',),
    'scipy': ('darknet53_ros.tracking.assignment',),
}


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, where, at module level or not."""

    importer: str
    target: str
    line: int
    top_level: bool


def module_name(path: Path) -> str:
    """``darknet53_ros/ros/node.py`` -> ``darknet53_ros.ros.node``."""
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob('*.py'))}


def layer_of(module: str) -> str:
    """The layer a package module belongs to."""
    parts = module.split('.')
    if len(parts) == 1 or parts[1] in BASE:
        return 'base'
    return parts[1]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an imported name refers to (the longest module prefix)."""
    parts = name.split('.')
    for end in range(len(parts), 0, -1):
        candidate = '.'.join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def collect_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import in the package: package-internal targets resolved to modules, external
    ones by their top-level name."""
    found: list[Import] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    names = [f'<relative>.{node.module or ""}']
                elif node.module:
                    names = [f'{node.module}.{alias.name}' for alias in node.names]
            for name in names:
                internal = name.split('.')[0] == PACKAGE
                target = _resolve(name, modules) if internal else name.split('.')[0]
                if target is None or target == PACKAGE:
                    continue  # `from darknet53_ros import Detector`: the public facade
                found.append(Import(importer, target, node.lineno, id(node) in top))
    return found


MODULES = package_modules()
IMPORTS = collect_imports(MODULES)


def layer_violations(imports: list[Import]) -> list[str]:
    """Imports that go from a lower layer to a higher one (or into cli)."""
    bad = []
    for imp in imports:
        if not imp.target.startswith(PACKAGE + '.') or imp.importer == PACKAGE:
            continue
        source, target = layer_of(imp.importer), layer_of(imp.target)
        if target not in ALLOWED[source]:
            bad.append(f'{imp.importer}:{imp.line} ({source}) imports {imp.target} ({target})')
    return bad


def find_cycle(imports: list[Import]) -> list[str] | None:
    """One import cycle between package modules (function-level imports count), or None."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.startswith(PACKAGE + '.') and imp.importer != imp.target:
            graph.setdefault(imp.importer, set()).add(imp.target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer() -> None:
    assert MODULES
    assert {layer_of(m) for m in MODULES} <= set(ALLOWED)


def test_no_layer_imports_a_higher_one() -> None:
    assert layer_violations(IMPORTS) == []


def test_layer_rule_catches_an_upward_import() -> None:
    upward = Import('darknet53_ros.model.cfg', 'darknet53_ros.ros.node_core', 1, False)
    into_cli = Import('darknet53_ros.tools.runner', 'darknet53_ros.cli.main', 1, True)
    sideways = Import('darknet53_ros.training.trainer', 'darknet53_ros.optimize.quantize', 1,
                      True)
    assert len(layer_violations([upward, into_cli, sideways])) == 3


def test_no_import_cycles() -> None:
    assert find_cycle(IMPORTS) is None


def test_cycle_finder_finds_one() -> None:
    a, b = 'darknet53_ros.io.a', 'darknet53_ros.io.b'
    assert find_cycle([Import(a, b, 1, False), Import(b, a, 1, True)]) == [a, b, a]


def test_no_relative_imports() -> None:
    assert [f'{i.importer}:{i.line}' for i in IMPORTS if i.target.startswith('<relative>')] == []


#: Optional packages that runtime paths must not need: a robot's python3 has only what
#: package.xml's rosdep keys install, and ONNX has no key. Package modules that import one at
#: module level may be imported lazily (see test/test_package.py for the runtime set).
LAZY_OPTIONAL = ('onnx',)


def heavy_modules(imports: list[Import]) -> set[str]:
    """Package modules that import a heavy optional package (torch, TensorRT, pycuda, rclpy) or
    one the robot runtime must not need (onnx) at module level: importing them lazily is
    importing that package lazily."""
    return {i.importer for i in imports
            if i.top_level and (i.target in CONFINED or i.target in LAZY_OPTIONAL)}


def test_package_imports_at_module_level() -> None:
    """The graph is visible at the top of each module: imports of the package's own modules
    inside functions are left to cli/ (commands import their workflow when run), to the
    package's lazy ``Detector`` facade, and to modules that pull in torch, TensorRT, pycuda,
    rclpy or onnx (optional packages, imported only where used)."""
    heavy = heavy_modules(IMPORTS)
    hidden = [f'{i.importer}:{i.line} {i.target}' for i in IMPORTS
              if i.target.startswith(PACKAGE + '.') and not i.top_level
              and layer_of(i.importer) != 'cli' and i.importer != PACKAGE
              and i.target not in heavy]
    assert hidden == []


def confinement_violations(imports: list[Import], package: str) -> list[str]:
    """Imports of ``package`` (function-level ones included) outside the modules it is
    confined to."""
    allowed = CONFINED[package]
    return [f'{i.importer}:{i.line}' for i in imports if i.target == package
            and not any(i.importer == a or i.importer.startswith(a) for a in allowed)]


@pytest.mark.parametrize('package', sorted(CONFINED))
def test_heavy_third_party_confined(package: str) -> None:
    assert confinement_violations(IMPORTS, package) == []


def test_ray_is_confined_to_the_fleet_tool() -> None:
    """Ray only in darknet53_ros/tools/fleet*.py: a lazy import elsewhere is caught too."""
    assert any(i.target == 'ray' for i in IMPORTS)  # the rule has something to check
    allowed = [Import('darknet53_ros.tools.fleet', 'ray', 1, True),
               Import('darknet53_ros.tools.fleet_sources', 'ray', 1, True)]
    stray = [Import('darknet53_ros.tools.runner', 'ray', 1, False),
             Import('darknet53_ros.cli.detect', 'ray', 1, False),
             Import('darknet53_ros.io.bags', 'ray', 1, True)]
    assert confinement_violations(allowed, 'ray') == []
    assert len(confinement_violations(stray, 'ray')) == 3


def test_modules_are_small() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
    assert long == {}


def test_architecture_page_matches_tree() -> None:
    """Every subpackage is described in the Architecture page (doc/architecture.md) and vice
    versa."""
    page = (ROOT / 'doc' / 'architecture.md').read_text(encoding='utf-8')
    start = page.index('<!-- section:architecture -->')
    section = page[start:page.index('<!-- /section:architecture -->', start)]
    layers = {layer for layer in ALLOWED if layer != 'base'}
    subpackages = {p.name for p in (ROOT / PACKAGE).iterdir()
                   if p.is_dir() and (p / '__init__.py').is_file()}
    assert layers == subpackages
    for layer in layers:
        assert f'{layer}/' in section, layer
    for base in BASE:
        assert f'{base}.py' in section, base
