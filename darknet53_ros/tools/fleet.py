"""Fleet-scale offline detection on Ray Data: ``darknet53 detect --fleet``.

The pipeline (the batch-inference pattern of Ray Data)::

    FleetDatasource            one read task per source (bag, video, image folder), reading
      | read_datasource        it where it lies and yielding Arrow blocks of frame records
      v
    FleetPredictor             an actor pool (``--workers``), one model load per actor: the
      | map_batches            package's Detector (ONNX Runtime on CPU, TensorRT with
      v                        ``num_gpus`` per actor), batches mixing sources
    driver (this process)      collects each source's rows; a complete source is committed
                               by :class:`~darknet53_ros.tools.fleet_store.FleetStore`

Exactly once: a source's rows are keyed by (record, detection rank), so a task Ray retries
(an actor that died is restarted, its batch run again) cannot add a row twice; a source is
committed whole or not at all, and a restarted driver skips committed sources. This module and
the other ``darknet53_ros/tools/fleet*.py`` modules are the only ones that import Ray.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass, field
import functools
import inspect
import logging
import math
import os
from pathlib import Path
import re
import tempfile
import time
from typing import Any, cast

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from darknet53_ros.errors import BackendError, ConfigError, Darknet53Error
from darknet53_ros.fileio import sha256_file
from darknet53_ros.inference.backends.registry import backend_for
from darknet53_ros.inference.detector import Detector
from darknet53_ros.inference.postprocess import Detections
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS
from darknet53_ros.tools.fleet_report import FleetSummary, RunStats, build_summary
from darknet53_ros.tools.fleet_sources import (
    END,
    ERROR,
    FAILED,
    FRAME,
    RECORD_SCHEMA,
    ReadOptions,
    Unit,
    expand_sources,
    is_uri,
    read_unit,
)
from darknet53_ros.tools.fleet_store import (
    FleetStore,
    Record,
    opened_store,
    run_config,
)

_LOG = logging.getLogger(__name__)

FAULT_ENV = 'DARKNET53_FLEET_FAULT'
"""Fault injection for tests, forwarded to the actors: ``exit-once:FLAG`` makes the first actor
call that finds no file FLAG create it and kill its process (``os._exit``); ``delay:S`` sleeps
S seconds per batch."""

READ_CPUS = 0.5
"""Logical CPUs reserved by a read task (reading and decoding is light next to inference)."""

OUTPUT_SCHEMA = pa.schema(
    [f for f in RECORD_SCHEMA if f.name not in ('image', 'channels')]
    + [pa.field('found', pa.int32()), pa.field('detection', pa.int32()),
       pa.field('class_id', pa.int32()), pa.field('class_name', pa.string()),
       pa.field('score', pa.float32())]
    + [pa.field(name, pa.float32()) for name in ('x1', 'y1', 'x2', 'y2')])
"""The actors' output: a record's columns plus ``found`` (detections in the frame) and one
detection per row."""


@dataclass
class FleetOptions:
    """Options of a fleet run (the ``darknet53 detect --fleet`` arguments)."""

    output: Path
    ray_address: str | None = None
    workers: int | None = None
    batch_size: int = 4
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    backend: str = 'auto'
    detector: dict[str, Any] = field(default_factory=dict)
    threads: int = 0
    topics: tuple[str, ...] = ()
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    write_bags: bool = False
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        """Raise ConfigError for values out of range."""
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f'--workers must be >= 1, got {self.workers}')
        if self.batch_size < 1:
            raise ConfigError(f'--batch-size must be >= 1, got {self.batch_size}')
        if self.cpus_per_worker <= 0:
            raise ConfigError(f'--cpus-per-worker must be > 0, got {self.cpus_per_worker}')
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f'--gpus-per-worker must be >= 0, got {self.gpus_per_worker}')


# -- reading -----------------------------------------------------------------------------------
def _metadata(unit: Unit) -> BlockMetadata:
    """Unknown size, the source as input file (``schema`` only where this Ray version has it)."""
    names = {f.name for f in dataclasses.fields(BlockMetadata)}
    values: dict[str, Any] = {'num_rows': None, 'size_bytes': None,
                              'input_files': [unit.source], 'exec_stats': None}
    if 'schema' in names:
        values['schema'] = None
    return BlockMetadata(**{k: v for k, v in values.items() if k in names})


class FleetDatasource(Datasource):
    """One read task per source (:func:`~darknet53_ros.tools.fleet_sources.read_unit`)."""

    def __init__(self, units: Sequence[Unit], options: ReadOptions) -> None:
        super().__init__()
        self.units = list(units)
        self.options = options

    def get_name(self) -> str:
        """Name of the read operator in Ray Data's progress."""
        return 'FleetSources'

    def estimate_inmemory_data_size(self) -> int | None:
        """Unknown before reading."""
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        """A read task per source, whatever ``parallelism`` asks for."""
        return [ReadTask(functools.partial(read_unit, unit, self.options), _metadata(unit))
                for unit in self.units]


