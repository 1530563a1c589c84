"""The README's and the doc/ pages' examples cannot rot: every shell or Python block carries an
``<!-- example: KIND -->`` mark on a line above it, and the ``run`` blocks are run here.

Kinds: ``run`` (run by this test), ``robot`` (needs ROS 2), ``jetson`` (needs an NVIDIA GPU
with TensorRT), ``slow`` (runs without either, but for minutes or on files that cannot be
bundled; the mark gives the reason), ``ci`` (what ``.ci/run`` itself runs). Every ``darknet53``
line of every block is also checked against the parsers by ``test/cli/test_help.py``.

A page's ``run`` blocks run in order in one temporary folder, as a reader would type them from
the repository root: ``darknet53 ...`` lines in this process through
:func:`darknet53_ros.cli.main.main` (each must exit 0), Python blocks with ``exec``. The inputs
a page names but does not make are small stand-ins (:data:`STAND_INS`: ``yolov3.cfg`` and
``yolov3.weights`` are the bundled demo model, ``recording/`` a 3-frame two-camera bag, ...).
``; smaller: CMD OPTIONS; ...`` after the mark appends OPTIONS to that block's ``darknet53 CMD``
lines (fewer images, one epoch): argparse keeps the last value of an option.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass, field
import io
import logging
import os
from pathlib import Path
import re
import shlex
import shutil

import pytest

from darknet53_ros.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
KINDS = ('run', 'robot', 'jetson', 'slow', 'ci')
COMMAND_LANGUAGES = ('bash', 'sh', 'shell', 'console', 'python', 'py')
_MARK = re.compile(r'^<!-- example: (?P<kind>[a-z]+)(?P<rest>.*?)\s*-->$')


def pages() -> list[Path]:
    """The README and every hand-written page (the generated references print no commands)."""
    return [ROOT / 'README.md', *sorted((ROOT / 'doc').glob('*.md'))]


@dataclass
class Block:
    page: Path
    line: int
    language: str
    text: str
    kind: str = ''
    smaller: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        return f'{self.page.relative_to(ROOT)}:{self.line}'


def blocks(page: Path) -> Iterator[Block]:
    """Fenced code blocks of a Markdown page, with the example mark of the comment lines
    right above each (``<!-- ... -->`` lines only, any order)."""
    lines = page.read_text(encoding='utf-8').splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r'^```(\S*)', lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith('```'))
        block = Block(page, i + 1, fence[1], '\n'.join(lines[i + 1:end]) + '\n')
        above = i - 1
        while above >= 0 and lines[above].startswith('<!--'):
            mark = _MARK.match(lines[above].strip())
            if mark:
                block.kind = mark['kind']
                rest = mark['rest'].strip()
                if rest.startswith('; smaller:'):
                    for part in rest[len('; smaller:'):].split(';'):
                        words = shlex.split(part)
                        block.smaller[words[0]] = words[1:]
            above -= 1
        yield block
        i = end + 1


def command_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page) if b.language in COMMAND_LANGUAGES]


def test_every_command_block_is_marked() -> None:
    found = command_blocks()
    assert len(found) > 20
    unmarked = [str(b) for b in found if b.kind not in KINDS]
    assert unmarked == [], f'add <!-- example: {"|".join(KINDS)} --> above: {unmarked}'
    for b in found:
        if b.kind == 'slow':
            assert '(' in b.page.read_text(encoding='utf-8').splitlines()[b.line - 2], \
                f'{b}: a slow example says why in its mark'
    kinds = {b.kind for b in found}
    assert {'run', 'robot', 'jetson'} <= kinds


def test_readme_set_up_block_stays_first() -> None:
    """.ci/run takes the test command from the second line of the README's first bash block."""
    first = next(b for b in blocks(ROOT / 'README.md') if b.language == 'bash')
    assert first.kind == 'ci'
    assert first.text.splitlines()[1].endswith('python3 -m pytest -q')


def test_the_readme_reaches_the_robot_quick_start_early() -> None:
    lines = (ROOT / 'README.md').read_text(encoding='utf-8').splitlines()
    assert len(lines) < 250
    assert any(line.startswith('## Robot quick start') for line in lines[:80])


# -- stand-in inputs ---------------------------------------------------------------------------
MODELS = ROOT / 'darknet53_ros' / 'models'


