"""The sources of a fleet run (``darknet53 detect --fleet``) and how one is read.

:func:`expand_sources` turns the command line into :class:`Unit` items, one per source: a
rosbag2 (folder or storage file), a video, a folder of images or one image, given directly, by
a glob (``'/data/2024-*/*'``), by a text listing (``.txt`` / ``.list``: one source per line,
``#`` comments, paths relative to the listing), or as an archive folder holding such sources
(expanded one level). A URI (``s3://``, ``gs://``, ``hdfs://``, ``file://`` ...) names a source
that :mod:`pyarrow.fs` reaches: its read task copies that one source to local scratch space.

:func:`read_unit` reads one source where it lies (in a Ray read task) and yields Arrow blocks of
*records*: one per frame (decoded pixels), one per frame that could not be read (its reason),
then one ``end`` record with the number of frame records, or a single ``error`` record when the
source cannot be read at all. The same readers as ``darknet53 detect``
(:mod:`darknet53_ros.io.sources`) make the same frames, indices and failures.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import glob
import hashlib
from pathlib import Path
import re
import tempfile
from typing import Any

import pyarrow as pa

from darknet53_ros.errors import Darknet53Error, SourceError
from darknet53_ros.io.bags import BagReader
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS
from darknet53_ros.io.sources import (
    IMAGE_SUFFIXES,
    Frame,
    folder_images,
    iter_bag,
    iter_images,
    iter_video,
    source_kind,
)

LISTING_SUFFIXES = frozenset({'.txt', '.list', '.lst'})
"""Files read as listings of sources (one per line)."""

#: Kinds of record :func:`read_unit` yields (column ``kind``).
FRAME, FAILED, END, ERROR = 'frame', 'failed', 'end', 'error'

RECORD_SCHEMA = pa.schema([
    ('unit', pa.string()), ('kind', pa.string()), ('seq', pa.int64()),
    ('topic', pa.string()), ('index', pa.int64()), ('file', pa.string()),
    ('stamp_ns', pa.int64()), ('log_time_ns', pa.int64()), ('frame_id', pa.string()),
    ('width', pa.int32()), ('height', pa.int32()), ('channels', pa.int32()),
    ('image', pa.binary()), ('reason', pa.string()), ('count', pa.int64()),
])
"""Records between the read tasks and the detector actors (not stored)."""


@dataclass(frozen=True)
class Unit:
    """One source of a fleet run: ``uid`` names its outputs (stable across runs), ``source``
    is the path (absolute) or URI it is read from."""

    uid: str
    source: str


@dataclass(frozen=True)
class ReadOptions:
    """How sources are read: bag ``topics`` (those a bag has; all its image topics when
    empty), the pixel limit checked before decoding, and frames per Arrow block."""

    topics: tuple[str, ...] = ()
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    block_frames: int = 8


def is_uri(text: str) -> bool:
    """``scheme://...`` (two or more letters, so ``C:/x`` is a path)."""
    return re.match(r'^[A-Za-z][A-Za-z0-9+.-]+://', text) is not None


def unit_for(source: str) -> Unit:
    """The unit of a source: a readable name plus a hash of its absolute path or URI."""
    canonical = source if is_uri(source) else str(Path(source).absolute())
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', Path(canonical.rstrip('/')).name or 'source')
    digest = hashlib.sha1(canonical.encode('utf-8')).hexdigest()[:10]
    return Unit(f'{name[:48]}-{digest}', canonical)


def _listing(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f'{path}: cannot read the source listing ({exc})') from None
    out = []
    for line in lines:
        entry = line.split('#', 1)[0].strip()
        if entry:
            out.append(entry if is_uri(entry) or Path(entry).is_absolute()
                       else str(path.parent / entry))
    return out


def _archive_children(folder: Path) -> list[str] | None:
    """Sources inside a folder that is neither a bag nor an image folder, else None."""
    try:
        if source_kind(folder) != 'folder' or folder_images(folder):
            return None
        children = sorted(p for p in folder.iterdir() if not p.name.startswith('.'))
    except (Darknet53Error, OSError):
        return None
    found = []
    for child in children:
        try:
            kind = source_kind(child)
        except Darknet53Error:
            continue
        if kind in ('bag', 'video') or (kind == 'folder' and folder_images(child)):
            found.append(str(child))
    return found or None


def _expand(entry: str, depth: int) -> list[str]:
    if is_uri(entry):
        return [entry]
    if glob.has_magic(entry):
        return sorted(glob.glob(entry, recursive=True)) or [entry]
    path = Path(entry)
    if path.is_file() and path.suffix.lower() in LISTING_SUFFIXES and depth == 0:
        return [item for line in _listing(path) for item in _expand(line, depth + 1)]
    if path.is_dir() and depth < 2:
        children = _archive_children(path)
        if children is not None:
            return children
    return [entry]


