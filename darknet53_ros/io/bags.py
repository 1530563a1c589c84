"""rosbag2 reading and writing without ROS, with ``rosbags`` (MCAP and SQLite3).

- Reading (:class:`BagReader`): a rosbag2 directory (with ``metadata.yaml``), a directory
  holding only storage files (e.g. a recording that crashed before writing metadata), or a
  single ``.mcap`` / ``.db3`` file. The storage is detected by content (magic bytes), so a
  file with a missing or wrong suffix still opens. Messages that cannot be deserialised are
  counted per topic and skipped; a bag that cannot be opened, or whose storage breaks while
  reading (truncated, corrupt), raises :class:`~darknet53_ros.errors.SourceError` naming it.
- Writing (:class:`BagWriter`): a new rosbag2 directory, MCAP by default (``sqlite3``
  selectable), with full message definitions from the typestore (embedded as MCAP schemas
  and in the SQLite3 ``topics`` table), so ``ros2 bag`` and Foxglove can read it. The bag is
  written into a temporary directory next to the target and renamed into place on success,
  so a half-written output never replaces a good one.
"""
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

__all__ = [
    'COMPRESSED_IMAGE_TYPE',
    'DETECTIONS_TYPE',
    'IMAGE_TYPE',
    'IMAGE_TYPES',
    'STORAGES',
    'BagReader',
    'BagWriter',
    'SyntheticFrame',
    'TopicCounts',
    'TopicInfo',
    'annotated_topic',
    'base_image_topic',
    'detect_storage',
    'detections_topic',
    'list_image_topics',
    'write_synthetic_bag',
]

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
DETECTIONS_TYPE = 'vision_msgs/msg/Detection2DArray'
STORAGES = ('mcap', 'sqlite3')

_MAGIC = {b'\x89MCAP0\r\n': 'mcap', b'SQLite format 3\x00': 'sqlite3'}
_SUFFIX = {'mcap': '.mcap', 'sqlite3': '.db3'}
_STORAGE_ALIASES = {'mcap': 'mcap', 'sqlite3': 'sqlite3', 'sqlite': 'sqlite3', 'db3': 'sqlite3'}


# -- topic naming ------------------------------------------------------------------------------
def base_image_topic(image_topic: str) -> str:
    """The image topic without image_transport's ``/compressed`` suffix."""
    topic = image_topic.rstrip('/')
    return topic[:-len('/compressed')] if topic.endswith('/compressed') else topic


def detections_topic(image_topic: str) -> str:
    """``<image topic>/detections`` (``/compressed`` suffix removed first)."""
    return f'{base_image_topic(image_topic)}/detections'


def annotated_topic(image_topic: str) -> str:
    """``<image topic>/detections/image`` (``/compressed`` suffix removed first), like the
    node's ``<camera>/detections/image``."""
    return f'{base_image_topic(image_topic)}/detections/image'


# -- storage detection -------------------------------------------------------------------------
def _file_storage(path: Path) -> str | None:
    try:
        with path.open('rb') as stream:
            head = stream.read(16)
    except OSError:
        return None
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def detect_storage(path: str | os.PathLike) -> str:
    """``'mcap'`` or ``'sqlite3'``: the storage of a bag directory or file, by content.

    Raises:
        SourceError: the path does not exist or holds no recognisable rosbag2 storage.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f'rosbag2 {path}: does not exist')
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for candidate in files:
        if (storage := _file_storage(candidate)) is not None:
            return storage
    raise SourceError(f'rosbag2 {path}: no MCAP or SQLite3 storage file found')


# -- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag: name, message type and message count."""

    name: str
    msgtype: str
    count: int


@dataclass
class TopicCounts:
    """Per-topic read statistics of :meth:`BagReader.messages`."""

    read: int = 0
    undecodable: int = 0
    last_error: str = ''


@dataclass
class _Source:
    path: Path
    reader: Any = None


