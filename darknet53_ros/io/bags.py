"""rosbag2 reading without ROS, with ``rosbags`` (MCAP and SQLite3); topic naming helpers.

- Reading (:class:`BagReader`): a rosbag2 directory (with ``metadata.yaml``), a directory
  holding only storage files (e.g. a recording that crashed before writing metadata), or a
  single ``.mcap`` / ``.db3`` file. The storage is detected by content (magic bytes), so a
  file with a missing or wrong suffix still opens. Messages that cannot be deserialised are
  counted per topic and skipped; a bag that cannot be opened, or whose storage breaks while
  reading (truncated, corrupt), raises :class:`~darknet53_ros.errors.SourceError` naming it.
- Writing (:class:`~darknet53_ros.io.bag_writer.BagWriter`): a new rosbag2 directory, MCAP
  by default (``sqlite3`` selectable), with full message definitions from the typestore
  (embedded as MCAP schemas and in the SQLite3 ``topics`` table), so ``ros2 bag`` and Foxglove
  can read it. The bag is written into a temporary directory next to the target and renamed
  into place on success, so a half-written output never replaces a good one.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import functools
import os
from pathlib import Path
import tempfile
from typing import Any

from darknet53_ros.errors import SourceError
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.io.rosbags_compat import metadata_readable, msgdef_text, open_reader

__all__ = [
    'COMPRESSED_IMAGE_TYPE',
    'DETECTIONS_TYPE',
    'IMAGE_TYPE',
    'IMAGE_TYPES',
    'STORAGES',
    'BagReader',
    'TopicCounts',
    'TopicInfo',
    'annotated_topic',
    'base_image_topic',
    'detect_storage',
    'detections_topic',
    'list_image_topics',
]

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
DETECTIONS_TYPE = 'vision_msgs/msg/Detection2DArray'
STORAGES = ('mcap', 'sqlite3')

_MAGIC = {b'\x89MCAP0\r\n': 'mcap', b'SQLite format 3\x00': 'sqlite3'}
_SUFFIX = {'mcap': '.mcap', 'sqlite3': '.db3'}


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
            self._types = MessageTypes.from_rosbags('humble')
        return self._types

    def _source_paths(self) -> list[Path]:
        path = self.path
        self.storage = detect_storage(path)
        if path.is_dir():
            if metadata_readable(path):
                return [path]
            files = [p for p in sorted(path.iterdir()) if p.is_file() and _file_storage(p)]
        else:
            files = [path]
        out: list[Path] = []
        for file in files:
            storage = _file_storage(file)
            assert storage is not None
            if file.suffix != _SUFFIX[storage]:  # rosbags picks the storage by suffix
                alias = self._scratch() / f'{len(out)}_{file.stem}{_SUFFIX[storage]}'
                alias.symlink_to(file.resolve())
                file = alias
            out.append(file)
        return out

    def _scratch(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix='darknet53-bag-')
        return Path(self._tmpdir.name)

    def _scratch_folder(self, name: str) -> Path:
        return self._scratch() / name

    def open(self) -> None:
        """Open every storage of the bag.

        Raises:
            SourceError: missing, unreadable, truncated or corrupt bag (names the bag).
        """
        try:
            for index, source_path in enumerate(self._source_paths()):
                storage = _file_storage(source_path) or self.storage
                reader = open_reader(source_path, storage, functools.partial(
                    self._scratch_folder, f'meta{index}'))
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
            text = msgdef_text(conn)
            if conn.msgtype in store.types or not text:
                continue
            try:
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
