"""Engines that verify themselves: run a TensorRT engine and its source ONNX model (through
ONNX Runtime, the reference) on the same frames and record how well they agree.

:func:`verify_engine` preprocesses the frames once, runs both, and measures per output the
maximum and mean absolute difference, and on the detections at the node's thresholds the
matched-detection rate (same class, IoU >= :data:`MATCH_IOU`, greedy by score) and the IoU of
matched boxes. The result goes into the engine's metadata (``verification``), where the node
reads it at start (:func:`~darknet53_ros.inference.backends.engine_file.verification_status`).

Frames come from images, a video or a rosbag2 (any calibration source), or by default from
:func:`synthetic_frames`: a few generated scenes, enough to catch an engine that computes
something else than its model (wrong precision in the decode, broken Q/DQ placement, a bad
build), not a substitute for evaluating accuracy on real data.
"""
from __future__ import annotations

import datetime
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError, EngineError, SourceError
from darknet53_ros.fileio import sha256_file
from darknet53_ros.inference.backends.base import Backend
from darknet53_ros.inference.backends.cuda_runtime import AUTO
from darknet53_ros.inference.backends.engine_file import (
    AGREEMENT,
    read_engine_metadata,
    verification_status,
    write_metadata,
)
from darknet53_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend
from darknet53_ros.inference.postprocess import Detections, postprocess
from darknet53_ros.inference.preprocess import preprocess
from darknet53_ros.optimize.calibration import calibration_images

_LOG = logging.getLogger(__name__)

#: Boxes of the same class overlapping at least this much are the same detection.
MATCH_IOU = 0.5
DEFAULT_FRAMES = 8
SYNTHETIC = 'synthetic'


def synthetic_frames(count: int = DEFAULT_FRAMES, width: int = 640, height: int = 480,
                     seed: int = 0) -> list[np.ndarray]:
    """``count`` BGR ``uint8`` scenes: gradients, filled rectangles and ellipses, noise."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        base = rng.uniform(0, 255, 3).astype(np.float32)
        slope = rng.uniform(-0.2, 0.2, (2, 3)).astype(np.float32)
        frame = base + xs[..., None] * slope[0] + ys[..., None] * slope[1]
        image = np.clip(frame, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(2, 7))):
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            w, h = int(rng.integers(30, width // 2)), int(rng.integers(30, height // 2))
            if rng.random() < 0.5:
                cv2.rectangle(image, (x, y), (min(x + w, width - 1), min(y + h, height - 1)),
                              color, -1)
            else:
                cv2.ellipse(image, (x, y), (w // 2, h // 2), float(rng.uniform(0, 180)), 0,
                            360, color, -1)
        noise = rng.normal(0, 6, image.shape)
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames


def verification_frames(source: str | Path | None = None, count: int = DEFAULT_FRAMES,
                        topic: str | None = None) -> tuple[list[np.ndarray], str]:
    """Frames to verify with and a description of where they came from."""
    if count < 1:
        raise ConfigError(f'verification frames: {count} must be >= 1')
    if source is None or str(source) == SYNTHETIC:
        return synthetic_frames(count), f'{SYNTHETIC} ({count} frames)'
    frames = [item.image for item in itertools.islice(calibration_images(source, topic), count)]
    if not frames:
        raise SourceError(f'{source}: no frames to verify the engine with')
    return frames, str(source)


def output_differences(engine: dict[str, np.ndarray],
                       reference: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{output: {'max_abs_diff', 'mean_abs_diff'}}`` over the outputs both produced."""
    result = {}
    for name in sorted(set(engine) & set(reference)):
        a = np.asarray(engine[name], np.float64)
        b = np.asarray(reference[name], np.float64)
        if a.shape != b.shape:
            raise EngineError(f'output {name!r}: engine shape {a.shape}, reference {b.shape}')
        diff = np.abs(a - b)
        result[name] = {'max_abs_diff': float(diff.max(initial=0.0)),
                        'mean_abs_diff': float(diff.mean()) if diff.size else 0.0}
    return result


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    same = np.all(np.abs(others - box) <= 1e-3, axis=1)  # degenerate boxes (clipped flat)
    iou = np.where(union > 1e-9, inter / np.maximum(union, 1e-9), 0.0)
    return np.asarray(np.where(same, 1.0, iou))


def match_detections(engine: Detections, reference: Detections,
                     min_iou: float = MATCH_IOU) -> list[float]:
    """IoUs of the matched pairs: each reference detection (by descending score) takes the
    unmatched engine detection of its class with the highest IoU >= ``min_iou``."""
    used = np.zeros(len(engine), bool)
    ious: list[float] = []
    for i in np.argsort(-reference.scores, kind='stable'):
        candidates = np.flatnonzero(~used & (engine.class_ids == reference.class_ids[i]))
        if not len(candidates):
            continue
        overlap = _iou(reference.boxes[i], engine.boxes[candidates])
        best = int(np.argmax(overlap))
        if overlap[best] >= min_iou:
            used[candidates[best]] = True
            ious.append(float(overlap[best]))
    return ious