class BagReader:
    """Read a rosbag2 bag (directory or single MCAP/SQLite3 file); use as a context manager.

    Args:
        path: bag directory or storage file.
        types: :class:`~darknet53_ros.io.messages.MessageTypes` (rosbags flavour) used to
            deserialise; defaults to ``MessageTypes.from_rosbags('humble')``. Types the
            typestore lacks are registered from the bag's own message definitions.
    """

    def __init__(self, path: str | os.PathLike, types: Any = None) -> None:
        """Remember the bag; nothing is read before :meth:`open`."""
        self.path = Path(path)
        self._types = types
        self._sources: list[_Source] = []
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.storage: str = ''
        self.counts: dict[str, TopicCounts] = {}
        self.storage_error = ''
        self._connections: list[tuple[_Source, Any]] = []

    # lifecycle
    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def types(self) -> Any:
        """The :class:`~darknet53_ros.io.messages.MessageTypes` used for deserialising."""
        if self._types is None:
            from darknet53_ros.io.messages import MessageTypes

            self._types = MessageTypes.from_rosbags('humble')
        return self._types

    def _source_paths(self) -> list[Path]:
        path = self.path
        self.storage = detect_storage(path)
        if path.is_dir():
            if (path / 'metadata.yaml').exists():
                return [path]
            files = [p for p in sorted(path.iterdir()) if p.is_file() and _file_storage(p)]
        else:
            files = [path]
        out: list[Path] = []
        for file in files:
            storage = _file_storage(file)
            assert storage is not None
            if file.suffix != _SUFFIX[storage]:  # rosbags picks the storage by suffix
                if self._tmpdir is None:
                    self._tmpdir = tempfile.TemporaryDirectory(prefix='darknet53-bag-')
                alias = Path(self._tmpdir.name) / f'{len(out)}_{file.stem}{_SUFFIX[storage]}'
                alias.symlink_to(file.resolve())
                file = alias
            out.append(file)
        return out

    def open(self) -> None:
        """Open every storage of the bag.

        Raises:
            SourceError: missing, unreadable, truncated or corrupt bag (names the bag).
        """
        from rosbags.rosbag2 import Reader

        try:
            for source_path in self._source_paths():
                reader = Reader(source_path)
                reader.open()
                source = _Source(source_path, reader)
                self._sources.append(source)
                self._connections.extend((source, c) for c in reader.connections)
        except SourceError:
            self.close()
            raise
        except Exception as exc:  # ReaderError, OSError, sqlite3/struct errors ...
            self.close()
            raise SourceError(f'rosbag2 {self.path}: cannot open ({type(exc).__name__}: '
                              f'{exc})') from None
        self._register_bag_types()

    def close(self) -> None:
        """Close the storages (safe to call twice)."""
        for source in self._sources:
            try:
                source.reader.close()
            except Exception:
                pass
        self._sources.clear()
        self._connections.clear()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _register_bag_types(self) -> None:
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        store = self.types.typestore
        for _, conn in self._connections:
            if conn.msgtype in store.types or not conn.msgdef or not conn.msgdef.data:
                continue
            try:
                text = conn.msgdef.data
                if text.startswith('=' * 80 + '\nIDL: '):
                    typs = get_types_from_idl(text)
                else:
                    typs = get_types_from_msg(text, conn.msgtype)
                store.register(typs)
            except Exception:
                continue

    # queries
    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topics of the bag by name (message counts summed over storages)."""
        out: dict[str, TopicInfo] = {}
        for _, conn in self._connections:
            have = out.get(conn.topic)
            count = int(conn.msgcount or 0) + (have.count if have else 0)
            out[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count)
        return out

    def image_topics(self) -> list[TopicInfo]:
        """Topics of type ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``."""
        return sorted((t for t in self.topics.values() if t.msgtype in IMAGE_TYPES),
                      key=lambda t: t.name)

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None, strict: bool = True,
                 ) -> Iterator[tuple[str, int, Any]]:
        """Yield ``(topic, timestamp_ns, message)`` in time order per storage.

        Args:
            topics: topics to read (all when None).
            start_ns, stop_ns: bag receive-time window ``[start, stop)``.
            strict: when the storage breaks mid-way, raise SourceError (True) or end the
                iteration after the last good message (False; the error is kept in
                :attr:`storage_error`).

        Messages that fail to deserialise are counted in :attr:`counts` and skipped.

        Raises:
            SourceError: unknown topic, reader not open, or (strict) a broken storage.
        """
        if not self._sources:
            raise SourceError(f'rosbag2 {self.path}: reader is not open')
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            unknown = sorted(wanted - set(self.topics))
            if unknown:
                raise SourceError(f'rosbag2 {self.path}: no topic {", ".join(unknown)} '
                                  f'(have: {", ".join(sorted(self.topics))})')
        self.storage_error = ''
        types = self.types
        for source in self._sources:
            conns = [c for s, c in self._connections
                     if s is source and (wanted is None or c.topic in wanted)]
            if not conns:
                continue
            stream = source.reader.messages(conns, start=start_ns, stop=stop_ns)
            while True:
                try:
                    conn, timestamp, raw = next(stream)
                except StopIteration:
                    break
                except Exception as exc:
                    message = (f'rosbag2 {self.path}: storage {source.path.name} is truncated '
                               f'or corrupt ({type(exc).__name__}: {exc})')
                    if strict:
                        raise SourceError(message) from None
                    self.storage_error = message
                    return
                counts = self.counts.setdefault(conn.topic, TopicCounts())
                try:
                    msg = types.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    counts.undecodable += 1
                    counts.last_error = f'{type(exc).__name__}: {exc}'
                    continue
                counts.read += 1
                yield conn.topic, int(timestamp), msg


def list_image_topics(path: str | os.PathLike) -> list[TopicInfo]:
    """Image and CompressedImage topics of a bag.

    Raises:
        SourceError: the bag cannot be opened.
    """
    with BagReader(path) as reader:
        return reader.image_topics()


# -- writing -----------------------------------------------------------------------------------
def _storage_name(storage: str) -> str:
    name = _STORAGE_ALIASES.get(str(storage).lower())
    if name is None:
        raise ConfigError(f'bag storage: expected one of {", ".join(STORAGES)}, '
                          f'got {storage!r}')
    return name


def _default_qos() -> Any:
    """The QoS ``ros2 bag record`` stores for a default publisher (reliable, volatile, depth
    10, infinite durations), so players on any distro find a profile to offer."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    infinite = QosTime(9223372036, 854775807)
    return Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
               infinite, infinite, QosLiveliness.AUTOMATIC, infinite, False)


