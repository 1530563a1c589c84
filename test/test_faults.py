"""Fault injection (issue 13): read-only and full filesystems, a process killed mid-write,
and a time-budgeted byte-mutation fuzz of the parsers. Each failure must be one
``ERROR darknet53: ...`` line with exit 2, and leave no partial or temporary file behind."""
from __future__ import annotations

import errno
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.errors import Darknet53Error
from darknet53_ros.fileio import remove_stale_partials
from darknet53_ros.model.cfg import parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.weights import parse_weights, random_weights, serialize_weights

from .conftest import requires

ROOT = Path(__file__).resolve().parents[1]
SMALL = yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125)
FUZZ_SECONDS = 2.0  # fixed time budget per parser
FUZZ_MIN_RUNS = 50  # a loaded CI machine still mutates this many inputs


def _env() -> dict[str, str]:
    """The environment with the source tree first on PYTHONPATH (keeping what is there: a
    sourced ROS 2 puts its packages on it)."""
    paths = [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _cli(args: list[str], cwd: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run ``darknet53`` in a subprocess; ``fsize``: RLIMIT_FSIZE in bytes (a full disk: writes
    beyond it fail with EFBIG instead of killing the process)."""
    def limit() -> None:
        if fsize is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = _env()
    return subprocess.run([sys.executable, '-m', 'darknet53_ros.cli.main', *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('ERROR darknet53: '), result.stderr
    assert 'Traceback' not in result.stderr
    return lines[0]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob('.*'))


@requires('onnx')
def test_full_disk_export_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / 'small.cfg').write_text(SMALL)
    result = _cli(['export', '--cfg', 'small.cfg', '--random-weights', '0', '-o', 'out.onnx'],
                  tmp_path, fsize=64 * 1024)
    assert 'File too large' in _one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['small.cfg']


def test_full_disk_detect_keeps_no_partial_output(tmp_path, planted_model):
    cv2 = pytest.importorskip('cv2')
    from .planted import quadrant_image

    (tmp_path / 'imgs').mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / 'imgs' / f'{i}.png'), quadrant_image(i % 2, 1))
    result = _cli(['detect', '--model', str(planted_model), '--source', 'imgs', '--output',
                   'out', '--no-progress'], tmp_path, fsize=1024)
    assert 'File too large' in _one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['imgs']


@requires('onnx')
def test_read_only_filesystem_is_one_line(tmp_path, monkeypatch, caplog):
    """A fake read-only filesystem (root ignores chmod): every create fails with EROFS."""
    (tmp_path / 'small.cfg').write_text(SMALL)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, 'open', read_only)
    assert main(['export', '--cfg', str(tmp_path / 'small.cfg'), '--random-weights', '0',
                 '-o', str(tmp_path / 'x.onnx')]) == 2
    message = caplog.records[-1].getMessage()
    assert 'Read-only file system' in message and str(tmp_path) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ['small.cfg']


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_folder_is_one_line(tmp_path):
    (tmp_path / 'small.cfg').write_text(SMALL)
    (tmp_path / 'ro').mkdir(mode=0o555)
    result = _cli(['export', '--cfg', 'small.cfg', '--random-weights', '0', '-o',
                   'ro/x.onnx'], tmp_path)
    assert 'Permission denied' in _one_error_line(result)


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from darknet53_ros.fileio import atomic_path, staged_folder
target = Path(sys.argv[1])
with staged_folder(target / 'out') as out:
    (out / 'summary.json').write_text('{}')
    with atomic_path(target / 'model.onnx') as tmp:
        tmp.write_bytes(b'x' * 1000)
        print('writing', flush=True)
        time.sleep(60)
"""


def test_killed_mid_write_leaves_old_files_and_leftovers_are_cleaned(tmp_path):
    (tmp_path / 'model.onnx').write_bytes(b'good')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'summary.json').write_text('"earlier"')
    proc = subprocess.Popen([sys.executable, '-c', _KILLED_WRITER, str(tmp_path)],
                            env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == 'writing'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert (tmp_path / 'model.onnx').read_bytes() == b'good'
    assert (tmp_path / 'out' / 'summary.json').read_text() == '"earlier"'
    left = _hidden(tmp_path)  # the staged output folder and the temporary model file
    assert len(left) == 2 and left[0].startswith('.model.onnx.') and left[1].startswith('.out.')
    assert remove_stale_partials(tmp_path / 'out') == [tmp_path / left[1]]
    assert remove_stale_partials(tmp_path / 'model.onnx') == []  # only .partial beside
    assert _hidden(tmp_path) == left[:1]


def _fuzz(parse, seed_text: bytes) -> int:
    """Random byte mutations of ``seed_text`` for FUZZ_SECONDS, and at least FUZZ_MIN_RUNS of
    them however slow the machine is; only Darknet53Error allowed."""
    rng = random.Random(13)
    deadline = time.monotonic() + FUZZ_SECONDS
    runs = 0
    while runs < FUZZ_MIN_RUNS or time.monotonic() < deadline:
        data = bytearray(seed_text)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[pos] = rng.randrange(256)
            elif choice < 0.7:
                del data[pos:pos + rng.randint(1, 16)]
            else:
                data[pos:pos] = data[rng.randrange(len(data)):][:rng.randint(1, 32)]
        try:
            parse(bytes(data))
        except Darknet53Error:
            pass
        runs += 1
    return runs


def test_fuzz_cfg_parser_within_time_budget():
    assert _fuzz(lambda b: parse_cfg(b.decode('utf-8', 'replace'), 'fuzz.cfg'),
                 SMALL.encode()) > 10


def test_fuzz_weights_parser_within_time_budget():
    net = parse_cfg(SMALL)
    data = serialize_weights(net, random_weights(net))
    assert _fuzz(lambda b: parse_weights(b, net, 'fuzz.weights'), data[:4096]) > 10


def test_fuzz_image_decoder_within_time_budget():
    cv2 = pytest.importorskip('cv2')
    from darknet53_ros.io.encodings import compressed_to_bgr

    png = cv2.imencode('.png', np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    assert _fuzz(lambda b: compressed_to_bgr('png', b, max_pixels=1 << 16), png) > 10