# -- inference ---------------------------------------------------------------------------------
def _inject_fault() -> None:
    spec = os.environ.get(FAULT_ENV, '')
    kind, _, arg = spec.partition(':')
    if kind == 'exit-once' and arg and not os.path.exists(arg):
        Path(arg).write_text(str(os.getpid()))
        os._exit(17)
    elif kind == 'delay' and arg:
        time.sleep(float(arg))


class FleetPredictor:
    """The detector actor of ``map_batches``: loads the model once and turns frame records
    into detection rows. ``model`` maps file names to bytes (the model first, then companions
    such as a TensorRT engine's ``.engine.json``), or is ``[ref]`` to such a mapping in Ray's
    object store, so nodes need no shared copy of it."""

    def __init__(self, model: dict[str, bytes] | list[Any], backend: str,
                 detector: dict[str, Any], threads: int) -> None:
        files = model if isinstance(model, dict) else cast(dict, ray.get(model[0]))
        self._folder = tempfile.TemporaryDirectory(prefix='darknet53-fleet-model-')
        for name, data in files.items():
            (Path(self._folder.name) / name).write_bytes(data)
        options = dict(detector)
        if threads and backend == 'onnxruntime':
            options['intra_op_threads'] = threads
        self.detector = Detector.from_model(Path(self._folder.name) / next(iter(files)),
                                            backend=backend, **options)

    def _detect(self, images: list[np.ndarray]) -> list[Detections | str]:
        """Detections per image; an image the detector refuses gets the reason instead."""
        try:
            return list(self.detector.detect_batch(images)) if images else []
        except Darknet53Error:
            pass
        results: list[Detections | str] = []
        for image in images:
            try:
                results.append(self.detector.detect(image))
            except Darknet53Error as exc:
                results.append(f'{type(exc).__name__}: {exc}')
        return results

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Detections of the batch's frames; the other records pass through."""
        _inject_fault()
        kinds = batch.column('kind').to_pylist()
        rows = batch.drop_columns(['image', 'channels']).to_pylist()
        frames = [i for i, kind in enumerate(kinds) if kind == FRAME]
        results = dict(zip(frames, self._detect([_pixels(batch, i) for i in frames])))
        out: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            det = results.get(i)
            if det is None:
                out.append(row)
            elif isinstance(det, str):
                out.append({**row, 'kind': FAILED, 'reason': det})
            else:
                out += _detection_rows(row, det)
        return pa.Table.from_pylist(out, schema=OUTPUT_SCHEMA)


def _detection_rows(row: dict[str, Any], det: Detections) -> list[dict[str, Any]]:
    """A frame record's rows: one per detection, or one with ``detection`` None."""
    row = {**row, 'found': len(det)}
    if not len(det):
        return [row]
    return [{**row, 'detection': rank, 'class_id': int(cls), 'class_name': label,
             'score': score, 'x1': box[0], 'y1': box[1], 'x2': box[2], 'y2': box[3]}
            for rank, (box, score, cls, label) in enumerate(zip(
                det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist(),
                det.labels))]


def _pixels(batch: pa.Table, i: int) -> np.ndarray:
    shape = tuple(batch.column(name)[i].as_py() for name in ('height', 'width', 'channels'))
    buffer = batch.column('image')[i].as_buffer()
    image = np.frombuffer(buffer, np.uint8).reshape(shape)
    return image[:, :, 0] if shape[2] == 1 else image


