"""The few places where rosbags 0.9 (the last release for Python 3.8) and rosbags >= 0.10 differ.

Everything else in :mod:`darknet53_ros.io` is written against the common API (``Typestore``
with ``types``, ``register``, ``serialize_cdr``, ``deserialize_cdr``; ``Reader``; ``Writer``).
What differs, and what this module does about it:

- **Writing**: rosbags 0.9 writes SQLite3 rosbag2 (metadata version 8) only; 0.10 added MCAP,
  ``version`` and ``storage_plugin``. :func:`resolve_storage` turns the *default* storage into
  SQLite3 there (one log line); an explicit ``mcap`` is refused with a :class:`ConfigError`.
- **QoS**: 0.10 takes ``Qos`` objects, 0.9 the YAML text rosbag2 stores (:func:`add_connection`).
- **Typestores**: 0.9 has no ``jazzy`` store; Iron's is used (the same definitions for images,
  headers, diagnostics and geometry messages), with one log line (:func:`get_store`).
- **Reading**: 0.9 needs a ``metadata.yaml`` of version <= 8; for a single storage file, a
  folder without metadata or newer metadata, :func:`open_reader` writes one into a scratch
  folder from the storage's own topic table (SQLite3) or channels (MCAP).
- **Connections**: ``msgdef`` is a ``MessageDefinition`` (0.10) or the text itself (0.9)
  (:func:`msgdef_text`).
"""
from __future__ import annotations

from collections.abc import Callable
import logging
from pathlib import Path
import sqlite3
from typing import Any

import yaml

from darknet53_ros.errors import ConfigError

__all__ = [
    'DEFAULT_QOS_YAML',
    'add_connection',
    'get_store',
    'metadata_readable',
    'msgdef_text',
    'open_reader',
    'open_writer',
    'resolve_storage',
    'store_names',
    'writes_mcap',
]

_LOG = logging.getLogger(__name__)

DEFAULT_QOS_YAML = (
    '- avoid_ros_namespace_conventions: false\n'
    '  deadline: {nsec: 854775807, sec: 9223372036}\n  depth: 10\n  durability: 2\n'
    '  history: 1\n  lifespan: {nsec: 854775807, sec: 9223372036}\n  liveliness: 1\n'
    '  liveliness_lease_duration: {nsec: 854775807, sec: 9223372036}\n  reliability: 1')
"""The QoS ``ros2 bag record`` stores for a default publisher (reliable, volatile, depth 10,
infinite durations), as rosbag2 metadata version 8 text; rosbags >= 0.10 writes the same text
from ``Qos`` objects."""

_STORE_FALLBACK = {'ros2_jazzy': 'ros2_iron'}
_LEGACY_HINT = 'rosbags 0.9 (the last release for Python 3.8)'


def writes_mcap() -> bool:
    """True when the installed rosbags writes MCAP (rosbags >= 0.10)."""
    import rosbags.rosbag2

    return hasattr(rosbags.rosbag2, 'StoragePlugin')


def resolve_storage(storage: str | None, what: str = 'bag') -> str:
    """The storage to write: ``None`` means the default (MCAP, or SQLite3 on rosbags 0.9).

    Raises:
        ConfigError: ``'mcap'`` asked for explicitly where rosbags cannot write it.
    """
    if writes_mcap():
        return storage or 'mcap'
    if storage == 'mcap':
        raise ConfigError(f'{what}: storage mcap cannot be written with {_LEGACY_HINT}; '
                          'use sqlite3 (or Python >= 3.10 with rosbags >= 0.10)')
    if storage is None:
        _LOG.warning('%s: writing SQLite3 (.db3): %s cannot write MCAP', what, _LEGACY_HINT)
    return storage or 'sqlite3'


# -- typestores --------------------------------------------------------------------------------
def store_names() -> list[str]:
    """Names of the typestores the installed rosbags provides (``ros2_humble`` ...)."""
    from rosbags.typesys import Stores

    return [s.value for s in Stores]


def get_store(name: str) -> Any:
    """A fresh rosbags ``Typestore`` by ``Stores`` value (``'ros2_humble'`` ...).

    Raises:
        ValueError: unknown store name.
    """
    from rosbags.typesys import Stores, get_typestore

    known = store_names()
    if name not in known and _STORE_FALLBACK.get(name) in known:
        _LOG.warning('rosbags typestore %s: not in %s; using %s (same definitions for the '
                     'image, header, diagnostic and geometry messages)', name, _LEGACY_HINT,
                     _STORE_FALLBACK[name])
        name = _STORE_FALLBACK[name]
    return get_typestore(Stores(name))


def msgdef_text(conn: Any) -> str:
    """The message definition text of a rosbags connection (empty when unknown)."""
    msgdef = conn.msgdef
    return str(getattr(msgdef, 'data', msgdef) or '')


