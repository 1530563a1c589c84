"""Writing rosbag2 recordings (MCAP or SQLite3) atomically, and synthetic image bags."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.fileio import replace_path
from darknet53_ros.io.bags import STORAGES
from darknet53_ros.io.messages import (
    MessageTypes,
    compressed_image_msg,
    header_msg,
    image_msg,
)
from darknet53_ros.io.rosbags_compat import add_connection, open_writer, resolve_storage

__all__ = ['BagWriter', 'SyntheticFrame', 'bag_storage', 'synthetic_messages',
           'write_synthetic_bag']

_STORAGE_ALIASES = {'mcap': 'mcap', 'sqlite3': 'sqlite3', 'sqlite': 'sqlite3', 'db3': 'sqlite3'}


# -- writing -----------------------------------------------------------------------------------
def bag_storage(storage: str | None, path: str | os.PathLike) -> str:
    """The storage a new bag at ``path`` is written in (see :class:`BagWriter`).

    Raises:
        ConfigError: unknown storage, or MCAP asked for where rosbags cannot write it.
    """
    name = None if storage is None else _STORAGE_ALIASES.get(str(storage).lower())
    if storage is not None and name is None:
        raise ConfigError(f'bag storage: expected one of {", ".join(STORAGES)}, '
                          f'got {storage!r}')
    return resolve_storage(name, f'rosbag2 {path}')


class BagWriter:
    """Write a new rosbag2 bag atomically (temporary directory renamed into place).

    Use as a context manager: on a clean exit the bag is finalised and moved to ``path``; on an
    exception it is discarded and ``path`` is left untouched.

    Args:
        path: the bag directory to create.
        storage: ``'mcap'`` or ``'sqlite3'``; None (default): MCAP, or SQLite3 with one log
            line where rosbags cannot write MCAP (rosbags 0.9, Python 3.8), where an explicit
            ``'mcap'`` is a :class:`ConfigError`.
        types: rosbags-flavour :class:`~darknet53_ros.io.messages.MessageTypes` (vision_msgs
            registered); defaults to ``MessageTypes.from_rosbags(distro)``.
        distro: typestore used when ``types`` is None (``'humble'``, ``'jazzy'`` ...).
        overwrite: replace an existing ``path`` (only after the new bag is complete).
        version: rosbag2 metadata version (8 is read by Humble and newer).
    """

    def __init__(self, path: str | os.PathLike, storage: str | None = None, types: Any = None,
                 distro: str = 'humble', overwrite: bool = False, version: int = 8) -> None:
        """Check the target; nothing is created before :meth:`open`."""
        self.path = Path(path)
        self.storage = bag_storage(storage, self.path)
        if types is None:
            types = MessageTypes.from_rosbags(distro)
        if types.typestore is None:
            raise ConfigError('BagWriter types: a rosbags typestore is required '
                              '(MessageTypes.from_rosbags)')
        self.types = types
        self.overwrite = overwrite
        if int(version) not in (8, 9):
            raise ConfigError(f'bag version: rosbag2 metadata version 8 or 9, got {version}')
        self.version = int(version)
        if self.path.exists() and not overwrite:
            raise SourceError(f'rosbag2 {self.path}: exists already (pass --overwrite to '
                              'replace it)')
        self._writer: Any = None
        self._tmp_root: Path | None = None
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the temporary bag next to ``path``.

        Raises:
            SourceError: the parent directory cannot be written.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp_root = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.',
                                                   suffix='.partial', dir=self.path.parent))
            self._writer = open_writer(self._tmp_root / self.path.name, self.storage,
                                       self.version)
        except ConfigError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise SourceError(f'rosbag2 {self.path}: cannot create ({exc})') from None

    def add_topic(self, topic: str, msgtype: str) -> Any:
        """Register ``topic`` with ``msgtype`` (idempotent); returns the rosbags connection.

        Raises:
            ConfigError: the topic was registered with another type, or the type is unknown.
        """
        if self._writer is None:
            raise SourceError(f'rosbag2 {self.path}: writer is not open')
        conn = self._connections.get(topic)
        if conn is not None:
            if conn.msgtype != msgtype:
                raise ConfigError(f'bag topic {topic}: already has type {conn.msgtype}, '
                                  f'cannot also write {msgtype}')
            return conn
        if msgtype not in self.types.typestore.types:
            raise ConfigError(f'bag topic {topic}: message type {msgtype} is not in the '
                              'typestore')
        conn = add_connection(self._writer, topic, msgtype, self.types.typestore)
        self._connections[topic] = conn
        self.counts[topic] = 0
        return conn

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise and write a rosbags message (its type comes from ``__msgtype__``)."""
        msgtype = msg.__msgtype__
        conn = self.add_topic(topic, msgtype)
        self._writer.write(conn, int(timestamp_ns), self.types.serialize(msg))
        self.counts[topic] += 1

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes, msgtype: str) -> None:
        """Write already CDR-serialised bytes."""
        conn = self.add_topic(topic, msgtype)
        self._writer.write(conn, int(timestamp_ns), data)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finalise the bag and move it to ``path``; returns ``path``.

        Raises:
            SourceError: finalising or renaming failed (the partial bag is removed).
        """
        if self._writer is None or self._tmp_root is None:
            raise SourceError(f'rosbag2 {self.path}: writer is not open')
        try:
            self._writer.close()
            self._writer = None
            built = self._tmp_root / self.path.name
            if self.path.exists() and not self.overwrite:
                raise SourceError(f'rosbag2 {self.path}: appeared while writing; '
                                  'not replaced')
            replace_path(built, self.path)
        except SourceError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise SourceError(f'rosbag2 {self.path}: cannot finalise ({exc})') from None
        shutil.rmtree(self._tmp_root, ignore_errors=True)
        self._tmp_root = None
        return self.path

    def abort(self) -> None:
        """Discard the partial bag (``path`` is left as it was)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:
                pass
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None


