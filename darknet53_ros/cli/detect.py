"""``darknet53 detect`` (offline runner) and ``darknet53 demo`` (the main job's default)."""
from __future__ import annotations

import argparse
from pathlib import Path

from darknet53_ros.inference.backends.registry import backend_choices


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by commands that build a Detector."""
    parser.add_argument('--backend', choices=backend_choices(),
                        default='auto', help='inference backend (default: by file type)')
    parser.add_argument('--conf', type=float, default=0.25,
                        help='confidence threshold (default 0.25)')
    parser.add_argument('--nms', type=float, default=0.45,
                        help='NMS IoU threshold (default 0.45)')
    parser.add_argument('--max-det', type=int, default=100,
                        help='max detections per image (default 100)')
    parser.add_argument('--names', type=Path, help='class names file (default: model metadata)')
    parser.add_argument('--threads', type=int, default=0,
                        help='ONNX Runtime intra-op threads (0: all cores)')


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``demo`` subcommands."""
    p = subparsers.add_parser(
        'detect', help='detect objects in images, a folder, a video or a rosbag2',
        description='Run the detector offline. Writes COCO results (detections.json), '
        'annotated images or video, and for a rosbag2 a new MCAP bag with '
        '<topic>/detections (vision_msgs/Detection2DArray) and annotated images.')
    p.add_argument('--model', type=Path, required=True, help='.onnx model or TensorRT .engine')
    p.add_argument('--source', type=Path, required=True,
                   help='image, folder of images, video file or rosbag2 (MCAP / SQLite3)')
    p.add_argument('--output', type=Path, required=True, help='output folder')
    p.add_argument('--topics', nargs='+', help='rosbag2 image topics (default: all)')
    p.add_argument('--batch', type=int, default=1, help='frames per inference (default 1)')
    p.add_argument('--annotated', choices=('compressed', 'raw', 'none'), default='compressed',
                   help='annotated image topic in output bags (default compressed JPEG)')
    p.add_argument('--save-images', type=int, default=None, metavar='N',
                   help='for bags: also save the first N annotated frames as JPEG')
    p.add_argument('--no-annotate', action='store_true', help='write detections only')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_detector_options(p)
    p.set_defaults(func=run_detect)

    p = subparsers.add_parser(
        'demo', help='the main job on its embedded default: bundled model, synthetic cameras',
        description='Export the bundled demo model (Darknet-53/YOLOv3, reduced width, trained '
        'on the synthetic benchmark) to ONNX, record a synthetic multi-camera rosbag2, and '
        'detect: writes a detections bag, annotated images and COCO results. No ROS, no GPU.')
    p.add_argument('--output', type=Path, default=Path('out/demo'),
                   help='output folder (default out/demo)')
    p.add_argument('--cameras', type=int, default=2, help='synthetic cameras (default 2)')
    p.add_argument('--frames', type=int, default=10, help='frames per camera (default 10)')
    p.add_argument('--seed', type=int, default=2024, help='scene seed (default 2024)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run_demo)

    p = subparsers.add_parser(
        'bench', help='per-stage latency vs an OpenCV DNN baseline',
        description='Time preprocess / infer / postprocess (median, p90, p99, fps) on 640x480 '
        'frames for each model and batch size, and in the same run the OpenCV DNN path '
        '(blobFromImage + NMSBoxes) on the same model; prints ratios. Models: --model files '
        'as they are, and --cfg/--weights (default: the bundled demo model) exported at '
        'each --sizes entry.')
    p.add_argument('--model', type=Path, action='append', default=[],
                   help='ONNX model to time (repeatable; FP32 or INT8 Q/DQ)')
    p.add_argument('--cfg', type=Path, help='Darknet cfg to export at each size')
    p.add_argument('--weights', type=Path, help='weights for --cfg (default: random)')
    p.add_argument('--sizes', default='320,416,608',
                   help='input sizes for --cfg / the demo model: N or WxH, comma-separated '
                   '(default 320,416,608; "none" to time only --model files)')
    p.add_argument('--batches', default='1,4', help='batch sizes (default 1,4)')
    p.add_argument('--int8', action='store_true',
                   help='also quantise each exported model, in the TensorRT Q/DQ layout and '
                   'the ONNX Runtime one (calibrated on synthetic frames)')
    p.add_argument('--iterations', type=int, default=20, help='timed runs (default 20)')
    p.add_argument('--warmup', type=int, default=3, help='untimed runs first (default 3)')
    p.add_argument('--threads', type=int, default=0, help='ONNX Runtime threads (0: all)')
    p.add_argument('--no-baseline', action='store_true', help='skip the OpenCV DNN baseline')
    p.add_argument('--plot', type=Path, help='write a latency-vs-size plot (PNG)')
    p.add_argument('--json', type=Path, help='write the measurements as JSON')
    p.set_defaults(func=run_bench)


def build_detector(model: Path, args: argparse.Namespace):
    """Detector from the shared command-line options."""
    from darknet53_ros.inference.detector import Detector
    from darknet53_ros.model.names import read_names

    names = read_names(args.names) if getattr(args, 'names', None) else None
    options = {}
    if getattr(args, 'threads', 0):
        options['intra_op_threads'] = args.threads
    return Detector.from_model(model, backend=args.backend, conf_threshold=args.conf,
                               nms_threshold=args.nms, max_detections=args.max_det,
                               class_names=names, **options)


def run_detect(args: argparse.Namespace) -> int:
    """Run the offline runner; exit 1 only when no frame could be processed."""
    from darknet53_ros.tools.runner import OfflineRunner, format_summary

    with build_detector(args.model, args) as detector:
        runner = OfflineRunner(detector, args.output, batch=args.batch,
                               annotate=not args.no_annotate, annotated_format=args.annotated,
                               save_images=args.save_images, progress=not args.no_progress)
        summary = runner.run(args.source, args.topics)
    print(format_summary(summary))
    return 0 if summary.processed else 1


def run_demo(args: argparse.Namespace) -> int:
    """Bundled model + synthetic multi-camera recording -> detections bag and images."""
    from darknet53_ros.tools.demo import run_demo as demo

    summary, text = demo(args.output, cameras=args.cameras, frames=args.frames,
                         seed=args.seed, progress=not args.no_progress)
    print(text)
    return 0 if summary.processed else 1


def parse_sizes(text: str) -> list[tuple[int, int]]:
    from darknet53_ros.errors import ConfigError

    if text.strip().lower() == 'none':
        return []
    sizes = []
    for item in text.split(','):
        parts = item.lower().strip().split('x')
        try:
            width, height = (int(parts[0]), int(parts[-1]))
        except ValueError:
            raise ConfigError(f'--sizes: expected N or WxH entries, got {item!r}') from None
        if len(parts) > 2 or width % 32 or height % 32 or min(width, height) < 32:
            raise ConfigError(f'--sizes: {item!r} is not a multiple of 32')
        sizes.append((width, height))
    return sizes


def _exported_models(args: argparse.Namespace, folder: Path) -> list[Path]:
    """Export --cfg (or the demo model) at every --sizes entry; optionally INT8 too."""
    from darknet53_ros.model.cfg import load_cfg
    from darknet53_ros.model.onnx_export import export_onnx
    from darknet53_ros.model.weights import random_weights, read_weights

    sizes = parse_sizes(args.sizes)
    if not sizes:
        return []
    if args.cfg is not None:
        cfg, weights_path = args.cfg, args.weights
    else:
        from darknet53_ros.tools.demo import demo_model_files

        cfg, weights_path, _ = demo_model_files()
    models = []
    for width, height in sizes:
        network = load_cfg(cfg, width, height)
        weights = (read_weights(weights_path, network) if weights_path
                   else random_weights(network))
        path = folder / f'{cfg.stem}-{width}x{height}.onnx'
        export_onnx(network, weights, path)
        models.append(path)
        if args.int8:
            models += _quantized(path, folder)
    return models


def _quantized(model: Path, folder: Path) -> list[Path]:
    """Both Q/DQ layouts of ``model``, calibrated on synthetic frames (not the bench's)."""
    from darknet53_ros.optimize.quantize import quantize_model
    from darknet53_ros.tools.bench import bench_frames

    calib = bench_frames(16, seed=7)
    out = []
    for target in ('tensorrt', 'onnxruntime'):
        path = folder / f'{model.stem}.int8-{target}.onnx'
        quantize_model(model, calib, path, target=target, progress=False)
        out.append(path)
    return out


def run_bench(args: argparse.Namespace) -> int:
    """Time every model x batch and print the table and ratios."""
    import tempfile

    from darknet53_ros.errors import ConfigError
    from darknet53_ros.tools.bench import (
        bench_frames,
        bench_model,
        format_rows,
        plot_rows,
        write_json,
    )

    try:
        batches = [int(b) for b in args.batches.split(',')]
    except ValueError:
        raise ConfigError(f'--batches: expected integers, got {args.batches!r}') from None
    if not batches or min(batches) < 1 or args.iterations < 1:
        raise ConfigError('--batches and --iterations must be >= 1')
    frames = bench_frames(max(batches))
    with tempfile.TemporaryDirectory(prefix='darknet53-bench-') as tmp:
        models = list(args.model) + _exported_models(args, Path(tmp))
        if not models:
            raise ConfigError('nothing to time: give --model, or --cfg / the demo model with '
                              '--sizes')
        rows = []
        for model in models:
            for batch in batches:
                rows.append(bench_model(model, batch, frames, args.iterations, args.warmup,
                                        not args.no_baseline, args.threads))
                print(f'timed {model.name} batch {batch}', flush=True)
    print(format_rows(rows))
    if args.plot:
        plot_rows(rows, args.plot)
        print(f'wrote {args.plot}')
    if args.json:
        write_json(rows, args.json)
        print(f'wrote {args.json}')
    return 0
