"""How the tracker's defaults were chosen: coordinate search on the training sequences only.

Run: ``python benchmarks/bench_tracking.py prepare --data DIR --sets tune tune20 tune1
tune100`` (sequences of seeds 100 (6 objects, 320x256), 110 (20 objects, 640x480), 310 (1
object, 320x256) and 120 (100 objects, 1280x736), and the demo model's detections), then
``python benchmarks/tune_tracking.py --data DIR`` (needs TrackEval). Each pass varies one
:class:`~darknet53_ros.tracking.TrackerConfig` field at a time over :data:`GRID`, keeping a
change when it raises the mean over the sets of HOTA + IDF1 (combined per set) by more than
0.1 point and lowers no set's HOTA + IDF1 by more than :data:`MAX_SET_LOSS` (so one kind of
scene is not traded for another); the evaluation sets of ``bench_tracking.py`` (other seeds)
are never read here. ``--start KEY=VALUE ...`` starts the search from other settings than
the defaults.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import tempfile
from typing import Any

from darknet53_ros.io.mot import find_sequences, write_results
from darknet53_ros.tools.track import read_detections, track_frames
from darknet53_ros.tools.track_eval import COMBINED, evaluate_tracking
from darknet53_ros.tracking import TrackerConfig

GRID: dict[str, list[Any]] = {
    'high_score': [0.2, 0.3, 0.4, 0.5, 0.6],
    'new_score': [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    'low_score': [0.05, 0.1, 0.2],
    'match_iou': [0.1, 0.15, 0.2, 0.3],
    'low_match_iou': [0.2, 0.3, 0.4, 0.5],
    'tentative_iou': [0.2, 0.25, 0.3, 0.4, 0.5],
    'recovery_iou': [0.3, 0.4, 0.5, 0.6, 1.0],
    'max_lost_s': [0.5, 1.0, 2.0, 3.0, 4.0],
    'min_hits': [1, 2, 3],
    'lost_growth': [0.0, 0.3, 1.0],
    'max_growth': [0.0, 0.3, 0.6],
    'growth': [{'lost_growth': g, 'max_growth': m} for g in (0.3, 1.0) for m in (0.3, 0.6)],
    'score_fusion': [False, True],
    'class_aware': [False, True],
    're_update': [False, True],
    'camera_motion': [False, True],
    'min_track_score': [0.0, 0.2, 0.25, 0.3, 0.35, 0.4],
    'kalman_boxes': [False, True],
}


MAX_SET_LOSS = 0.005
"""Most a kept change may lower one set's HOTA + IDF1 (fractions: 0.5 points)."""


def score(folder: Path, sequences: list[Any], config: TrackerConfig) -> tuple[float, float]:
    """(HOTA, IDF1) of ``config`` over the set."""
    with tempfile.TemporaryDirectory() as tmp:
        for info, frames in sequences:
            write_results(Path(tmp) / f'{info.folder.name}.txt', track_frames(frames, config))
        combined = evaluate_tracking(folder, tmp)[COMBINED]
    return combined['HOTA'], combined['IDF1']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, required=True)
    parser.add_argument('--passes', type=int, default=2)
    parser.add_argument('--sets', nargs='+', default=['tune', 'tune20', 'tune1', 'tune100'])
    parser.add_argument('--start', nargs='+', default=[], metavar='KEY=VALUE',
                        help='start from these settings (e.g. min_track_score=0)')
    args = parser.parse_args()
    sets = []
    for name in args.sets:
        folder = args.data / name
        sets.append((folder, [(info, read_detections(folder / 'det' / f'{info.folder.name}.txt',
                                                     info)) for info in find_sequences(folder)]))

    def both(config: TrackerConfig) -> tuple[float, float, list[float]]:
        scores = [score(folder, sequences, config) for folder, sequences in sets]
        return (sum(h for h, _ in scores) / len(scores), sum(i for _, i in scores) / len(scores),
                [h + i for h, i in scores])

    from darknet53_ros.cli.track import parse_tracker_options

    best = TrackerConfig.from_dict(parse_tracker_options(args.start))
    hota, idf1, per_set = both(best)
    print(f'start: HOTA {100 * hota:.2f} IDF1 {100 * idf1:.2f}')
    for number in range(args.passes):
        changed = False
        for name, values in GRID.items():
            for value in values:
                change = value if isinstance(value, dict) else {name: value}
                if all(getattr(best, k) == v for k, v in change.items()):
                    continue
                try:
                    candidate = replace(best, **change)
                except Exception:
                    continue
                h, i, sets_now = both(candidate)
                worst = min(n - b for n, b in zip(sets_now, per_set))
                if h + i > hota + idf1 + 0.001 and worst >= -MAX_SET_LOSS:
                    best, hota, idf1, per_set, changed = candidate, h, i, sets_now, True
                    print(f'pass {number + 1}: {name}={value}: HOTA {100 * h:.2f} '
                          f'IDF1 {100 * i:.2f} (HOTA + IDF1 per set: '
                          f'{", ".join(f"{100 * v:.2f}" for v in per_set)})', flush=True)
        if not changed:
            break
    print(f'best: {best}')


if __name__ == '__main__':
    main()
