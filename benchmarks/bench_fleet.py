"""Benchmark ``darknet53 detect --fleet`` (Ray Data) against today's single-process ``detect``.

Run: ``python benchmarks/bench_fleet.py`` (needs ``darknet53_ros[fleet]``). Writes N small
synthetic multi-camera bags (default 40: 2 cameras x 4 frames of 320x256), exports the bundled
demo model, starts one local Ray (its start-up is reported, not counted), then per round runs,
in an order that rotates from round to round:

* ``detect``: one process, one model load, ``darknet53 detect`` on each bag in turn (ONNX
  Runtime on all cores, detections bag and COCO files, no annotated images);
* ``detect-1t``: the same with one ONNX Runtime thread (the reference for Ray's overhead);
* ``fleet-1w`` / ``fleet-2w``: ``detect --fleet`` over the same bags with 1 and 2 actors of
  one CPU and one thread each, batch ``--batch-size``, writing the detections bags too;
* ``fleet-1w-1bag`` / ``detect-1t-1bag``: one bag only, for Ray's fixed cost per run (actor
  start and model load, pipeline start).

Prints frames/s per variant (median and range over the rounds), paired ratios against
``detect`` (per round, median and range), and Ray's overhead: fixed per run, and per frame
(``fleet-1w`` against ``detect-1t`` over all bags, fixed part removed). The first round checks
that the fleet finds the same number of detections as ``detect``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import statistics
import tempfile
import time
from typing import Any

VARIANTS = ('detect', 'detect-1t', 'fleet-1w', 'fleet-2w', 'fleet-1w-1bag', 'detect-1t-1bag')


def make_bags(root: Path, count: int, cameras: int, frames: int, width: int,
              height: int) -> list[Path]:
    """``count`` synthetic camera bags under ``root``."""
    from darknet53_ros.tools.camera_bag import write_camera_bag

    bags = [root / f'drive{i:03d}' for i in range(count)]
    for i, bag in enumerate(bags):
        write_camera_bag(bag, cameras=cameras, frames=frames, seed=i, width=width,
                         height=height)
    return bags


def run_detect(model: Path, bags: list[Path], out: Path, threads: int) -> tuple[int, int]:
    """Today's ``detect`` on each bag, one process and one model: (frames, detections)."""
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.tools.runner import OfflineRunner

    frames = detections = 0
    options = {'intra_op_threads': threads} if threads else {}
    with Detector.from_model(model, **options) as detector:
        for bag in bags:
            summary = OfflineRunner(detector, out / bag.name, annotate=False,
                                    progress=False).run(bag)
            frames += summary.processed
            detections += summary.detections
    return frames, detections


def run_fleet(model: Path, bags: list[Path], out: Path, workers: int,
              batch: int) -> tuple[int, int]:
    """``detect --fleet`` over the bags: (frames, detections)."""
    from darknet53_ros.tools.fleet import FleetOptions
    from darknet53_ros.tools.fleet import run_fleet as fleet

    listing = out.with_suffix('.txt')
    listing.write_text('\n'.join(str(b) for b in bags) + '\n')
    summary = fleet(model, [str(listing)], FleetOptions(
        output=out, workers=workers, batch_size=batch, write_bags=True, progress=False))
    return summary.frames_now, sum(s.get('detections', 0) for s in summary.sources)


