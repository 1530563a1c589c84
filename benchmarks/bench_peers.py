"""Pre- and post-processing of one 640x480 frame at 416x416 against what users would write.

Run: ``python benchmarks/bench_peers.py [--rounds 400] [--warmup 20]``. On identical inputs
(one synthetic robot-camera frame; YOLOv3-416-like outputs, 10,647 boxes x 80 classes,
thresholds 0.25 / 0.45) it times, interleaved round by round in alternating order with
:func:`darknet53_ros.tools.timing.paired_timing`:

* this project (``Preprocessor``, ``postprocess``),
* a NumPy pre/post written the tensorrt_demos way (``tools/baselines.py``),
* OpenCV DNN (letterbox canvas + ``blobFromImage``; ``NMSBoxesBatched``),
* Ultralytics' ``LetterBox`` / ``non_max_suppression`` when Ultralytics is installed (its
  letterbox rounds the padding its own way: a 1-pixel shift of part of the image is reported,
  not refused; its detections must agree like the others').

Before timing it checks that every implementation's pre-processed tensor is within 1/255 of
ours and that their detections agree. Pre-processing is timed twice: hot (the calls back to
back, the frame and buffers in cache) and as in a detection pipeline, each call right after an
untimed ONNX Runtime run of the bundled demo model at 416 (cold caches and thread pools, what
a node sees). Prints medians, paired ratios (median, p10, p90 of the per-round ratio) and the
machine's load.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
import sys
import tempfile
from typing import Any

import numpy as np

from darknet53_ros.inference.detector import Detector
from darknet53_ros.inference.postprocess import postprocess
from darknet53_ros.inference.preprocess import Preprocessor
from darknet53_ros.tools import baselines
from darknet53_ros.tools.bench import exported_models
from darknet53_ros.tools.timing import Paired, paired_timing
from darknet53_ros.training.synthetic import generate_scene

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nms import synthetic_outputs

SIZE = 416
CONF, NMS = 0.25, 0.45


def _ultralytics_nms() -> Callable[..., Any]:
    """``non_max_suppression`` (``ultralytics.utils.nms`` from 8.3.x, ``utils.ops`` before)."""
    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression
    return non_max_suppression  # type: ignore[no-any-return]


def ultralytics_ops(shape: tuple[int, int]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Ultralytics' pre (``LetterBox``, then the predictor's BGR->RGB, CHW, float, /255) and
    post (``non_max_suppression`` with ``multi_label=True``: every (box, class) pair above the
    threshold, as ours; ``scale_boxes`` back to the ``shape`` source image, clipped) on the
    contract's outputs. Raises ImportError when Ultralytics is not installed."""
    import cv2

    threads = cv2.getNumThreads()
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    # Ultralytics calls cv2.setNumThreads(0) on import (for its data loaders): restore
    # OpenCV's threads, or every implementation's resize would run on one core.
    cv2.setNumThreads(threads)

    nms = _ultralytics_nms()
    letterbox = LetterBox((SIZE, SIZE), auto=False, scaleup=True, padding_value=127)

    def pre(frame: np.ndarray) -> np.ndarray:
        image = letterbox(image=frame)
        return np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1), np.float32)[None] / 255

    def post(boxes: np.ndarray, scores: np.ndarray) -> baselines.Found:
        xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]],
                              axis=1)
        pred = torch.from_numpy(np.concatenate([xywh, scores], axis=1).T[None].copy())
        kept = nms(pred, CONF, NMS, multi_label=True, max_det=100)[0]
        kept[:, :4] = scale_boxes((SIZE, SIZE), kept[:, :4], shape)
        out = kept.numpy()
        return baselines.Found(out[:, :4], out[:, 4], out[:, 5].astype(np.int64))

    return pre, post


def report(title: str, paired: Paired, rounds: int, warmup: int, names: list[str]) -> None:
    """Medians and paired ratios against ``ours`` of ``names``."""
    print(f'\n{title}: {rounds} rounds after {warmup} warm-up, alternating order; '
          f'{paired.load_text()}')
    for name in names:
        line = f'  {name:28s} {paired.timings[name].median * 1e3:8.0f} us median'
        if name != 'ours':
            line += f'   ours is {paired.ratio(name, "ours")} faster'
        print(line)