def detection_agreement(engine: list[Detections],
                        reference: list[Detections]) -> dict[str, Any]:
    """Matched-detection rate (matches over the larger count, 1 when both found nothing) and
    IoU of matched boxes, over all frames."""
    ious: list[float] = []
    engine_count = reference_count = 0
    for mine, theirs in zip(engine, reference):
        ious += match_detections(mine, theirs)
        engine_count += len(mine)
        reference_count += len(theirs)
    larger = max(engine_count, reference_count)
    return {
        'engine': engine_count, 'reference': reference_count, 'matched': len(ious),
        'match_rate': 1.0 if larger == 0 else len(ious) / larger,
        'mean_iou': float(np.mean(ious)) if ious else None,
        'min_iou': float(np.min(ious)) if ious else None,
    }


def compare_backends(engine: Backend, reference: Backend, frames: list[np.ndarray],
                     conf_threshold: float = 0.25, nms_threshold: float = 0.45,
                     ) -> dict[str, Any]:
    """Run both backends on ``frames`` (same preprocessing) and measure their agreement."""
    _, _, height, width = engine.input_shape
    batch, transforms = preprocess(frames, width, height)
    outputs = engine.infer(batch)
    expected = reference.infer(batch)
    names = engine.metadata.get('names')
    detections = [postprocess(out['boxes'], out['scores'], transforms, conf_threshold,
                              nms_threshold, names=names) for out in (outputs, expected)]
    agreement = detection_agreement(detections[0], detections[1])
    return {'outputs': output_differences(outputs, expected), 'detections': agreement,
            'conf_threshold': conf_threshold, 'nms_threshold': nms_threshold}


def verify_engine(engine_path: str | Path, onnx_path: str | Path | None = None,
                  source: str | Path | None = None, count: int = DEFAULT_FRAMES,
                  topic: str | None = None, conf_threshold: float = 0.25,
                  nms_threshold: float = 0.45, record: bool = True, device: int = 0,
                  cuda_runtime: str = AUTO) -> dict[str, Any]:
    """Verify ``engine_path`` against its ONNX model; record the result in its metadata.

    Args:
        engine_path: the ``.engine`` (with ``.engine.json``).
        onnx_path: the reference model (default: the metadata's ``onnx_path``; it must have
            the metadata's ``onnx_sha256``).
        source: images, video or rosbag2 (``None`` or ``'synthetic'``: generated frames).
        count: at most this many frames.
        topic: image topic of a bag with several.
        conf_threshold, nms_threshold: detection thresholds (the node's).
        record: write the result into ``NAME.engine.json`` (``verification``).
        device, cuda_runtime: where and how the engine runs.

    Returns:
        The verification record (``agrees`` says whether it is within :data:`AGREEMENT`).
    """
    metadata = read_engine_metadata(engine_path)
    model = Path(onnx_path or metadata.get('onnx_path') or '')
    if not model.is_file():
        raise EngineError(f'{engine_path}: reference ONNX model {str(model)!r} not found '
                          '(pass --model)')
    digest = sha256_file(model)
    if metadata.get('onnx_sha256') and digest != metadata['onnx_sha256']:
        raise EngineError(f'{model}: not the model {engine_path} was built from (sha256 '
                          f'{digest[:12]}..., metadata {str(metadata["onnx_sha256"])[:12]}...)')
    frames, described = verification_frames(source, count, topic)
    with TensorRTBackend(engine_path, device=device, cuda_runtime=cuda_runtime) as engine, \
            OnnxRuntimeBackend(model) as reference:
        result = compare_backends(engine, reference, frames, conf_threshold, nms_threshold)
        result['cuda_runtime'] = engine.details().get('cuda_runtime')
    detections = result['detections']
    result.update({
        'source': described, 'frames': len(frames), 'reference': str(model),
        'reference_sha256': digest, 'thresholds': dict(AGREEMENT),
        'verified_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
    })
    result['agrees'] = bool(
        detections['match_rate'] >= AGREEMENT['match_rate']
        and (detections['mean_iou'] is None or detections['mean_iou'] >= AGREEMENT['mean_iou']))
    if record:
        metadata['verification'] = result
        write_metadata(engine_path, metadata)
    level, message = verification_status(metadata if record else {'verification': result})
    _LOG.log(logging.WARNING if level == 'warning' else logging.INFO, '%s: %s', engine_path,
             message)
    return result