class BagWriter:
    """Write a new rosbag2 bag atomically (temporary directory renamed into place).

    Use as a context manager: on a clean exit the bag is finalised and moved to ``path``; on an
    exception it is discarded and ``path`` is left untouched.

    Args:
        path: the bag directory to create.
        storage: ``'mcap'`` (default) or ``'sqlite3'``.
        types: rosbags-flavour :class:`~darknet53_ros.io.messages.MessageTypes` (vision_msgs
            registered); defaults to ``MessageTypes.from_rosbags(distro)``.
        distro: typestore used when ``types`` is None (``'humble'``, ``'jazzy'`` ...).
        overwrite: replace an existing ``path`` (only after the new bag is complete).
        version: rosbag2 metadata version (8 is read by Humble and newer).
    """

    def __init__(self, path: str | os.PathLike, storage: str = 'mcap', types: Any = None,
                 distro: str = 'humble', overwrite: bool = False, version: int = 8) -> None:
        """Check the target; nothing is created before :meth:`open`."""
        self.path = Path(path)
        self.storage = _storage_name(storage)
        if types is None:
            from darknet53_ros.io.messages import MessageTypes

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
            raise SourceError(f'rosbag2 {self.path}: exists already (overwrite=False)')
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
        from rosbags.rosbag2 import StoragePlugin, Writer

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp_root = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.',
                                                   suffix='.partial', dir=self.path.parent))
            plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
            self._writer = Writer(self._tmp_root / self.path.name,
                                  version=8 if self.version == 8 else 9,
                                  storage_plugin=plugin)
            self._writer.open()
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
        conn = self._writer.add_connection(topic, msgtype, typestore=self.types.typestore,
                                           offered_qos_profiles=[_default_qos()])
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
            if self.path.exists():
                if not self.overwrite:
                    raise SourceError(f'rosbag2 {self.path}: appeared while writing; '
                                      'not replaced')
                old = self._tmp_root / f'{self.path.name}.old'
                os.replace(self.path, old)
                try:
                    os.replace(built, self.path)
                except OSError:
                    os.replace(old, self.path)  # put the good bag back
                    raise
            else:
                os.replace(built, self.path)
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


def write_synthetic_bag(path: str | os.PathLike,
                        frames: Iterable[SyntheticFrame | Sequence[Any]],
                        storage: str = 'mcap', distro: str = 'humble',
                        overwrite: bool = False) -> Path:
    """Write images into a new bag (receive time = header stamp); returns the bag path.

    ``frames`` holds :class:`SyntheticFrame` objects or tuples
    ``(topic, frame_id, stamp_ns, bgr[, encoding])``.
    """
    from darknet53_ros.io.messages import compressed_image_msg, header_msg, image_msg

    with BagWriter(path, storage=storage, distro=distro, overwrite=overwrite) as writer:
        types = writer.types
        for item in frames:
            frame = item if isinstance(item, SyntheticFrame) else SyntheticFrame(*item)
            header = header_msg(types, frame.stamp_ns, frame.frame_id)
            if frame.encoding.lower() in ('jpeg', 'jpg', 'png'):
                msg = compressed_image_msg(types, header, frame.image, frame.encoding)
            else:
                msg = image_msg(types, header, frame.image, frame.encoding)
            writer.write(frame.topic, frame.stamp_ns, msg)
    return Path(path)
