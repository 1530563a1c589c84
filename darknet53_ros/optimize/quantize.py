"""Explicit INT8 post-training quantisation: insert Q/DQ pairs into a contract ONNX model.

The output is a *Q/DQ* ("explicit quantisation") ONNX model, opset 13, that TensorRT (8.5, 10,
11) builds into an INT8 engine without a calibrator and that ONNX Runtime runs as is. The
placement rules and the graph rewriting are :mod:`darknet53_ros.optimize.qdq`'s; the activation
ranges come from calibration images run through ONNX Runtime with the same letterbox
preprocessing as inference (:func:`darknet53_ros.inference.preprocess.preprocess`) and one of
the methods of :mod:`darknet53_ros.optimize.calibration_stats` (``minmax``, ``percentile``,
``entropy``). :func:`quantize_model` runs the pipeline, measures the INT8 error against FP32
on held-out images (:func:`compare_outputs`) and writes a JSON report.

The calibration set must be disjoint from any data the model is evaluated on: the report
records the path/key and the pixel hash (:func:`darknet53_ros.optimize.calibration.image_digest`)
of every calibration and held-out image so an evaluation can check it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
import datetime
import json
import logging
from pathlib import Path
import typing
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, ModelError
from darknet53_ros.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from darknet53_ros.inference.preprocess import preprocess as letterbox
from darknet53_ros.optimize.calibration import (
    CalibrationImage,
    calibration_hash,
    calibration_images,
    image_digest,
    image_file,
)
from darknet53_ros.optimize.calibration_stats import (
    METHODS,
    Method,
    collect_histograms,
    cpu_session,
)
from darknet53_ros.optimize.qdq import (
    EPS,
    INT8_MAX,
    OPSET,
    TARGETS,
    WEIGHT_FORMATS,
    Target,
    default_keep_fp,
    insert_qdq,
    load_model,
    model_input_size,
    name_nodes,
    plan_quantization,
)
from darknet53_ros.version import __version__

_LOG = logging.getLogger(__name__)

# typing.Callable: a run-time alias (collections.abc.Callable[...] is Python 3.9+).
Preprocess = typing.Callable[[np.ndarray, int, int], np.ndarray]

DISJOINT_NOTE = ('The calibration images must be disjoint from every evaluation set; their '
                 'keys and pixel sha256 digests are listed here so evaluation can check.')


def letterbox_one(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The default calibration preprocessing: one BGR image -> ``[3, H, W]`` float32 (the
    inference letterbox, :func:`darknet53_ros.inference.preprocess.preprocess`)."""
    batch, _ = letterbox([image], width, height)
    return batch[0]


@dataclass(frozen=True)
class _Sample:
    key: str
    digest: str
    tensor: np.ndarray


def _samples(images: Iterable[Any], width: int, height: int, preprocess: Preprocess | None,
             prefix: str) -> Iterator[_Sample]:
    """Preprocess calibration inputs lazily into ``[3, H, W]`` float32 samples."""
    prep = preprocess or letterbox_one
    for i, item in enumerate(images):
        if isinstance(item, CalibrationImage):
            key, image = item.key, item.image
        elif isinstance(item, (str, Path)):
            key, image = str(item), image_file(item).image
        else:
            key, image = f'{prefix}[{i}]', np.asarray(item)
        if image.dtype == np.float32 and image.shape == (3, height, width):
            tensor = image
        else:
            tensor = np.asarray(prep(image, width, height), np.float32)
            if tensor.shape != (3, height, width):
                raise ModelError(f'{key}: preprocess returned shape {tensor.shape}, '
                                 f'expected {(3, height, width)}')
        yield _Sample(key, image_digest(image), tensor)


# --------------------------------------------------------------------------------------------
# Accuracy check


