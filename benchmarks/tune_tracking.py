"""How the tracker's defaults were chosen: coordinate search on the training sequences only.

Run: ``python benchmarks/bench_tracking.py prepare --data DIR --sets tune tune20`` (sequences
of seeds 100 (6 objects, 320x256) and 110 (20 objects, 640x480) and the demo model's
detections), then ``python benchmarks/tune_tracking.py --data DIR`` (needs TrackEval). Each pass
varies one :class:`~darknet53_ros.tracking.TrackerConfig` field at a time over :data:`GRID`,
keeping a change when it raises the mean over the sets of HOTA + IDF1 (combined per set) by
more than 0.1 point; the evaluation sets of ``bench_tracking.py`` (other seeds) are never read
here.
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
    'match_iou': [0.1, 0.2, 0.3],
    'low_match_iou': [0.3, 0.4, 0.5],
    'tentative_iou': [0.2, 0.3, 0.5],
    'recovery_iou': [0.3, 0.5, 1.0],
    'max_lost_s': [0.5, 1.0, 2.0, 3.0],
    'min_hits': [1, 2, 3],
    'lost_growth': [0.0, 0.3, 1.0],
    'max_growth': [0.0, 0.3, 0.6],
    'growth': [{'lost_growth': g, 'max_growth': m} for g in (0.3, 1.0) for m in (0.3, 0.6)],
    'score_fusion': [False, True],
    'class_aware': [False, True],
    're_update': [False, True],
    'camera_motion': [False, True],
}


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
    parser.add_argument('--sets', nargs='+', default=['tune', 'tune20'])
    args = parser.parse_args()
    sets = []
    for name in args.sets:
        folder = args.data / name
        sets.append((folder, [(info, read_detections(folder / 'det' / f'{info.folder.name}.txt',
                                                     info)) for info in find_sequences(folder)]))

    def both(config: TrackerConfig) -> tuple[float, float]:
        scores = [score(folder, sequences, config) for folder, sequences in sets]
        return (sum(h for h, _ in scores) / len(scores), sum(i for _, i in scores) / len(scores))

    best = TrackerConfig()
    hota, idf1 = both(best)
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
                h, i = both(candidate)
                if h + i > hota + idf1 + 0.001:
                    best, hota, idf1, changed = candidate, h, i, True
                    print(f'pass {number + 1}: {name}={value}: HOTA {100 * h:.2f} '
                          f'IDF1 {100 * i:.2f}', flush=True)
        if not changed:
            break
    print(f'best: {best}')


if __name__ == '__main__':
    main()