# -- collecting --------------------------------------------------------------------------------
@dataclass
class _Pending:
    records: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    count: int | None = None

    def complete(self) -> bool:
        if self.count is None or len(self.records) != self.count:
            return False
        return all(len(rows) == max(1, next(iter(rows.values())).get('found') or 0)
                   for rows in self.records.values())

    def ordered(self) -> list[Record]:
        return [sorted(self.records[seq].values(), key=lambda r: r['detection'] or 0)
                for seq in sorted(self.records)]


class Collector:
    """Gathers the rows of each source as they stream in, and commits a source once all its
    records are there (duplicates from retried tasks are dropped by key)."""

    def __init__(self, store: FleetStore, units: Sequence[Unit], write_bags: bool) -> None:
        self.store = store
        self.units = {unit.uid: unit for unit in units}
        self.write_bags = write_bags
        self.pending: dict[str, _Pending] = {}
        self.stats = RunStats()

    def add(self, table: pa.Table) -> None:
        """Take one output block of the pipeline."""
        touched = set()
        for row in table.to_pylist():
            uid = row['unit']
            if uid in self.stats.done or uid in self.stats.failed:
                continue  # a late duplicate
            if row['kind'] == ERROR:
                self._fail(uid, row['reason'])
                continue
            pending = self.pending.setdefault(uid, _Pending())
            if row['kind'] == END:
                pending.count = row['count']
            else:
                key = -1 if row.get('detection') is None else row['detection']
                pending.records.setdefault(row['seq'], {})[key] = row
            touched.add(uid)
        for uid in touched:
            pending = self.pending[uid]
            if uid not in self.stats.failed and pending.complete():
                self._commit(uid, self.pending.pop(uid))

    def _commit(self, uid: str, pending: _Pending) -> None:
        entry = self.store.commit(self.units[uid], pending.ordered(), self.write_bags)
        self.stats.done[uid] = entry
        _LOG.debug('committed %s: %d frames', self.units[uid].source, entry['frames'])

    def _fail(self, uid: str, reason: str) -> None:
        self.pending.pop(uid, None)
        self.stats.failed[uid] = reason
        self.store.fail(self.units[uid], reason)
        _LOG.warning('source failed: %s', reason)

    def finish(self) -> RunStats:
        """Sources that never completed (should not happen) are failed with the reason."""
        for uid in list(self.pending):
            pending = self.pending[uid]
            self._fail(uid, f'{self.units[uid].source}: incomplete ({len(pending.records)} '
                       f'of {pending.count} records arrived)')
        for uid in self.units:
            if uid not in self.stats.done and uid not in self.stats.failed:
                self._fail(uid, f'{self.units[uid].source}: no output from its read task')
        return self.stats


# -- running -----------------------------------------------------------------------------------
def _connect(options: FleetOptions, workers: int | None) -> bool:
    """Connect to ``--ray-address`` (or ``RAY_ADDRESS``), else start a new local Ray (even
    where a cluster runs on this machine: ``--ray-address auto`` joins that one); False when
    this process is connected already."""
    if ray.is_initialized():
        return False
    if options.ray_address or os.environ.get('RAY_ADDRESS'):
        ray.init(address=options.ray_address)
    else:
        wanted = math.ceil((workers or 1) * options.cpus_per_worker) + 1
        ray.init(address='local', num_cpus=max(os.cpu_count() or 1, wanted),
                 include_dashboard=False)
    return True