def compare_outputs(fp32: Any, int8: Any, samples: Sequence[np.ndarray],
                    top_k: int = 10) -> dict[str, Any]:
    """Output error of the INT8 model against FP32 on ``samples`` (held-out images).

    Returns per output ``mean_abs``/``max_abs`` differences and, for contract models, the
    share of images whose top-scoring (prediction, class) agrees and the mean overlap of the
    top-``top_k`` sets.
    """
    if not samples:
        return {'images': 0}
    s32, s8 = cpu_session(fp32), cpu_session(int8)
    input_name = s32.get_inputs()[0].name
    names = [o.name for o in s32.get_outputs()]
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    top1, overlap = [], []
    for sample in samples:
        batch = sample[None]
        ref = dict(zip(names, s32.run(names, {input_name: batch})))
        got = dict(zip(names, s8.run(names, {input_name: batch})))
        for name in names:
            diffs[name].append(np.abs(ref[name].astype(np.float64) - got[name]).ravel())
        if 'scores' in ref:
            a, b = ref['scores'][0].ravel(), got['scores'][0].ravel()
            k = min(top_k, a.size)
            ta, tb = np.argsort(-a)[:k], np.argsort(-b)[:k]
            top1.append(float(ta[0] == tb[0]))
            overlap.append(len(set(ta.tolist()) & set(tb.tolist())) / k)
    result: dict[str, Any] = {'images': len(samples), 'outputs': {}}
    for name in names:
        d = np.concatenate(diffs[name])
        result['outputs'][name] = {'mean_abs': float(d.mean()), 'max_abs': float(d.max())}
    if top1:
        result['top1_agreement'] = float(np.mean(top1))
        result[f'top{top_k}_overlap'] = float(np.mean(overlap))
    return result