def expand_sources(entries: Sequence[str]) -> list[Unit]:
    """The units named by ``entries`` (paths, globs, listings, archive folders, URIs), in
    order, each once. A path that does not exist (or a glob matching nothing) is kept: its read
    task reports it as a failed source."""
    units: dict[str, Unit] = {}
    for entry in entries:
        for source in _expand(str(entry), 0):
            unit = unit_for(source)
            units.setdefault(unit.uid, unit)
    return list(units.values())


class _Records:
    """Column lists of record rows, flushed as Arrow blocks."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.count = 0
        self.columns: dict[str, list[Any]] = {name: [] for name in RECORD_SCHEMA.names}

    def add(self, kind: str, **values: Any) -> None:
        values.update(unit=self.uid, kind=kind)
        for name, column in self.columns.items():
            column.append(values.get(name))

    def frame(self, frame: Frame, file: str | None) -> None:
        """A frame record (pixels or the reason it could not be read)."""
        common = dict(seq=self.count, topic=frame.topic, index=frame.index, file=file,
                      stamp_ns=frame.stamp_ns, log_time_ns=frame.log_time_ns,
                      frame_id=getattr(frame.header, 'frame_id', None))
        self.count += 1
        if frame.image is None:
            self.add(FAILED, reason=frame.error or 'unreadable frame', **common)
            return
        image = frame.image if frame.image.ndim == 3 else frame.image[:, :, None]
        height, width, channels = image.shape
        self.add(FRAME, width=width, height=height, channels=channels,
                 image=image.tobytes(), **common)

    def __len__(self) -> int:
        return len(self.columns['kind'])

    def flush(self) -> pa.Table:
        table = pa.table(self.columns, schema=RECORD_SCHEMA)
        self.columns = {name: [] for name in RECORD_SCHEMA.names}
        return table


def _bag_frames(path: Path, options: ReadOptions) -> Iterator[Frame]:
    with BagReader(path) as reader:
        available = [t.name for t in reader.image_topics()]
        chosen = [t for t in available if t in options.topics] if options.topics \
            else available
        if options.topics and not chosen:
            raise SourceError(f'rosbag2 {path}: none of the image topics '
                              f'{", ".join(options.topics)} (image topics: '
                              f'{", ".join(available) or "none"})')
        if not chosen:
            raise SourceError(f'rosbag2 {path}: no sensor_msgs/Image or CompressedImage topics')
        yield from iter_bag(reader, chosen, options.max_image_pixels)


def source_frames(path: Path, options: ReadOptions) -> Iterator[tuple[Frame, str | None]]:
    """``(frame, image file or None)`` of a local source, as ``darknet53 detect`` reads it,
    except that ``topics`` selects those of a bag's image topics it has (a fleet mixes camera
    sets; a bag with none of them fails) and is ignored for other sources.

    Raises:
        SourceError: the source cannot be read at all (missing, unknown kind, no images, bag
            that does not open, video that does not open).
    """
    kind = source_kind(path)
    if kind == 'bag':
        for frame in _bag_frames(path, options):
            yield frame, None
        return
    if kind == 'video':
        for frame in iter_video(path):
            yield frame, None
        return
    paths = [path] if kind == 'image' else folder_images(path)
    if not paths:
        raise SourceError(f'{path}: no image files ({", ".join(sorted(IMAGE_SUFFIXES))})')
    for frame in iter_images(paths, options.max_image_pixels):
        yield frame, str(Path(frame.source).relative_to(path)) if kind == 'folder' else None


def _fetch(uri: str, scratch: Path) -> Path:
    """Copy the source at ``uri`` (file or folder) to ``scratch`` with :mod:`pyarrow.fs`."""
    from pyarrow import fs

    try:
        filesystem, where = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(where)
        if info.type == fs.FileType.NotFound:
            raise SourceError(f'{uri}: no such file or folder')
        local = scratch / (Path(where.rstrip('/')).name or 'source')
        if info.type == fs.FileType.Directory:
            local.mkdir()
        fs.copy_files(where, str(local), source_filesystem=filesystem,
                      destination_filesystem=fs.LocalFileSystem())
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f'{uri}: cannot fetch ({exc})') from None
    return local


def read_unit(unit: Unit, options: ReadOptions) -> Iterator[pa.Table]:
    """Arrow blocks of ``unit``'s records (see the module doc); never raises for a bad source:
    anything that stops it from being read becomes one ``error`` record with the reason."""
    records = _Records(unit.uid)
    try:
        with tempfile.TemporaryDirectory(prefix='darknet53-fleet-') as scratch:
            path = _fetch(unit.source, Path(scratch)) if is_uri(unit.source) \
                else Path(unit.source)
            for frame, file in source_frames(path, options):
                records.frame(frame, file)
                if len(records) >= options.block_frames:
                    yield records.flush()
    except Exception as exc:  # a bad source must not stop the fleet: report it
        reason = str(exc) if isinstance(exc, Darknet53Error) else \
            f'{unit.source}: {type(exc).__name__}: {exc}'
        records.flush()
        records.add(ERROR, seq=-1, reason=reason)
        yield records.flush()
        return
    records.add(END, seq=-1, count=records.count)
    yield records.flush()
