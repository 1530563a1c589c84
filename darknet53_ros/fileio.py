"""Atomic file writes: a failed or interrupted write never replaces a good file."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import errno
import functools
import hashlib
import json
import os
from pathlib import Path
import shutil
import stat
import tempfile
from typing import Any


@functools.lru_cache(maxsize=None)
def _umask() -> int:
    """The process umask. It can only be read by setting it; that happens once."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def _default_file_mode() -> int:
    """Mode a plain ``open(path, 'w')`` would give a new file (0o666 less the umask)."""
    return 0o666 & ~_umask()


def _final_mode(path: Path) -> int:
    """Keep the mode of the file being replaced, else the umask default."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _default_file_mode()


def os_error_text(exc: OSError) -> str:
    """One line naming the path(s) and the cause of an OSError (``out/x.onnx: Read-only
    file system``)."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return cause
    if exc.filename2 is not None:
        return f'{exc.filename} -> {exc.filename2}: {cause}'
    return f'{exc.filename}: {cause}'


def read_json_object(path: str | Path, error: type[Exception], what: str) -> dict[str, Any]:
    """Read a JSON file that must hold an object; ``error(message)`` naming ``path`` and
    ``what`` it is otherwise (unreadable, not JSON, not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f'{path}: cannot read {what}: {exc}') from None
    if not isinstance(data, dict):
        raise error(f'{path}: {what} is not a JSON object')
    return data


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    ``data`` may be any buffer (a ``memoryview`` of TensorRT's ``IHostMemory`` is written
    without a copy). The file is fsynced before the rename and the folder after it, so the
    new file survives a power cut once this returns.
    """
    view = memoryview(data).cast('B')
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as handle:
            written = 0
            while written < len(view):  # large buffers: write() may be partial
                written += handle.write(view[written:])
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so a rename inside it is durable (no-op where folders cannot be opened,
    e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = '.tmp') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``suffix`` ends the temporary name (writers that pick a format by extension need the
    real one). On an exception the temporary file (or folder) is removed and ``path`` is
    untouched. A ``path`` that is a folder raises IsADirectoryError before anything is
    written; a failed rename raises the OSError naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, 'is a folder, expected a file path', str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, _final_mode(path))
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        fsync_dir(path.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_path(built: Path, path: Path) -> None:
    """Move ``built`` (file or folder) onto ``path``, replacing what is there; if the final
    rename fails the previous ``path`` is put back. A folder gets the umask's default mode
    (``tempfile.mkdtemp`` makes it private)."""
    if built.is_dir():
        os.chmod(built, 0o777 & ~_umask())
    if not os.path.lexists(path):
        os.replace(built, path)
        return
    old = built.with_name(built.name + '.old')
    os.replace(path, old)
    try:
        os.replace(built, path)
    except OSError:
        os.replace(old, path)  # put the good one back
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove what killed runs left beside ``path`` (``.NAME.PID.*.partial`` folders of
    :func:`staged_folder` whose process is gone) and inside it (hidden ``.*.tmp*`` files and
    ``.*.partial`` folders of :func:`atomic_path` and the bag writer). Returns what was
    removed."""
    removed = []
    prefix = f'.{path.name}.'
    candidates = [p for p in path.parent.glob(f'{prefix}*.partial')]
    if path.is_dir():
        candidates += [p for p in path.iterdir() if p.name.startswith('.')
                       and (p.name.endswith('.partial') or '.tmp' in p.name)]
    for item in candidates:
        pid = item.name[len(prefix):].split('.')[0] if item.parent == path.parent else ''
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # a run in progress
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink()
        removed.append(item)
    return removed


@contextmanager
def staged_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path`` (``.NAME.PID.XXXX.partial``); on success it
    replaces ``path`` whole (see :func:`replace_path`), on an exception it is removed, so a
    failed or killed run never leaves a partial ``path``. Leftovers of killed runs are
    removed first (:func:`remove_stale_partials`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, 'is a file, expected a folder', str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.{os.getpid()}.', suffix='.partial',
                                dir=path.parent))
    try:
        yield tmp
        replace_path(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