def after_inference(functions: dict[str, Callable[[], Any]], rounds: int, warmup: int,
                    ) -> Paired:
    """Time ``functions`` each right after an untimed inference run of the demo model."""
    with tempfile.TemporaryDirectory() as folder:
        model = exported_models(Path(folder), [(SIZE, SIZE)])[0]
        with Detector.from_model(model) as detector:
            batch = np.random.default_rng(0).random((1, 3, SIZE, SIZE), np.float32)
            timed = {}
            for index, (name, function) in enumerate(functions.items()):
                timed[f'infer {index}'] = partial(detector.infer, batch)
                timed[name] = function
            blocks = [(f'infer {i}', name) for i, name in enumerate(functions)]
            return paired_timing(timed, rounds, warmup, blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=400, help='timed rounds')
    parser.add_argument('--warmup', type=int, default=20, help='discarded rounds')
    args = parser.parse_args()
    frame = generate_scene(99, 0, 640, 480)[0]
    boxes, scores = synthetic_outputs(num_boxes=10647, num_classes=80, objects=20,
                                      width=SIZE, height=SIZE)
    ours = Preprocessor(SIZE, SIZE)
    tensor, (transform,) = ours(frame)
    tensor = tensor.copy()
    pre: dict[str, Callable[[], Any]] = {
        'ours': lambda: ours(frame),
        'numpy (tensorrt_demos way)': lambda: baselines.numpy_pre(frame, SIZE, SIZE),
        'OpenCV DNN': lambda: baselines.opencv_pre(frame, SIZE, SIZE),
    }
    mine = postprocess(boxes[None], scores[None], [transform], CONF, NMS, 100)[0]
    found = baselines.Found(mine.boxes, mine.scores, mine.class_ids)
    post: dict[str, Callable[[], Any]] = {
        'ours': lambda: postprocess(boxes[None], scores[None], [transform], CONF, NMS, 100),
        'numpy (tensorrt_demos way)': lambda: baselines.numpy_post(boxes, scores, transform,
                                                                   CONF, NMS),
        'OpenCV DNN': lambda: baselines.opencv_post(boxes, scores, transform, CONF, NMS),
    }
    try:
        ultra_pre, ultra_post = ultralytics_ops(frame.shape[:2])
    except ImportError as exc:
        print(f'Ultralytics skipped: {exc}')
    else:
        pre['Ultralytics'] = lambda: ultra_pre(frame)
        post['Ultralytics'] = lambda: ultra_post(boxes, scores)
    for name in list(pre)[1:]:
        diff = np.abs(pre[name]()[0] - tensor)
        print(f'pre-processed tensor {name}: max |diff| vs ours {diff.max() * 255:.2f}/255, '
              f'{np.mean(diff > 1 / 255 + 1e-6):.2%} of values beyond 1/255')
        if diff.max() > 1 / 255 + 1e-6 and name != 'Ultralytics':
            raise SystemExit(f'{name}: pre-processing differs from ours by {diff.max():.4f}')
    for name in list(post)[1:]:
        if not baselines.same_detections(found, post[name]()):
            raise SystemExit(f'{name}: detections differ from ours; nothing timed')
    print(f'640x480 frame at {SIZE}x{SIZE}, outputs 10647x80, conf {CONF}, nms {NMS}: all '
          f'implementations give the same {len(mine)} detections')
    for stage, functions in (('preprocess, hot', pre), ('postprocess', post)):
        report(stage, paired_timing(functions, args.rounds, args.warmup), args.rounds,
               args.warmup, list(functions))
    report('preprocess, each call after an inference run (as in a pipeline)',
           after_inference(pre, args.rounds, args.warmup), args.rounds, args.warmup, list(pre))
    both = paired_timing({'pre': pre['ours'], 'post': post['ours']}, args.rounds, args.warmup)
    print(f'\nours pre + post: {float(np.median(both.per_round("pre", "post"))):.3f} ms per '
          'frame (median of per-round sums)')


if __name__ == '__main__':
    main()
