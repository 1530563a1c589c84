"""Tracking quality and cost against the trackers people use, on identical detections.

Two steps (the peers pull OpenCV 5 / PyTorch, so they live in their own venv):

1. ``python benchmarks/bench_tracking.py prepare --data DIR`` (the project's Python): writes the
   held-out synthetic sequences (``darknet53 synth --sequences``; seeds in :data:`SETS`, never
   used to tune the tracker's defaults, which were tuned on the tune* sets) and the bundled demo
   model's detections of every frame (score >= 0.1, NMS 0.45) as ``<set>/det/<seq>.txt``;
2. ``python benchmarks/bench_tracking.py run --data DIR`` (a Python with the peers installed,
   and TrackEval; the project on ``PYTHONPATH``): every tracker tracks the same detections;
   HOTA, IDF1, ID switches (TrackEval, class-agnostic) per set, and the time per frame of each
   tracker's update calls, paired and interleaved (:func:`darknet53_ros.tools.timing.
   paired_timing`: each round runs every tracker over all sequences of the set, alternating
   the order), reported as medians and paired ratios (median, p10, p90).

Trackers: ours (:class:`darknet53_ros.tracking.Tracker`, defaults), Ultralytics' BYTETracker
and BOTSORT (no ReID; ``gmc_method: none``, and with its default sparse optical-flow camera
motion compensation, which needs the images), supervision's ``ByteTrack``, BoxMOT's
``ByteTrack`` and ``OcSort``; peers at their defaults, told the sequence's frame rate where
they take one. Missing peers are skipped with a line saying so.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
import json
from pathlib import Path
import sys
import tempfile
from typing import Any

import numpy as np

from darknet53_ros.io.mot import SeqInfo, find_sequences, write_results
from darknet53_ros.tools.timing import paired_timing
from darknet53_ros.tools.track import FrameDetections, format_detections, read_detections
from darknet53_ros.tracking import Tracker

# name: (seed, sequences, frames, width, height, objects kept near the view)
SETS: dict[str, tuple[int, int, int, int, int, int]] = {
    'tune': (100, 8, 150, 320, 256, 6),  # the tracker defaults were tuned on the four
    'tune20': (110, 2, 120, 640, 480, 20),  # tune* sets (training seeds): never scored here
    'tune1': (310, 12, 150, 320, 256, 1),  # training seeds: single objects
    'tune100': (120, 2, 80, 1280, 736, 100),  # training seeds: crowds
    'eval': (200, 8, 150, 320, 256, 6),
    'n1': (300, 12, 150, 320, 256, 1),
    'n20': (400, 6, 120, 640, 480, 20),
    'n100': (500, 3, 80, 1280, 736, 100),
    'smoke': (900, 1, 12, 160, 128, 3),  # test/test_benchmarks.py: that the script runs
}
Row = tuple[int, int, float, float, float, float, float]
Step = Callable[[FrameDetections, Any], list[tuple[int, list[float], float]]]


# -- prepare -----------------------------------------------------------------------------------
def prepare(data: Path, sets: list[str]) -> None:
    """Sequences and demo-model detections for ``sets``."""
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.tools.bench import exported_models
    from darknet53_ros.tools.track import detect_sequence
    from darknet53_ros.training.synthetic.sequences import write_sequences

    for name in sets:
        seed, count, frames, width, height, objects = SETS[name]
        folder = data / name
        write_sequences(folder, count, seed, frames, width, height, objects)
        with tempfile.TemporaryDirectory() as tmp:
            model = exported_models(Path(tmp), [(width, height)])[0]
            with Detector.from_model(model, conf_threshold=0.1, nms_threshold=0.45) as det:
                for info in find_sequences(folder):
                    found = detect_sequence(det, info, batch=4)
                    path = folder / 'det' / f'{info.folder.name}.txt'
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(format_detections(found))
                    print(f'{name}/{info.folder.name}: {info.length} frames, '
                          f'{sum(len(f.scores) for f in found)} detections', flush=True)


# -- trackers ----------------------------------------------------------------------------------
def _ours(info: SeqInfo) -> Step:
    tracker = Tracker()

    def step(f: FrameDetections, image: Any) -> list[tuple[int, list[float], float]]:
        ids = tracker.update(f.boxes, f.scores, f.class_ids, f.stamp)
        keep = np.flatnonzero(ids > 0)
        boxes = tracker.filtered_boxes
        return [(int(ids[i]), boxes[i].tolist(), float(f.scores[i])) for i in keep]
    return step


def _ultralytics(kind: str, gmc: str = 'none') -> Callable[[SeqInfo], Step]:
    from types import SimpleNamespace

    from ultralytics.engine.results import Boxes
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    cfg = YAML.load(check_yaml(f'{kind}.yaml'))
    cfg['gmc_method'] = gmc
    args = SimpleNamespace(**cfg)

    def make(info: SeqInfo) -> Step:
        tracker = BYTETracker(args) if kind == 'bytetrack' else BOTSORT(args)
        shape = (info.height, info.width)

        def step(f: FrameDetections, image: Any) -> list[tuple[int, list[float], float]]:
            data = np.concatenate([f.boxes, f.scores[:, None], f.class_ids[:, None]], axis=1)
            out = tracker.update(Boxes(data, shape), image)
            return [(int(r[4]), r[:4].tolist(), float(r[5])) for r in out]
        return step
    return make


def _supervision() -> Callable[[SeqInfo], Step]:
    import supervision as sv

    return partial(_supervision_step, sv)


def _supervision_step(sv: Any, info: SeqInfo) -> Step:
    tracker = sv.ByteTrack(frame_rate=int(round(info.frame_rate)))

    def step(f: FrameDetections, image: Any) -> list[tuple[int, list[float], float]]:
        out = tracker.update_with_detections(sv.Detections(
            xyxy=f.boxes.astype(np.float32), confidence=f.scores.astype(np.float32),
            class_id=f.class_ids.astype(int)))
        return [(int(t), b.tolist(), float(s)) for t, b, s
                in zip(out.tracker_id, out.xyxy, out.confidence)]
    return step


def _boxmot(kind: str) -> Callable[[SeqInfo], Step]:
    import boxmot

    def make(info: SeqInfo) -> Step:
        if kind == 'bytetrack':
            tracker = boxmot.ByteTrack(frame_rate=int(round(info.frame_rate)))
        else:
            tracker = boxmot.OcSort()
        blank = np.zeros((info.height, info.width, 3), np.uint8)

        def step(f: FrameDetections, image: Any) -> list[tuple[int, list[float], float]]:
            dets = np.concatenate([f.boxes, f.scores[:, None], f.class_ids[:, None]], axis=1)
            out = tracker.update(dets.astype(np.float32), blank)
            return [(int(r[4]), r[:4].tolist(), float(r[5])) for r in np.asarray(out)]
        return step
    return make


def trackers(images: bool) -> dict[str, Callable[[SeqInfo], Step]]:
    """Available trackers by name (peers that do not import are skipped, saying why)."""
    found: dict[str, Callable[[SeqInfo], Step]] = {'ours': _ours}
    makers: list[tuple[str, Callable[[], Callable[[SeqInfo], Step]]]] = [
        ('ultralytics ByteTrack', lambda: _ultralytics('bytetrack')),
        ('ultralytics BoT-SORT', lambda: _ultralytics('botsort')),
        ('supervision ByteTrack', _supervision),
        ('BoxMOT ByteTrack', lambda: _boxmot('bytetrack')),
        ('BoxMOT OC-SORT', lambda: _boxmot('ocsort')),
    ]
    if images:
        makers.append(('ultralytics BoT-SORT+GMC',
                       lambda: _ultralytics('botsort', 'sparseOptFlow')))
    for name, maker in makers:
        try:
            found[name] = maker()
        except ImportError as exc:
            print(f'skipped {name}: {exc}')
    return found


# -- run ---------------------------------------------------------------------------------------
def _run_set(make: Callable[[SeqInfo], Step],
             sequences: list[tuple[SeqInfo, list[FrameDetections], list[Any]]],
             ) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for info, frames, images in sequences:
        step = make(info)
        rows: list[Row] = []
        for k, f in enumerate(frames):
            for ident, box, score in step(f, images[k] if images else None):
                rows.append((f.frame, ident, *box, score))  # type: ignore[arg-type]
        out[info.folder.name] = rows
    return out


def run(data: Path, sets: list[str], rounds: int, warmup: int, images: bool,
        report: Path | None) -> None:
    """Score and time every tracker on ``sets``."""
    from darknet53_ros.tools.track_eval import COMBINED, evaluate_tracking

    summary: dict[str, Any] = {}
    for name in sets:
        folder = data / name
        sequences = []
        for info in find_sequences(folder):
            frames = read_detections(folder / 'det' / f'{info.folder.name}.txt', info)
            pictures: list[Any] = []
            if images and name in ('eval', 'n1'):
                import cv2
                pictures = [cv2.imread(str(info.image_path(k)))
                            for k in range(1, info.length + 1)]
            sequences.append((info, frames, pictures))
        total = sum(len(f) for _, f, _ in sequences)
        dets = sum(len(x.scores) for _, f, _ in sequences for x in f)
        chosen = {k: v for k, v in trackers(images and name in ('eval', 'n1')).items()}
        funcs = {k: partial(_run_set, m, sequences) for k, m in chosen.items()}
        paired = paired_timing(funcs, rounds, warmup)
        print(f'\n== {name}: {len(sequences)} sequences, {total} frames, '
              f'{dets / max(total, 1):.1f} detections per frame; {paired.load_text()}')
        print(f'{"tracker":26s} {"HOTA":>6s} {"IDF1":>6s} {"AssA":>6s} {"IDSW":>5s} '
              f'{"ms/frame":>9s}  ours faster by (median, p10, p90)')
        table = {}
        for tracker_name in chosen:
            with tempfile.TemporaryDirectory() as tmp:
                results = Path(tmp) / 'res'
                results.mkdir()
                for seq, rows in paired.results[tracker_name].items():
                    write_results(results / f'{seq}.txt', rows)
                scores = evaluate_tracking(folder, results)
            c = scores[COMBINED]
            per_frame = paired.timings[tracker_name].median / total
            ratio = '' if tracker_name == 'ours' else str(paired.ratio(tracker_name, 'ours'))
            print(f'{tracker_name:26s} {100 * c["HOTA"]:6.2f} {100 * c["IDF1"]:6.2f} '
                  f'{100 * c["AssA"]:6.2f} {int(c["IDSW"]):5d} {per_frame:9.3f}  {ratio}')
            r = paired.ratio(tracker_name, 'ours')
            table[tracker_name] = {
                'HOTA': c['HOTA'], 'IDF1': c['IDF1'], 'AssA': c['AssA'], 'IDSW': c['IDSW'],
                'ms_per_frame': per_frame,
                'ms_per_frame_p10': paired.timings[tracker_name].stat(10) / total,
                'ms_per_frame_p90': paired.timings[tracker_name].stat(90) / total,
                'ratio_vs_ours': [r.median, r.p10, r.p90],
                'per_sequence_hota': {s: v['HOTA'] for s, v in scores.items() if s != COMBINED}}
        summary[name] = {'frames': total, 'detections_per_frame': dets / max(total, 1),
                         'load': paired.load_text(), 'trackers': table}
    if report is not None:
        report.write_text(json.dumps(summary, indent=1))
        print(f'\nwrote {report}')


def plot(summary: dict[str, Any], path: Path) -> None:
    """HOTA, IDF1 and time per frame of every tracker per set (matplotlib)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    sets = list(summary)
    names = list(summary[sets[0]]['trackers'])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        x = np.arange(len(sets)) + (k - (len(names) - 1) / 2) * width
        for axis, key, scale in ((axes[0], 'HOTA', 100), (axes[1], 'IDF1', 100),
                                 (axes[2], 'ms_per_frame', 1)):
            values = [summary[s]['trackers'].get(name, {}).get(key, np.nan) * scale
                      for s in sets]
            axis.bar(x, values, width, label=name)
    for axis, title in zip(axes, ('HOTA (%)', 'IDF1 (%)', 'time per frame (ms, log)')):
        axis.set_xticks(np.arange(len(sets)))
        axis.set_xticklabels([f'{s}\n{summary[s]["detections_per_frame"]:.0f} det/frame'
                              for s in sets])
        axis.set_title(title)
        axis.grid(axis='y', alpha=0.3)
    axes[2].set_yscale('log')
    axes[0].legend(fontsize=7, loc='lower left')
    fig.suptitle('Trackers on identical demo-model detections, held-out synthetic sequences')
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('step', choices=('prepare', 'run'))
    parser.add_argument('--data', type=Path, required=True, help='sequences and detections')
    parser.add_argument('--sets', nargs='+', default=[s for s in SETS
                                                      if not s.startswith(('tune', 'smoke'))],
                        choices=list(SETS))
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--images', action='store_true',
                        help='also BoT-SORT with camera motion compensation (reads the images)')
    parser.add_argument('--report', type=Path, help='write the figures as JSON here')
    parser.add_argument('--plot', type=Path, help='plot the --report JSON into this image')
    args = parser.parse_args()
    if args.step == 'prepare':
        prepare(args.data, args.sets)
    else:
        run(args.data, args.sets, args.rounds, args.warmup, args.images, args.report)
    if args.plot is not None and args.report is not None:
        plot(json.loads(args.report.read_text()), args.plot)


if __name__ == '__main__':
    sys.exit(main())
