"""Tracking scores with TrackEval (optional dependency): HOTA, DetA, AssA, IDF1, MOTA, IDSW.

Ground truth is a folder of MOTChallenge sequences (``darknet53 synth --sequences``, or MOT17's
``train/``), results a folder of ``<sequence>.txt`` files (``darknet53 track``). TrackEval's
``MotChallenge2DBox`` dataset reads both as they are; its pedestrian-specific pre-processing
(MOT17 classes: class 2 is a distractor there) is switched off, so every ground-truth row with
a non-zero flag counts, whatever its class: the scores are class-agnostic (identities are what
is scored; a tracker that mixes classes up loses through the boxes it matches).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from darknet53_ros.errors import ConfigError, DatasetError
from darknet53_ros.io.mot import find_sequences

__all__ = ['METRICS', 'evaluate_tracking', 'format_table']

METRICS = ('HOTA', 'DetA', 'AssA', 'IDF1', 'MOTA', 'IDSW', 'FP', 'FN', 'IDs', 'GT_IDs')
"""The scores :func:`evaluate_tracking` returns per sequence (HOTA, DetA, AssA averaged over
TrackEval's IoU thresholds; IDF1, MOTA at IoU 0.5; counts as integers)."""

COMBINED = 'COMBINED'


def _trackeval() -> Any:
    try:
        import trackeval
    except ImportError:
        raise ConfigError('track-eval needs TrackEval: pip install trackeval (in a venv: its '
                          'wheel asks for OpenCV 5; `pip install --no-deps trackeval '
                          'tabulate` keeps your OpenCV)') from None
    return trackeval


def evaluate_tracking(gt: str | os.PathLike[str], results: str | os.PathLike[str],
                      sequences: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Score the result files in ``results`` against the sequences in ``gt``.

    Args:
        gt: a sequence folder or a folder of them (``seqinfo.ini``, ``gt/gt.txt``).
        results: folder of ``<sequence name>.txt`` result files.
        sequences: names to score (default: every sequence in ``gt``).

    Returns:
        ``{sequence: {metric: value}}`` for :data:`METRICS`, plus ``COMBINED`` over all.

    Raises:
        ConfigError: TrackEval is not installed.
        DatasetError: a sequence without ground truth or without a result file.
    """
    trackeval = _trackeval()
    infos = find_sequences(gt)
    names = [i.folder.name for i in infos]
    if sequences:
        unknown = sorted(set(sequences) - set(names))
        if unknown:
            raise DatasetError(f'{gt}: no sequence {", ".join(unknown)}')
        infos = [i for i in infos if i.folder.name in set(sequences)]
    results = Path(results)
    for info in infos:
        if not (info.folder / 'gt' / 'gt.txt').is_file():
            raise DatasetError(f'{info.folder}: no gt/gt.txt (a test sequence?)')
        if not (results / f'{info.folder.name}.txt').is_file():
            raise DatasetError(f'{results}: no result file {info.folder.name}.txt')
    gt_root = infos[0].folder.parent
    dataset_config = {
        'GT_FOLDER': str(gt_root), 'TRACKERS_FOLDER': str(results.resolve().parent),
        'TRACKERS_TO_EVAL': [results.resolve().name], 'TRACKER_SUB_FOLDER': '',
        'OUTPUT_FOLDER': None, 'OUTPUT_SUB_FOLDER': '', 'SKIP_SPLIT_FOL': True,
        'SEQ_INFO': {i.folder.name: i.length for i in infos}, 'DO_PREPROC': False,
        'BENCHMARK': 'MOT17', 'SPLIT_TO_EVAL': 'all', 'PRINT_CONFIG': False,
        'CLASSES_TO_EVAL': ['pedestrian'],
    }
    eval_config = {
        'USE_PARALLEL': False, 'PRINT_RESULTS': False, 'PRINT_ONLY_COMBINED': False,
        'PRINT_CONFIG': False, 'TIME_PROGRESS': False, 'DISPLAY_LESS_PROGRESS': True,
        'OUTPUT_SUMMARY': False, 'OUTPUT_EMPTY_CLASSES': False, 'OUTPUT_DETAILED': False,
        'PLOT_CURVES': False, 'BREAK_ON_ERROR': True, 'RETURN_ON_ERROR': False,
        'LOG_ON_ERROR': None,
    }
    metrics = [trackeval.metrics.HOTA({'PRINT_CONFIG': False}),
               trackeval.metrics.CLEAR({'PRINT_CONFIG': False}),
               trackeval.metrics.Identity({'PRINT_CONFIG': False})]  # + Count, added by it
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = trackeval.Evaluator(eval_config)
        dataset = trackeval.datasets.MotChallenge2DBox(dataset_config)
        output, _ = evaluator.evaluate([dataset], metrics)
    per_seq = output['MotChallenge2DBox'][results.resolve().name]
    scores: dict[str, dict[str, float]] = {}
    for seq, classes in per_seq.items():
        values = classes['pedestrian']
        hota, clear, ident, count = (values['HOTA'], values['CLEAR'], values['Identity'],
                                     values['Count'])
        scores[COMBINED if seq == 'COMBINED_SEQ' else seq] = {
            'HOTA': float(np.mean(hota['HOTA'])), 'DetA': float(np.mean(hota['DetA'])),
            'AssA': float(np.mean(hota['AssA'])), 'IDF1': float(ident['IDF1']),
            'MOTA': float(clear['MOTA']), 'IDSW': int(clear['IDSW']),
            'FP': int(clear['CLR_FP']), 'FN': int(clear['CLR_FN']),
            'IDs': int(count['IDs']), 'GT_IDs': int(count['GT_IDs'])}
    return scores


def format_table(scores: dict[str, dict[str, float]]) -> str:
    """A text table: one row per sequence, ``COMBINED`` last; scores in percent."""
    percent = ('HOTA', 'DetA', 'AssA', 'IDF1', 'MOTA')
    names: list[str] = sorted(n for n in scores if n != COMBINED) + (
        [COMBINED] if COMBINED in scores else [])
    width = max([len(n) for n in names] + [8])
    lines = [f'{"sequence":{width}s} ' + ' '.join(f'{m:>7s}' for m in METRICS)]
    for name in names:
        row = scores[name]
        cells = [f'{100 * row[m]:7.2f}' if m in percent else f'{int(row[m]):7d}'
                 for m in METRICS]
        lines.append(f'{name:{width}s} ' + ' '.join(cells))
    return '\n'.join(lines)
