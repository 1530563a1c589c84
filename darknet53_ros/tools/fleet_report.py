"""The summary of a fleet run: per-source counts, failed sources, throughput, outputs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any

from darknet53_ros.fileio import atomic_write_text
from darknet53_ros.tools.fleet_sources import Unit
from darknet53_ros.tools.fleet_store import FleetStore

#: Per-source lines printed at most (all of them are in ``summary.json``).
PRINTED_SOURCES = 20


@dataclass
class RunStats:
    """What this run did: committed units (manifest entries) and failed ones (reason)."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    batch_size: int = 0


@dataclass
class FleetSummary:
    """The run's summary (also written as ``summary.json``)."""

    output: Path
    sources: list[dict[str, Any]]
    frames_now: int
    seconds: float
    workers: int
    batch_size: int
    failed_frames: int = 0

    @property
    def failed_sources(self) -> list[dict[str, Any]]:
        """Sources that could not be read in this run."""
        return [s for s in self.sources if s['status'] == 'failed']

    @property
    def fps(self) -> float | None:
        """Frames per second of this run (start-up included)."""
        return self.frames_now / self.seconds if self.seconds and self.frames_now else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        totals = {key: sum(s.get(key, 0) for s in self.sources)
                  for key in ('frames', 'detections', 'failed_frames')}
        return {'output': str(self.output), 'sources': len(self.sources),
                'processed_now': sum(s['status'] == 'done' for s in self.sources),
                'done_earlier': sum(s['status'] == 'done earlier' for s in self.sources),
                'failed': len(self.failed_sources), **totals,
                'frames_now': self.frames_now, 'seconds': round(self.seconds, 3),
                'fps': round(self.fps, 2) if self.fps else None, 'workers': self.workers,
                'batch_size': self.batch_size, 'per_source': self.sources,
                'outputs': {name: str(self.output / name) for name in
                            ('detections', 'failures', 'bags', 'manifest', 'summary.json')
                            if name != 'bags' or any((self.output / name).iterdir())}}


def build_summary(store: FleetStore, units: Sequence[Unit], stats: RunStats) -> FleetSummary:
    """Summarise the run over every unit of the command line and write ``summary.json``."""
    entries = {entry['unit']: entry for entry in store.entries()}
    sources = []
    for unit in units:
        item: dict[str, Any] = {'source': unit.source, 'unit': unit.uid}
        if unit.uid in stats.failed:
            item.update(status='failed', reason=stats.failed[unit.uid])
        elif unit.uid in entries:
            entry = entries[unit.uid]
            item.update(status='done' if unit.uid in stats.done else 'done earlier',
                        frames=entry['frames'], detections=entry['detections'],
                        failed_frames=entry['failed_frames'])
        else:
            item.update(status='not run')
        sources.append(item)
    summary = FleetSummary(store.root, sources,
                           sum(e['frames'] for e in stats.done.values()), stats.seconds,
                           stats.workers, stats.batch_size,
                           sum(e['failed_frames'] for e in stats.done.values()))
    atomic_write_text(store.root / 'summary.json', json.dumps(summary.as_dict(), indent=1))
    return summary


def format_fleet_summary(summary: FleetSummary) -> str:
    """Human-readable end-of-run summary."""
    data = summary.as_dict()
    lines = [f'fleet: {data["sources"]} sources: {data["processed_now"]} processed now, '
             f'{data["done_earlier"]} done earlier, {data["failed"]} failed']
    rate = f' ({summary.fps:.1f} frames/s' if summary.fps else ' ('
    lines.append(f'processed {summary.frames_now} frames in {summary.seconds:.1f} s{rate}'
                 f'{", " if summary.fps else ""}{summary.workers} workers, batch '
                 f'{summary.batch_size})')
    lines.append(f'all sources: {data["frames"]} frames, {data["detections"]} detections, '
                 f'{data["failed_frames"]} frames skipped')
    done = [s for s in summary.sources if s['status'] != 'failed']
    for item in done[:PRINTED_SOURCES]:
        lines.append(f'  {item["unit"]}: ' + (
            f'{item["frames"]} frames, {item["detections"]} detections'
            + (f', {item["failed_frames"]} skipped' if item['failed_frames'] else '')
            + (' (done earlier)' if item['status'] == 'done earlier' else '')
            if 'frames' in item else item['status']))
    if len(done) > PRINTED_SOURCES:
        lines.append(f'  ... {len(done) - PRINTED_SOURCES} more in summary.json')
    for item in summary.failed_sources:
        lines.append(f'failed: {item["reason"]}')
    if summary.failed_sources:
        lines.append('  (listed in failures/; run the same command again to retry them)')
    lines += [f'wrote {path}' for path in data['outputs'].values()]
    return '\n'.join(lines)
