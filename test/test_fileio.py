"""Atomic writes: the good file survives a failed write; new files get normal permissions."""
import os
import stat

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
    fileio._default_file_mode.cache_clear()
    try:
        target = tmp_path / 'new.txt'
        atomic_write_text(target, 'x')
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)
        fileio._default_file_mode.cache_clear()


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / 'script.sh'
    target.write_text('old')
    os.chmod(target, 0o755)
    atomic_write_text(target, 'new')
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
