"""The output of a fleet run: a versioned Parquet dataset, committed one source at a time.

Layout of the output folder (see doc/fleet.md for the column reference)::

    fleet.json                 run configuration (schema version, model hash, thresholds ...)
    detections/<unit>.parquet  one row per detection, plus one per frame with none
    failures/<unit>.parquet    frames that could not be read, or the source that could not be
    bags/<unit>_detections/    optional: the detections bag `darknet53 detect` writes
    manifest/<unit>.json       the commit record of a unit (counts, files)
    summary.json               the last run's summary

A unit is committed when its ``manifest/<unit>.json`` exists: its other files are written
first, each to a temporary name renamed into place, so a run killed at any point leaves every
unit either committed whole or not at all, and the next run with the same arguments redoes
exactly the units that are not (same unit, same file names, same rows). ``fleet.json`` ties the
folder to one configuration: resuming with another model or other thresholds is refused.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
import fcntl
import json
import os
from pathlib import Path
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from darknet53_ros.errors import ConfigError
from darknet53_ros.fileio import (
    atomic_path,
    atomic_write_text,
    read_json_object,
    remove_stale_partials,
)
from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.bag_writer import BagWriter
from darknet53_ros.io.messages import MessageTypes, header_msg
from darknet53_ros.io.sources import Frame
from darknet53_ros.tools.bag_sink import BagSink
from darknet53_ros.tools.fleet_sources import FAILED, FRAME, Unit
from darknet53_ros.version import __version__

SCHEMA_VERSION = 1
"""Version of the detections and failures tables (schema metadata ``schema_version``)."""

_META = {b'darknet53_ros.fleet.schema_version': str(SCHEMA_VERSION).encode()}

DETECTIONS_SCHEMA = pa.schema([
    ('source', pa.string()), ('unit', pa.string()), ('topic', pa.string()),
    ('frame_index', pa.int64()), ('file', pa.string()), ('stamp_ns', pa.int64()),
    ('log_time_ns', pa.int64()), ('frame_id', pa.string()), ('width', pa.int32()),
    ('height', pa.int32()), ('detection', pa.int32()), ('class_id', pa.int32()),
    ('class_name', pa.string()), ('score', pa.float32()), ('x1', pa.float32()),
    ('y1', pa.float32()), ('x2', pa.float32()), ('y2', pa.float32()),
], metadata=_META)
"""One row per detection (``detection`` = rank in the frame, 0 = best) and one row with
``detection`` null for each frame without any. Boxes are in source pixels."""

FAILURES_SCHEMA = pa.schema([
    ('source', pa.string()), ('unit', pa.string()), ('scope', pa.string()),
    ('topic', pa.string()), ('frame_index', pa.int64()), ('file', pa.string()),
    ('reason', pa.string()),
], metadata=_META)
"""A source that could not be read (``scope`` ``source``) or one frame (``frame``)."""

Record = list[dict[str, Any]]
"""The rows of one frame record: its detection rows (one with ``detection`` None when there
are none), or a single ``failed`` row."""


def _frame_sort_key(row: dict[str, Any]) -> tuple:
    detection = row.get('detection')
    return (row.get('topic') or '', row['index'], row.get('file') or '',
            -1 if detection is None else detection)


class FleetStore:
    """The output folder of a fleet run (see the module doc); one writer at a time (a lock
    file refuses a second driver on the same machine)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock: Any = None

    # -- opening -------------------------------------------------------------------------------
    def open(self, config: dict[str, Any], overwrite: bool = False) -> set[str]:
        """Lock the folder, check or write ``fleet.json``, clear leftovers of killed runs, and
        return the committed units.

        Raises:
            ConfigError: the folder holds another configuration's results, or something that
                is not a fleet output (without ``overwrite``), or another run is writing it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        settings = self.root / 'fleet.json'
        if overwrite:
            self._clear()
        elif settings.is_file():
            old = read_json_object(settings, ConfigError, 'fleet run configuration')
            changed = sorted(k for k in set(old) | set(config)
                             if k != 'package_version' and old.get(k) != config.get(k))
            if changed:
                raise ConfigError(f'--output {self.root}: holds results of another '
                                  f'configuration ({", ".join(changed)} differ); use a new '
                                  'folder, or --overwrite to start again')
        elif any(p for p in self.root.iterdir() if p.name != '.fleet.lock'):
            raise ConfigError(f'--output {self.root}: not empty and not a fleet output; '
                              'choose another folder or pass --overwrite')
        atomic_write_text(settings, json.dumps(config, indent=1, sort_keys=True))
        for name in ('detections', 'failures', 'bags', 'manifest'):
            (self.root / name).mkdir(exist_ok=True)
            remove_stale_partials(self.root / name)
        remove_stale_partials(self.root)
        return {p.stem for p in (self.root / 'manifest').glob('*.json')}

    def _take_lock(self) -> None:
        handle = open(self.root / '.fleet.lock', 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError(f'--output {self.root}: another fleet run is writing it') \
                from None
        self._lock = handle

    def _clear(self) -> None:
        for item in self.root.iterdir():
            if item.name == '.fleet.lock':
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- committing ----------------------------------------------------------------------------
    def commit(self, unit: Unit, records: Sequence[Record], write_bag: bool = False
               ) -> dict[str, Any]:
        """Write a complete unit (its frame records, in read order) and commit it; returns
        its manifest entry."""
        frames = [r for r in records if r[0]['kind'] == FRAME]
        failed = [r[0] for r in records if r[0]['kind'] == FAILED]
        rows = sorted((row for record in frames for row in record), key=_frame_sort_key)
        table = _detections_table(unit, rows)
        files = {'detections': self._write_table(self.root / 'detections', unit.uid, table)}
        if failed:
            files['failures'] = self._write_table(self.root / 'failures', unit.uid,
                                                  _failures_table(unit, failed))
        else:  # an earlier run's failure of this source
            (self.root / 'failures' / f'{unit.uid}.parquet').unlink(missing_ok=True)
        if write_bag and frames and frames[0][0]['topic'] is not None:
            files['bag'] = self._write_bag(unit, frames)
        entry = {'unit': unit.uid, 'source': unit.source, 'frames': len(frames),
                 'detections': sum(1 for row in rows if row['detection'] is not None),
                 'failed_frames': len(failed), 'files': files}
        atomic_write_text(self.root / 'manifest' / f'{unit.uid}.json',
                          json.dumps(entry, indent=1, sort_keys=True))
        return entry

    def fail(self, unit: Unit, reason: str) -> None:
        """Record a source that could not be read (it stays uncommitted: the next run tries
        it again)."""
        table = pa.Table.from_pylist([{'source': unit.source, 'unit': unit.uid,
                                       'scope': 'source', 'reason': reason}],
                                     schema=FAILURES_SCHEMA)
        self._write_table(self.root / 'failures', unit.uid, table)

    def _write_table(self, folder: Path, uid: str, table: pa.Table) -> str:
        target = folder / f'{uid}.parquet'
        with atomic_path(target, suffix='.tmp.parquet') as tmp:
            pq.write_table(table, tmp)
        return str(target.relative_to(self.root))

    def _write_bag(self, unit: Unit, frames: Sequence[Record]) -> str:
        types = MessageTypes.from_rosbags()
        labels = {row['class_id']: row['class_name'] for record in frames for row in record
                  if row['class_id'] is not None}
        names = [labels.get(i, str(i)) for i in range(max(labels, default=-1) + 1)]
        path = self.root / 'bags' / f'{unit.uid}_detections'
        writer = BagWriter(path, types=types, overwrite=True)
        writer.open()
        sink = BagSink(writer, 'none', names)
        ok = False
        try:
            for record in frames:
                sink.add_frame(*_bag_frame(types, record), None)
            ok = True
        finally:
            sink.close(ok)
        return str(path.relative_to(self.root))

    # -- reading back --------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Manifest entries of every committed unit, by unit id."""
        out = []
        for path in sorted((self.root / 'manifest').glob('*.json')):
            out.append(read_json_object(path, ConfigError, 'fleet manifest entry'))
        return out

    def failures(self, units: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Rows of the failures table (of ``units`` only when given)."""
        wanted = None if units is None else set(units)
        rows: list[dict[str, Any]] = []
        for path in sorted((self.root / 'failures').glob('*.parquet')):
            if wanted is None or path.stem in wanted:
                rows += pq.read_table(path).to_pylist()
        return rows


def _detections_table(unit: Unit, rows: Sequence[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in DETECTIONS_SCHEMA.names}
    fixed = {'source': unit.source, 'unit': unit.uid}
    renamed = {'frame_index': 'index'}
    for row in rows:
        for name, column in columns.items():
            column.append(fixed[name] if name in fixed else row.get(renamed.get(name, name)))
    return pa.table(columns, schema=DETECTIONS_SCHEMA)


def _failures_table(unit: Unit, failed: Sequence[dict[str, Any]]) -> pa.Table:
    rows = [{'source': unit.source, 'unit': unit.uid, 'scope': 'frame', 'topic': f['topic'],
             'frame_index': f['index'], 'file': f['file'], 'reason': f['reason']}
            for f in sorted(failed, key=lambda f: f['seq'])]
    return pa.Table.from_pylist(rows, schema=FAILURES_SCHEMA)


def _bag_frame(types: MessageTypes, record: Record) -> tuple[Frame, Detections]:
    """A frame record as the :class:`~darknet53_ros.io.sources.Frame` (no pixels) and the
    detections :class:`~darknet53_ros.tools.bag_sink.BagSink` writes."""
    first = record[0]
    found = [row for row in record if row['detection'] is not None]
    found.sort(key=lambda row: row['detection'])
    boxes = np.array([[r['x1'], r['y1'], r['x2'], r['y2']] for r in found], np.float32)
    detections = Detections(boxes.reshape(-1, 4),
                            np.array([r['score'] for r in found], np.float32),
                            np.array([r['class_id'] for r in found], np.int64))
    header = header_msg(types, first['stamp_ns'] or 0, first['frame_id'] or '')
    frame = Frame(first['topic'], first['index'], None, topic=first['topic'],
                  stamp_ns=first['stamp_ns'], log_time_ns=first['log_time_ns'], header=header)
    return frame, detections


@contextmanager
def opened_store(root: str | os.PathLike[str], config: dict[str, Any],
                 overwrite: bool = False) -> Iterator[tuple[FleetStore, set[str]]]:
    """:meth:`FleetStore.open` as a context manager: ``(store, committed units)``."""
    store = FleetStore(root)
    try:
        yield store, store.open(config, overwrite)
    finally:
        store.close()


def run_config(model_sha256: str, backend: str, detector: dict[str, Any],
               topics: Sequence[str], max_image_pixels: int | None,
               write_bags: bool) -> dict[str, Any]:
    """What ``fleet.json`` records: everything that decides the rows of a unit."""
    return {'schema_version': SCHEMA_VERSION, 'package_version': __version__,
            'model_sha256': model_sha256, 'backend': backend, 'detector': detector,
            'topics': sorted(topics), 'max_image_pixels': max_image_pixels,
            'write_bags': write_bags}