def _auto_workers(options: FleetOptions, gpus: float) -> int:
    """Actors the cluster holds: GPUs / ``--gpus-per-worker``, else the CPUs less one (for
    reading) / ``--cpus-per-worker``."""
    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get('GPU', 0) // gpus))
    return max(1, int((resources.get('CPU', 1) - 1) // options.cpus_per_worker))


def _model_files(model: Path) -> dict[str, bytes]:
    """The model's bytes by file name, with its metadata companion (``NAME.engine.json``)
    where there is one."""
    files = {model.name: model.read_bytes()}
    companion = model.with_name(model.name + '.json')
    if companion.is_file():
        files[companion.name] = companion.read_bytes()
    return files


def _pipeline(units: Sequence[Unit], model_ref: Any, backend: str,
              gpus: float, workers: int, options: FleetOptions) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = options.progress
    read = ReadOptions(tuple(options.topics), options.max_image_pixels,
                       block_frames=max(1, options.batch_size))
    named = 'num_cpus' in inspect.signature(ray.data.read_datasource).parameters
    resources: dict[str, Any] = {'num_cpus': READ_CPUS} if named \
        else {'ray_remote_args': {'num_cpus': READ_CPUS}}  # Ray < 2.50
    dataset = ray.data.read_datasource(
        FleetDatasource(units, read), concurrency=min(len(units), max(2, 2 * workers)),
        override_num_blocks=len(units), **resources)
    remote: dict[str, Any] = {}
    if os.environ.get(FAULT_ENV):
        remote['runtime_env'] = {'env_vars': {FAULT_ENV: os.environ[FAULT_ENV]}}
    threads = options.threads or max(1, int(options.cpus_per_worker))
    return dataset.map_batches(
        FleetPredictor, batch_size=options.batch_size, batch_format='pyarrow',
        fn_constructor_kwargs={'model': [model_ref], 'backend': backend,
                               'detector': options.detector, 'threads': threads},
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.cpus_per_worker,
        num_gpus=gpus or None, **remote)


def _drain(pipeline: Any, collector: Collector) -> None:
    """Feed the pipeline's output to the collector; a failure of the pipeline itself (the
    model does not load on a worker, a worker cannot import the package ...) becomes one
    :class:`~darknet53_ros.errors.BackendError` line (committed sources stay committed)."""
    blocks = iter(pipeline.iter_batches(batch_size=None, batch_format='pyarrow'))
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as exc:
            raise BackendError(f'fleet pipeline failed: {_root_cause(exc)} (sources committed '
                               'so far are kept; run again to resume)') from None
        collector.add(block)


_ERROR_LINE = re.compile(r'^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (\S.*)$')
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def _root_cause(exc: BaseException) -> str:
    """``Type: message`` of what went wrong on a worker: Ray wraps it (several times, in
    text), so the last ``...Error: message`` line of the exception chain is taken."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = getattr(current, 'cause', None) or current.__cause__ or current.__context__
    found = [match for item in chain for line in _ANSI.sub('', str(item)).splitlines()
             if (match := _ERROR_LINE.match(line))]
    if found:
        return f'{found[-1].group(1)}: {found[-1].group(2).strip()}'
    lines = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {lines[0] if lines else "no message"}'


def _inside(unit: Unit, output: Path) -> bool:
    """Whether a source lies in the output folder (a glob over an archive that holds it):
    such sources are left out."""
    if is_uri(unit.source):
        return False
    try:
        Path(unit.source).resolve().relative_to(output.resolve())
    except ValueError:
        return False
    _LOG.warning('left out %s: it is inside --output', unit.source)
    return True


def run_fleet(model: str | os.PathLike[str], sources: Sequence[str],
              options: FleetOptions) -> FleetSummary:
    """Detect over every source of ``sources`` (see
    :func:`~darknet53_ros.tools.fleet_sources.expand_sources`) into ``options.output``;
    resumes a killed run of the same configuration. Uses the connected Ray, else connects to
    ``options.ray_address``, else starts a local one (shut down at the end)."""
    options.check()
    model = Path(model)
    if not model.is_file():
        raise ConfigError(f'--model {model}: no such file')
    units = [unit for unit in expand_sources(sources) if not _inside(unit, options.output)]
    if not units:
        raise ConfigError('--fleet: no sources (outside --output)')
    backend = backend_for(model) if options.backend == 'auto' else options.backend
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None \
        else (1.0 if backend == 'tensorrt' else 0.0)
    config = run_config(sha256_file(model), backend, options.detector, options.topics,
                        options.max_image_pixels, options.write_bags)
    start = time.perf_counter()
    with opened_store(options.output, config, options.overwrite) as (store, committed):
        todo = [unit for unit in units if unit.uid not in committed]
        stats = RunStats(workers=0, batch_size=options.batch_size)
        if todo:
            started = _connect(options, options.workers)
            try:
                workers = options.workers or _auto_workers(options, gpus)
                model_ref = ray.put(_model_files(model))
                pipeline = _pipeline(todo, model_ref, backend, gpus, workers, options)
                collector = Collector(store, todo, options.write_bags)
                _drain(pipeline, collector)
                stats = collector.finish()
                stats.workers, stats.batch_size = workers, options.batch_size
            finally:
                if started:
                    ray.shutdown()
        stats.seconds = time.perf_counter() - start
        return build_summary(store, units, stats)