# -- synthetic bags for tests and demos --------------------------------------------------------
@dataclass(frozen=True)
class SyntheticFrame:
    """One image to write: ``encoding`` is an Image encoding (bgr8, rgb8, mono8 ...) or
    ``'jpeg'`` / ``'png'`` for a CompressedImage."""

    topic: str
    frame_id: str
    stamp_ns: int
    image: np.ndarray = field(repr=False)
    encoding: str = 'bgr8'


def synthetic_messages(types: MessageTypes, frames: Iterable[SyntheticFrame | Sequence[Any]],
                       ) -> Iterator[tuple[str, int, Any]]:
    """``(topic, stamp_ns, message)`` for each frame (see :func:`write_synthetic_bag`)."""
    for item in frames:
        frame = item if isinstance(item, SyntheticFrame) else SyntheticFrame(*item)
        header = header_msg(types, frame.stamp_ns, frame.frame_id)
        if frame.encoding.lower() in ('jpeg', 'jpg', 'png'):
            msg = compressed_image_msg(types, header, frame.image, frame.encoding)
        else:
            msg = image_msg(types, header, frame.image, frame.encoding)
        yield frame.topic, frame.stamp_ns, msg


def write_synthetic_bag(path: str | os.PathLike,
                        frames: Iterable[SyntheticFrame | Sequence[Any]],
                        storage: str | None = None, distro: str = 'humble',
                        overwrite: bool = False) -> Path:
    """Write images into a new bag (receive time = header stamp); returns the bag path.

    ``frames`` holds :class:`SyntheticFrame` objects or tuples
    ``(topic, frame_id, stamp_ns, bgr[, encoding])``; ``storage`` as for :class:`BagWriter`.
    """
    with BagWriter(path, storage=storage, distro=distro, overwrite=overwrite) as writer:
        for topic, stamp_ns, msg in synthetic_messages(writer.types, frames):
            writer.write(topic, stamp_ns, msg)
    return Path(path)
