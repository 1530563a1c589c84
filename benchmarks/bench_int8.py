"""ONNX Runtime latency of the INT8 Q/DQ model against FP32 (YOLOv3 at 416x416 by default).

Run: ``python benchmarks/bench_int8.py [--model M.onnx] [--size 416] [--runs 7]``. Without
``--model`` it builds YOLOv3 (80 classes) with random weights through the package exporter.
Both quantisation targets are measured: ``tensorrt`` (the Q/DQ placement TensorRT wants:
activation inputs and weights of Convs, residual Adds, FP32 biases) and ``onnxruntime`` (also
Conv outputs and int32 biases, which ONNX Runtime fuses into QLinearConv). Calibration uses the
Darknet sample images in ``../shared/darknet/images`` when present, else synthetic images.
Prints the median latency (batch 1) of each model and the ratio FP32 / INT8.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import tempfile
import time

import numpy as np

from darknet53_ros.model.cfg import parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.onnx_export import export_onnx
from darknet53_ros.model.weights import random_weights
from darknet53_ros.optimize.quantize import quantize_model

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'darknet'


def build_yolov3(path: Path, size: int) -> None:
    """Export YOLOv3 with random weights at ``size`` x ``size`` to ``path``."""
    network = parse_cfg(yolov3_cfg(width=size, height=size), source='yolov3.cfg')
    export_onnx(network, random_weights(network, seed=0), path)


def calibration_images(count: int) -> list[np.ndarray]:
    """Sample images (BGR uint8): the Darknet samples, else smooth random images."""
    files = sorted((SHARED / 'images').glob('*.jpg')) if SHARED.is_dir() else []
    if files:
        import cv2
        images = [cv2.imread(str(f)) for f in files]
        return [img for img in images if img is not None][:count]
    rng = np.random.default_rng(0)
    import cv2
    return [cv2.resize(rng.integers(0, 256, (30, 40, 3), np.uint8), (640, 480))
            for _ in range(count)]


def median_latency(path: Path, size: int, runs: int, threads: int | None) -> float:
    """Median seconds of one batch-1 ``run`` after two warm-up runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name:
            np.random.default_rng(1).random((1, 3, size, size), np.float32)}
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Quantise, time FP32 and INT8 models, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, help='FP32 contract ONNX model (default: '
                        'YOLOv3 with random weights)')
    parser.add_argument('--size', type=int, default=416, help='input size when building')
    parser.add_argument('--runs', type=int, default=7, help='timed runs per model')
    parser.add_argument('--calib', type=int, default=4, help='calibration images')
    parser.add_argument('--threads', type=int, default=None, help='ORT intra-op threads')
    parser.add_argument('--method', default='entropy', choices=('entropy', 'percentile',
                                                                'minmax'))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            model = work / 'yolov3.onnx'
            build_yolov3(model, args.size)
        images = calibration_images(args.calib + 1)
        results = {}
        for target in ('tensorrt', 'onnxruntime'):
            out = work / f'yolov3_int8_{target}.onnx'
            report = quantize_model(model, images[:-1], out, method=args.method,
                                    held_out=images[-1:], target=target, progress=False)
            results[target] = (out, report)
        import onnx
        size = int(onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[3]
                   .dim_value)
        fp32 = median_latency(model, size, args.runs, args.threads)
        print(f'model {model.name if args.model else "yolov3 (random weights)"} at '
              f'{size}x{size}, batch 1, ONNX Runtime CPU, {args.runs} runs, median')
        print(f'  FP32                 {fp32 * 1e3:8.1f} ms')
        for target, (out, report) in results.items():
            int8 = median_latency(out, size, args.runs, args.threads)
            err = report.data['error'].get('outputs', {})
            extra = (f'   scores max |diff| {err["scores"]["max_abs"]:.4f}'
                     if 'scores' in err else '')
            print(f'  INT8 target={target:<11} {int8 * 1e3:8.1f} ms   FP32/INT8 '
                  f'{fp32 / int8:5.2f}x{extra}')


if __name__ == '__main__':
    main()