# -- writing -----------------------------------------------------------------------------------
def open_writer(path: Path, storage: str, version: int) -> Any:
    """An opened rosbags ``Writer`` for a new bag at ``path``.

    Raises:
        ConfigError: MCAP or metadata version 9 with rosbags 0.9.
    """
    from rosbags import rosbag2

    writer_class: Any = rosbag2.Writer  # typed against rosbags >= 0.10
    if writes_mcap():
        plugin = rosbag2.StoragePlugin.MCAP if storage == 'mcap' \
            else rosbag2.StoragePlugin.SQLITE3
        writer = writer_class(path, version=version, storage_plugin=plugin)
    else:
        if storage != 'sqlite3' or version != 8:
            raise ConfigError(f'rosbag2 {path}: {_LEGACY_HINT} writes SQLite3 with metadata '
                              f'version 8 only, not {storage} version {version}')
        writer = writer_class(path)
    writer.open()
    return writer


def add_connection(writer: Any, topic: str, msgtype: str, typestore: Any) -> Any:
    """Add a topic with the default QoS profile and the typestore's definition."""
    if writes_mcap():
        from rosbags.rosbag2.metadata import parse_qos

        return writer.add_connection(topic, msgtype, typestore=typestore,
                                     offered_qos_profiles=parse_qos(DEFAULT_QOS_YAML))
    return writer.add_connection(topic, msgtype, typestore=typestore,
                                 offered_qos_profiles=DEFAULT_QOS_YAML)


# -- reading -----------------------------------------------------------------------------------
def metadata_readable(folder: Path) -> bool:
    """True when rosbags can open ``folder`` by its ``metadata.yaml`` (present; version <= 8
    with rosbags 0.9)."""
    meta = folder / 'metadata.yaml'
    if not meta.is_file():
        return False
    if writes_mcap():
        return True
    try:
        info = yaml.safe_load(meta.read_text(encoding='utf-8'))['rosbag2_bagfile_information']
        return int(info['version']) <= 8
    except Exception:
        return True  # let rosbags report what is wrong with it


def open_reader(path: Path, storage: str, scratch: Callable[[], Path]) -> Any:
    """An opened rosbags ``Reader`` for a bag folder with metadata or one storage file.

    With rosbags 0.9 a storage file gets a new folder (``scratch()``: a path that does not
    exist yet) holding a link to it and a ``metadata.yaml`` written from its contents.
    """
    from rosbags.rosbag2 import Reader

    if path.is_file() and not writes_mcap():
        folder = scratch()
        folder.mkdir(parents=True)
        (folder / path.name).symlink_to(path.resolve())
        topics = _mcap_topics(path) if storage == 'mcap' else _sqlite_topics(path)
        _write_metadata(folder, path.name, storage, topics)
        path = folder
    reader = Reader(path)
    reader.open()
    return reader


def _write_metadata(folder: Path, name: str, storage: str,
                    topics: list[tuple[dict[str, str], int]]) -> None:
    info = {
        'version': 8, 'storage_identifier': storage, 'relative_file_paths': [name],
        'duration': {'nanoseconds': 0}, 'starting_time': {'nanoseconds_since_epoch': 0},
        'message_count': sum(n for _, n in topics), 'compression_format': '',
        'compression_mode': '', 'files': [], 'custom_data': {}, 'ros_distro': '',
        'topics_with_message_count': [{'topic_metadata': meta, 'message_count': count}
                                      for meta, count in topics],
    }
    (folder / 'metadata.yaml').write_text(
        yaml.safe_dump({'rosbag2_bagfile_information': info}), encoding='utf-8')


def _sqlite_topics(path: Path) -> list[tuple[dict[str, str], int]]:
    with sqlite3.connect(f'file:{path}?mode=ro', uri=True) as conn:
        counts = dict(conn.execute('SELECT topic_id, count(*) FROM messages GROUP BY topic_id'))
        rows = conn.execute('SELECT id, name, type, serialization_format, '
                            'offered_qos_profiles FROM topics ORDER BY id').fetchall()
    return [({'name': name, 'type': typ, 'serialization_format': fmt,
              'offered_qos_profiles': qos or ''}, int(counts.get(tid, 0)))
            for tid, name, typ, fmt, qos in rows]


def _mcap_topics(path: Path) -> list[tuple[dict[str, str], int]]:
    """Channels of an MCAP file: from its summary, or by scanning (a recording that stopped
    early has none; the scan ends at the first broken record)."""
    from mcap.reader import make_reader
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    try:
        with path.open('rb') as stream:
            summary = make_reader(stream).get_summary()
    except Exception:  # no footer: a recording that stopped early
        summary = None
    if summary is not None and summary.statistics is not None:
        schemas, channels = summary.schemas, summary.channels
        counts = dict(summary.statistics.channel_message_counts)
    else:
        schemas, channels, counts = {}, {}, {}
        with path.open('rb') as stream:
            try:
                for record in StreamReader(stream).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message):
                        counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
            except Exception:
                pass
    return [({'name': c.topic, 'type': schemas[c.schema_id].name,
              'serialization_format': c.message_encoding,
              'offered_qos_profiles': c.metadata.get('offered_qos_profiles', '')},
             int(counts.get(c.id, 0)))
            for c in channels.values() if c.schema_id in schemas]
