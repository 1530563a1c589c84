"""Atomic file writes: a failed or interrupted write never replaces a good file."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import functools
import hashlib
import os
from pathlib import Path
import shutil
import stat
import tempfile


@functools.lru_cache(maxsize=None)  # noqa: UP033 - functools.cache is Python 3.9+
def _default_file_mode() -> int:
    """Mode a plain ``open(path, 'w')`` would give a new file (0o666 less the umask).

    The umask can only be read by setting it; that happens once, on the first write.
    """
    current = os.umask(0o022)
    os.umask(current)
    return 0o666 & ~current


def _final_mode(path: Path) -> int:
    """Keep the mode of the file being replaced, else the umask default."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _default_file_mode()


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


@contextmanager
def atomic_path(path: str | Path, suffix: str = '.tmp') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``suffix`` ends the temporary name (writers that pick a format by extension need the
    real one). On an exception the temporary file (or folder) is removed and ``path`` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing what was there."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f'.{final.name}.old-{os.getpid()}')
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