def spread(values: list[float], unit: str = '', digits: int = 1) -> str:
    """``median [min - max]``."""
    return (f'{statistics.median(values):.{digits}f}{unit} '
            f'[{min(values):.{digits}f} - {max(values):.{digits}f}]')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--bags', type=int, default=40)
    parser.add_argument('--cameras', type=int, default=2)
    parser.add_argument('--frames', type=int, default=4, help='frames per camera')
    parser.add_argument('--size', default='320x256', help='WxH of the frames')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help='comma-separated subset of: ' + ', '.join(VARIANTS))
    parser.add_argument('--warmup', type=int, default=1,
                        help='rounds over one bag first, not counted (worker processes)')
    args = parser.parse_args()
    variants = tuple(v for v in VARIANTS if v in args.variants.split(','))
    if not variants or 'detect' not in variants:
        parser.error(f'--variants: detect and any of {", ".join(VARIANTS[1:])}')

    import logging

    import ray
    import ray.data

    from darknet53_ros.tools.demo import export_demo_model

    logging.basicConfig(level=logging.WARNING)
    width, height = (int(v) for v in args.size.lower().split('x'))
    print(f'load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)')
    with tempfile.TemporaryDirectory(prefix='bench_fleet_') as tmp:
        root = Path(tmp)
        model = export_demo_model(root / 'demo.onnx')
        bags = make_bags(root / 'bags', args.bags, args.cameras, args.frames, width, height)
        start = time.perf_counter()
        ray.init(address='local', num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        ray.data.DataContext.get_current()  # Ray Data sets up its loggers: quieten them
        for name in ('ray', 'ray.data'):
            logging.getLogger(name).setLevel(logging.WARNING)
        print(f'Ray start-up (local, once; not counted below): '
              f'{time.perf_counter() - start:.1f} s')
        jobs: dict[str, Any] = {
            'detect': lambda out: run_detect(model, bags, out, 0),
            'detect-1t': lambda out: run_detect(model, bags, out, 1),
            'fleet-1w': lambda out: run_fleet(model, bags, out, 1, args.batch_size),
            'fleet-2w': lambda out: run_fleet(model, bags, out, 2, args.batch_size),
            'fleet-1w-1bag': lambda out: run_fleet(model, bags[:1], out, 1, args.batch_size),
            'detect-1t-1bag': lambda out: run_detect(model, bags[:1], out, 1),
        }
        for _ in range(args.warmup):
            run_fleet(model, bags[:1], root / 'warmup', 2, args.batch_size)
            shutil.rmtree(root / 'warmup')
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        frames: dict[str, int] = {}
        for rnd in range(args.rounds):
            shift = rnd % len(variants)
            order = variants[shift:] + variants[:shift]
            if rnd % 2:
                order = tuple(reversed(order))
            found: dict[str, int] = {}
            for name in order:
                out = root / 'out' / f'{name}-{rnd}'
                begin = time.perf_counter()
                frames[name], found[name] = jobs[name](out)
                seconds[name].append(time.perf_counter() - begin)
                shutil.rmtree(out, ignore_errors=True)
            if rnd == 0:
                same = {found[v] for v in ('detect', 'detect-1t', 'fleet-1w', 'fleet-2w')
                        if v in found}
                assert len(same) == 1, found
                print(f'check: fleet and detect find the same {found["detect"]} detections '
                      f'in {frames["detect"]} frames')
        ray.shutdown()
    report(seconds, frames, args)
    print(f'load average at end: {os.getloadavg()[0]:.2f}')


def report(seconds: dict[str, list[float]], frames: dict[str, int],
           args: argparse.Namespace) -> None:
    """Frames/s, paired ratios and Ray's overhead."""
    print(f'\n{args.bags} bags x {args.cameras} cameras x {args.frames} frames '
          f'({args.size}), {args.rounds} rounds, fleet batch {args.batch_size}; '
          'median [min - max]')
    for name in seconds:
        fps = [frames[name] / s for s in seconds[name]]
        print(f'  {name:15s} {frames[name]:5d} frames  {spread(fps, " frames/s")}  '
              f'({spread(seconds[name], " s")})')
    print('paired, per round: frames/s against detect (all cores, one process)')
    for name in ('detect-1t', 'fleet-1w', 'fleet-2w'):
        if name in seconds:
            ratios = [d / f for d, f in zip(seconds['detect'], seconds[name])]
            print(f'  {name:15s} x{spread(ratios, digits=2)}')
    if not set(VARIANTS) <= set(seconds):
        return
    fixed = [f - d for f, d in zip(seconds['fleet-1w-1bag'], seconds['detect-1t-1bag'])]
    total = [f - d for f, d in zip(seconds['fleet-1w'], seconds['detect-1t'])]
    count = frames['fleet-1w'] - frames['fleet-1w-1bag']
    per_frame = [1000 * (t - x) / count for t, x in zip(total, fixed)] if count else []
    print("Ray's overhead (fleet-1w against detect-1t, same thread count):")
    print(f'  fixed per run (1 bag): {spread(fixed, " s", 2)}')
    if per_frame:
        print(f'  per frame beyond it:   {spread(per_frame, " ms", 2)}')


if __name__ == '__main__':
    main()
