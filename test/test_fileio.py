"""Atomic writes: the good file survives a failed write; new files get normal permissions."""
import os
from pathlib import Path
import stat
import tempfile

import pytest

from darknet53_ros import fileio
from darknet53_ros.fileio import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_atomically(tmp_path):
    target = tmp_path / 'sub' / 'out.bin'
    atomic_write_bytes(target, b'one')
    atomic_write_text(target, 'two')
    assert target.read_text() == 'two'
    assert [p.name for p in target.parent.iterdir()] == ['out.bin']


def test_failed_write_keeps_the_good_file(tmp_path):
    target = tmp_path / 'model.engine'
    target.write_bytes(b'good')
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'half')
            raise RuntimeError('interrupted')
    assert target.read_bytes() == b'good'
    assert [p.name for p in tmp_path.iterdir()] == ['model.engine']


def test_new_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    fileio._umask.cache_clear()
    try:
        target = tmp_path / 'new.txt'
        atomic_write_text(target, 'x')
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)
        fileio._umask.cache_clear()


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / 'script.sh'
    target.write_text('old')
    os.chmod(target, 0o755)
    atomic_write_text(target, 'new')
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_replace_path_gives_a_built_folder_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    fileio._umask.cache_clear()
    try:
        built = Path(tempfile.mkdtemp(dir=tmp_path))  # private (0o700)
        (tmp_path / 'out').mkdir()
        fileio.replace_path(built, tmp_path / 'out')
        assert stat.S_IMODE((tmp_path / 'out').stat().st_mode) == 0o755
        assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
    finally:
        os.umask(old)
        fileio._umask.cache_clear()