class StandIns:
    """Small inputs for the examples, each made once per test session and copied in."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def _cached(self, name: str, make: Callable[[Path], None]) -> Path:
        path = self.cache / name
        if not path.exists():
            make(path)
        return path

    def synth(self) -> Path:
        return self._cached('synth', lambda p: _ok(['synth', '--out', str(p), '--train', '8',
                                                    '--val', '4', '--size', '320x256',
                                                    '--no-progress']))

    def onnx(self) -> Path:
        pytest.importorskip('onnx', reason='onnx not installed (the examples export models)')
        return self._cached('demo.onnx', lambda p: _ok([
            'export', '--cfg', str(MODELS / 'demo.cfg'), '--weights', str(MODELS / 'demo.weights'),
            '--names', str(MODELS / 'demo.names'), '-o', str(p)]))

    def int8(self) -> Path:
        return self._cached('demo_int8.onnx', lambda p: _ok([
            'quantize', '--model', str(self.onnx()), '--calib',
            str(self.synth() / 'train' / 'images'), '--calib-count', '4', '--held-out', '0',
            '-o', str(p)]))

    def bag(self) -> Path:
        pytest.importorskip('rosbags', reason='rosbags not installed (bag examples)')
        return self._cached('recording', lambda p: _ok([
            'synth', '--bag', str(p), '--cameras', '2', '--frames', '3', '--fps', '10']))

    def darknet_layout(self) -> Path:
        return self._cached('mine', lambda p: _ok(['dataset', 'convert', str(self.synth()),
                                                   '--to', 'darknet', '-o', str(p)]))

    def image(self, index: int = 0) -> Path:
        return sorted((self.synth() / 'train' / 'images').iterdir())[index]

    def video(self) -> Path:
        def make(path: Path) -> None:
            import cv2

            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (320, 256))
            for index in range(4):
                writer.write(cv2.imread(str(self.image(index))))
            writer.release()
        return self._cached('drive.mp4', make)


def _images(stand_ins: StandIns, count: int) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        folder.mkdir(parents=True)
        for index in range(count):
            shutil.copy(stand_ins.image(index), folder / f'{index:03d}.png')
    return make


def _copy(source: Callable[[], Path]) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source().is_dir() else shutil.copy)(source(), target)
    return make


def stand_ins_for(s: StandIns) -> dict[str, Callable[[Path], None]]:
    """Input path (as the pages name it) -> how to make its stand-in there."""
    return {
        'yolov3.cfg': _copy(lambda: MODELS / 'demo.cfg'),
        'yolov3.weights': _copy(lambda: MODELS / 'demo.weights'),
        'coco.names': _copy(lambda: MODELS / 'demo.names'),
        'yolov3.onnx': _copy(s.onnx),
        'yolov3_int8.onnx': _copy(s.int8),
        'dog.jpg': _copy(lambda: s.image(0)),
        'front.png': _copy(lambda: s.image(1)),
        'left.jpg': _copy(lambda: s.image(2)),
        'photos': _images(s, 3),
        'calib_images': _images(s, 6),
        'drive.mp4': _copy(s.video),
        'recording': _copy(s.bag),
        'data/mine': _copy(s.darknet_layout),
        'runs/mine.cfg': _copy(lambda: MODELS / 'demo.cfg'),
        'runs/mine.onnx': _copy(s.onnx),
        'my_robot.yaml': lambda p: p.write_text(
            '/**:\n  ros__parameters:\n    cameras: [front, left]\n'
            '    front: {topic: /front/image_raw}\n'
            '    left: {topic: /left/image_raw, transport: compressed}\n'
            '    conf_threshold: 0.3\n', encoding='utf-8'),
    }


#: What each page's run blocks read without making it first.
STAND_INS = {
    'README.md': [],
    'doc/models.md': ['yolov3.cfg', 'yolov3.weights', 'coco.names'],
    'doc/python_api.md': ['yolov3.onnx', 'dog.jpg', 'front.png', 'left.jpg'],
    'doc/offline_tools.md': ['yolov3.onnx', 'dog.jpg', 'photos', 'drive.mp4', 'recording',
                             'my_robot.yaml'],
    'doc/tensorrt.md': ['yolov3.cfg', 'yolov3.weights', 'coco.names', 'calib_images',
                        'recording'],
    'doc/benchmarks.md': ['yolov3.cfg', 'yolov3.weights', 'yolov3.onnx', 'yolov3_int8.onnx'],
    'doc/training.md': ['data/mine', 'runs/mine.cfg', 'runs/mine.onnx'],
}

#: Optional modules a page's run blocks need (they skip, with the reason, without them).
NEEDS = {
    'doc/offline_tools.md': ['rosbags'],
    'doc/tensorrt.md': ['rosbags'],
    'doc/training.md': ['torch', 'pycocotools', 'matplotlib', 'rosbags'],
    'doc/study.md': ['torch', 'pycocotools', 'matplotlib'],
    'doc/benchmarks.md': ['matplotlib'],
    'README.md': ['rosbags'],
}


# -- a small shell -----------------------------------------------------------------------------
def _ok(argv: list[str]) -> str:
    """Run ``darknet53 ARGV`` in this process; its standard output (exit code must be 0)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, f'darknet53 {shlex.join(argv)} exited {code}'
    return out.getvalue()