# --------------------------------------------------------------------------------------------
# Entry point


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did; :meth:`to_json` is what the report file holds."""

    data: dict[str, Any]

    def to_json(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.data, indent=2, sort_keys=False) + '\n'

    def summary(self) -> str:
        """A short human-readable summary."""
        d = self.data
        lines = [
            f"INT8 Q/DQ model: {d['output']}",
            f"  method {d['method']}"
            + (f" ({d['percentile']}%)" if d['method'] == 'percentile' else '')
            + f", target {d['target']}, weights {d['weight_format']}"
            + f", per-channel {d['per_channel']}",
            f"  calibration images: {d['calibration']['count']}, "
            f"quantised convs: {len(d['quantized_convs'])}, "
            f"activation tensors: {len(d['tensors'])}",
            f"  kept in floating point: {', '.join(d['kept_fp']) or 'none'}",
        ]
        err = d.get('error', {})
        if err.get('images'):
            lines.append(f"  held-out images: {err['images']}")
            for name, stats in err['outputs'].items():
                lines.append(f"    {name}: mean |diff| {stats['mean_abs']:.4g}, "
                             f"max |diff| {stats['max_abs']:.4g}")
            if 'top1_agreement' in err:
                lines.append(f"    top-1 agreement {err['top1_agreement']:.2%}, "
                             f"top-10 overlap {err.get('top10_overlap', 0.0):.2%}")
        else:
            lines.append('  no held-out images: output error vs FP32 not measured')
        lines.append(f'  note: {DISJOINT_NOTE}')
        return '\n'.join(lines)


def quantize_model(model_path: str | Path | Any, calib_images: Iterable[Any] | str | Path,
                   out_path: str | Path | None = None, method: Method = 'percentile',
                   percentile: float = 99.99, keep_fp: Sequence[str] | None = None,
                   per_channel: bool = True, preprocess: Preprocess | None = None,
                   held_out: Iterable[Any] = (), target: Target = 'tensorrt',
                   weight_format: str | None = None, report_path: str | Path | None = None,
                   batch_size: int = 1, progress: bool = True,
                   print_summary: bool = False) -> QuantizationReport:
    """Calibrate ``model_path`` on ``calib_images`` and write the Q/DQ INT8 model.

    Args:
        model_path: a contract ONNX model (path or ``onnx.ModelProto``).
        calib_images: BGR ``uint8`` images,
            :class:`~darknet53_ros.optimize.calibration.CalibrationImage` items, image paths,
            already preprocessed ``[3, H, W]`` float32
            arrays, or a source (folder, video, rosbag2) given to
            :func:`darknet53_ros.optimize.calibration.calibration_images`.
        out_path: where to write the quantised model (atomically); ``None`` writes nothing.
        method: ``'entropy'``, ``'percentile'`` or ``'minmax'``.
        percentile: percentile of ``|x|`` for ``method='percentile'``.
        keep_fp: node names or fnmatch patterns kept in floating point; ``None`` keeps
            :func:`default_keep_fp` (first conv and heads), ``()`` keeps nothing.
        per_channel: per-output-channel weight scales (``axis=0``).
        preprocess: ``f(image, width, height) -> [3, H, W]`` float32; defaults to
            :func:`darknet53_ros.inference.preprocess.preprocess` (Darknet letterbox).
        held_out: images (same kinds as ``calib_images``) used only to measure the INT8
            error against FP32; they must be disjoint from the calibration images.
        target: ``'tensorrt'`` (default) or ``'onnxruntime'`` (see the module docstring).
        weight_format: ``'qdq'`` (Q/DQ on FP32 weights; the default for TensorRT, whose
            8.x parser rejects int8 initializers) or ``'int8'`` (int8 initializers; the
            default for ONNX Runtime).
        report_path: where to write the JSON report (atomically).
        batch_size: calibration batch size.
        progress: show a tqdm progress bar.
        print_summary: print :meth:`QuantizationReport.summary` when done.

    Returns:
        The :class:`QuantizationReport` (also written to ``report_path``).
    """
    import onnx

    if method not in METHODS:
        raise ConfigError(f'calibration method {method!r}: expected one of {METHODS}')
    if batch_size < 1:
        raise ConfigError(f'batch size {batch_size}: must be >= 1')
    if target not in TARGETS:
        raise ConfigError(f'quantisation target {target!r}: expected one of {TARGETS}')
    if weight_format is None:
        weight_format = 'qdq' if target == 'tensorrt' else 'int8'
    if weight_format not in WEIGHT_FORMATS:
        raise ConfigError(f'weight format {weight_format!r}: expected one of {WEIGHT_FORMATS}')
    if target == 'tensorrt' and weight_format == 'int8':
        _LOG.warning('int8 weight initializers need TensorRT >= 10 (8.x rejects them)')
    model = load_model(model_path)
    source_path = None if isinstance(model_path, onnx.ModelProto) else Path(model_path)
    name_nodes(model)
    input_name, width, height = model_input_size(model)
    if isinstance(calib_images, (str, Path)):
        calib_images = calibration_images(calib_images)
    held = list(_samples(held_out, width, height, preprocess, 'held_out'))
    held_digests = {s.digest: s.key for s in held}
    calib_meta: list[tuple[str, str]] = []

    def calibration_tensors() -> Iterator[np.ndarray]:
        for sample in _samples(calib_images, width, height, preprocess, 'calib'):
            if sample.digest in held_digests:
                raise ConfigError(f'{sample.key}: also a held-out image '
                                  f'({held_digests[sample.digest]}); the sets must be disjoint')
            calib_meta.append((sample.key, sample.digest))
            yield sample.tensor

    keep = default_keep_fp(model) if keep_fp is None else list(keep_fp)
    plan = plan_quantization(model, keep, target)
    if not plan.convs:
        raise ModelError('no Conv node can be quantised (all kept or no constant weights)')
    tensors = list(plan.activations)
    hists = collect_histograms(model, tensors, calibration_tensors(), batch_size, progress)
    if not calib_meta:
        raise ConfigError('no calibration images')
    amax = {name: hists[name].amax_for(method, percentile) for name in tensors}
    qmodel = insert_qdq(model, plan, amax, per_channel, weight_format, target)
    calib_sha = calibration_hash(digest for _, digest in calib_meta)
    onnx.helper.set_model_props(qmodel, {
        **{p.key: p.value for p in qmodel.metadata_props},
        'quantization': json.dumps({'method': method, 'target': target,
                                    'calibration_images': len(calib_meta),
                                    'calibration_sha256': calib_sha}),
    })
    onnx.checker.check_model(qmodel)
    error = compare_outputs(model, qmodel, [s.tensor for s in held])
    if out_path is not None:
        atomic_write_bytes(out_path, qmodel.SerializeToString())

    data: dict[str, Any] = {
        'producer': f'darknet53_ros {__version__}',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'model': str(source_path) if source_path else '<in memory>',
        'model_sha256': sha256_file(source_path) if source_path else None,
        'output': str(out_path) if out_path is not None else None,
        'input': {'name': input_name, 'width': width, 'height': height},
        'method': method,
        'percentile': percentile,
        'target': target,
        'weight_format': weight_format,
        'per_channel': per_channel,
        'opset': OPSET,
        'kept_fp': plan.kept,
        'quantized_convs': plan.convs,
        'calibration': {
            'count': len(calib_meta),
            'sha256': calib_sha,
            'images': [{'key': key, 'sha256': digest} for key, digest in calib_meta],
            'note': DISJOINT_NOTE,
        },
        'held_out': {'count': len(held),
                     'images': [{'key': s.key, 'sha256': s.digest} for s in held]},
        'tensors': {name: {'amax': amax[name], 'scale': max(amax[name], EPS) / INT8_MAX,
                           'max_abs': hists[name].amax,
                           'conv_output': name in plan.conv_outputs,
                           'readers': plan.activations[name]}
                    for name in tensors},
        'error': error,
    }
    report = QuantizationReport(data)
    if report_path is not None:
        atomic_write_text(report_path, report.to_json())
    if print_summary:
        print(report.summary())
    _LOG.info('quantised %d convs, %d activation tensors (%s)', len(plan.convs), len(tensors),
              method)
    return report