def _statements(text: str) -> Iterator[str]:
    """Shell statements of a block: continuations joined, comments dropped, ``&&`` split."""
    joined = re.sub(r'\\\n\s*', ' ', text)
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        line = shlex.join(words)
        yield from (part.strip() for part in line.split(" '&&' ") if part.strip())


def _expand(words: list[str], variables: dict[str, str]) -> list[str]:
    def one(word: str) -> str:
        return re.sub(r'\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?',
                      lambda m: variables.get(m[1], os.environ.get(m[1], '')), word)
    return [one(word) for word in words]


def run_shell_block(block: Block, variables: dict[str, str]) -> None:
    for statement in _statements(block.text):
        words = shlex.split(statement)
        target = None
        assign = re.match(r'^([A-Za-z_][A-Za-z0-9_]*)=(.*)$', words[0])
        if assign and len(words) == 1 and not assign[2].startswith('$('):
            variables[assign[1]] = _expand([assign[2]], variables)[0]
            continue
        if assign:  # NAME=$(darknet53 ...)
            assert assign[2].startswith('$(') and words[-1].endswith(')'), statement
            target = assign[1]
            words = [assign[2][2:], *words[1:-1], words[-1][:-1]]
        redirect = None
        if '>' in words:
            words, redirect = words[:words.index('>')], words[words.index('>') + 1]
        words = _expand(words, variables)
        assert words[0] == 'darknet53', f'{block}: only darknet53 commands run here: {statement}'
        argv = words[1:] + block.smaller.get(words[1], [])
        output = _ok(argv)
        if target:
            variables[target] = output.strip()
        if redirect:
            Path(redirect).write_text(output, encoding='utf-8')


def _skip_unless_installed(modules: list[str]) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f'{module} not installed (examples that need it)')


@pytest.fixture(scope='module')
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    return StandIns(tmp_path_factory.mktemp('stand_ins'))


def _run_pages() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages()
            if any(b.kind == 'run' for b in blocks(p))]


@pytest.mark.parametrize('page', _run_pages())
def test_run_examples(page: str, stand_ins: StandIns, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip('cv2', reason='OpenCV not installed')
    pytest.importorskip('onnxruntime', reason='ONNX Runtime not installed')
    _skip_unless_installed(NEEDS.get(page, []))
    work = tmp_path / 'work'
    (work / 'darknet53_ros').mkdir(parents=True)
    (work / 'darknet53_ros' / 'models').symlink_to(MODELS)
    (work / 'config').symlink_to(ROOT / 'config')
    makers = stand_ins_for(stand_ins)
    for name in STAND_INS.get(page, []):
        makers[name](work / name)
    monkeypatch.chdir(work)
    monkeypatch.setenv('HOME', str(work))
    logging.getLogger('darknet53_ros').setLevel(logging.WARNING)
    variables: dict[str, str] = {'PWD': str(work)}
    ran = 0
    for block in blocks(ROOT / page):
        if block.kind != 'run':
            continue
        if block.language in ('python', 'py'):
            exec(compile(block.text, str(block), 'exec'), {'__name__': '__example__'})
        else:
            run_shell_block(block, variables)
        ran += 1
    assert ran
