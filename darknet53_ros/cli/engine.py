"""``darknet53 quantize`` (INT8 Q/DQ ONNX, any machine), ``darknet53 build-engine`` and
``darknet53 verify-engine`` (on the Jetson)."""
from __future__ import annotations

import argparse
from pathlib import Path

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.backends.cuda_runtime import RUNTIMES as CUDA_RUNTIMES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` and ``build-engine`` subcommands."""
    p = subparsers.add_parser(
        'quantize', help='INT8 post-training quantisation to a Q/DQ ONNX model',
        description='Calibrate an FP32 ONNX model on images (folder, video or rosbag2 image '
        'topic) and write an explicitly quantised (Q/DQ, symmetric int8) model that TensorRT '
        'builds into an INT8 engine. The calibration images must not be used for evaluation.')
    p.add_argument('--model', type=Path, required=True, help='FP32 ONNX model (contract)')
    p.add_argument('--calib', required=True,
                   help='calibration images: a folder, a video file or a rosbag2')
    p.add_argument('--topic', help='image topic when --calib is a rosbag2 with several')
    p.add_argument('--step', type=int, default=1,
                   help='use every STEP-th frame of a video or bag')
    p.add_argument('-o', '--output', type=Path, required=True, help='output Q/DQ .onnx')
    p.add_argument('--method', default='percentile', choices=('entropy', 'percentile', 'minmax'),
                   help='activation range: percentile (of |x|, default), entropy (TensorRT KL) '
                        'or minmax')
    p.add_argument('--percentile', type=float, default=99.99,
                   help='percentile of |x| for --method percentile')
    p.add_argument('--keep-fp', nargs='+', metavar='NAME', default=None,
                   help='node names or fnmatch patterns kept in floating point (default: the '
                   'first conv and the YOLO head convs; "none" keeps nothing)')
    p.add_argument('--calib-count', type=int, default=200,
                   help='calibration images to use')
    p.add_argument('--held-out', type=int, default=0,
                   help='images taken first from the source (and not used for calibration) '
                   'to measure the INT8 error against FP32')
    p.add_argument('--target', default='tensorrt', choices=('tensorrt', 'onnxruntime'),
                   help='Q/DQ placement: tensorrt or onnxruntime (also conv outputs '
                   'and int32 biases: fast on ONNX Runtime CPU, rejected by TensorRT)')
    p.add_argument('--per-tensor-weights', action='store_true',
                   help='one weight scale per conv instead of per output channel')
    p.add_argument('--batch-size', type=int, default=1, help='calibration batch')
    p.add_argument('--report', type=Path,
                   help='JSON report (default: OUTPUT with .quant.json)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run_quantize)

    p = subparsers.add_parser(
        'build-engine', help='build a TensorRT engine (on the target device)',
        description='Build a TensorRT engine from an ONNX model on this device and write '
        'NAME.engine.json beside it (TensorRT version, GPU, precision, batch profile, class '
        'names, ONNX hash). Engines only run with the TensorRT version and GPU they were '
        'built with.')
    p.add_argument('--model', type=Path, required=True,
                   help='ONNX model (FP32, or Q/DQ INT8 from `darknet53 quantize`)')
    p.add_argument('--precision', default=None, choices=('fp32', 'fp16', 'int8'),
                   help='default: int8 for a Q/DQ model, fp16 otherwise. A Q/DQ model is '
                   'always INT8 (fp32/fp16 then set its float layers on TensorRT < 10.12); '
                   'TensorRT 11 builds fp16 only from an FP16 model')
    p.add_argument('--dla-core', type=int, default=None,
                   help='run on this DLA core (with GPU fallback); needs a fixed --batch and '
                   'fp16 or int8')
    p.add_argument('--batch', default='1:1:1', metavar='MIN:OPT:MAX',
                   help='batch profile of input images')
    p.add_argument('--workspace', type=int, default=1024, metavar='MIB',
                   help='builder workspace in MiB')
    p.add_argument('--calib', help='images for legacy INT8 calibration of an FP32 model '
                   '(TensorRT < 11; prefer `darknet53 quantize`)')
    p.add_argument('--calib-count', type=int, default=500,
                   help='legacy calibration images')
    p.add_argument('--timing-cache', type=Path,
                   help='timing cache file (read when present, written after the build)')
    p.add_argument('--device', type=int, default=0, help='CUDA device')
    _cuda_runtime_option(p)
    p.add_argument('-o', '--output', type=Path, required=True,
                   help='engine file, e.g. engines/yolov3_int8.engine')
    p.add_argument('--no-progress', action='store_true', help='no build progress display')
    p.add_argument('--verify', nargs='?', const='synthetic', default=None, metavar='SOURCE',
                   help='after building, run the engine and the ONNX model (ONNX Runtime) on '
                   'the same frames and record their agreement in the metadata; SOURCE: '
                   'images, video or rosbag2 (default: built-in synthetic frames)')
    _verify_options(p)
    p.set_defaults(func=run_build_engine)

    p = subparsers.add_parser(
        'verify-engine', help='check an engine against its ONNX model (on the device)',
        description='Run a TensorRT engine and its source ONNX model (ONNX Runtime) on the '
        'same frames; record per-output differences, the matched-detection rate and box IoU '
        'at the node thresholds in NAME.engine.json (the node logs them at start).')
    p.add_argument('engine', type=Path, help='the .engine file')
    p.add_argument('--model', type=Path, default=None,
                   help='reference ONNX model (default: the one recorded in the metadata)')
    p.add_argument('--source', default=None,
                   help='images, video or rosbag2 (default: built-in synthetic frames)')
    p.add_argument('--no-record', action='store_true',
                   help='only print the result, leave the metadata as it is')
    p.add_argument('--device', type=int, default=0, help='CUDA device')
    _cuda_runtime_option(p)
    _verify_options(p)
    p.set_defaults(func=run_verify_engine)


def _cuda_runtime_option(p: argparse.ArgumentParser) -> None:
    p.add_argument('--cuda-runtime', default='auto', choices=CUDA_RUNTIMES,
                   help='Python CUDA runtime: auto (pycuda if installed, else cuda-python), '
                   'pycuda or cuda-python')


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument('--verify-count', type=int, default=8, metavar='N',
                   help='frames to verify with')
    p.add_argument('--topic', dest='verify_topic', default=None,
                   help='image topic when the verification source is a rosbag2 with several')
    p.add_argument('--conf-threshold', type=float, default=0.25,
                   help="detection threshold for the comparison (the node's default)")
    p.add_argument('--nms-threshold', type=float, default=0.45,
                   help="NMS IoU threshold for the comparison (the node's default)")


def run_quantize(args: argparse.Namespace) -> int:
    """Calibrate and write the Q/DQ model and its report."""
    from darknet53_ros.optimize.calibration import calibration_images, split_images
    from darknet53_ros.optimize.quantize import quantize_model

    if args.calib_count < 1:
        raise ConfigError(f'--calib-count {args.calib_count}: must be >= 1')
    keep = args.keep_fp
    if keep is not None and [k.lower() for k in keep] == ['none']:
        keep = []
    calib, held = split_images(calibration_images(args.calib, args.topic, args.step),
                               args.calib_count, args.held_out)
    if args.held_out and len(held) < args.held_out:
        raise ConfigError(f'{args.calib}: only {len(held)} image(s) for --held-out '
                          f'{args.held_out}')
    report_path = args.report or args.output.with_suffix('.quant.json')
    quantize_model(args.model, calib, args.output, method=args.method,
                   percentile=args.percentile, keep_fp=keep,
                   per_channel=not args.per_tensor_weights, held_out=held, target=args.target,
                   report_path=report_path, batch_size=args.batch_size,
                   progress=not args.no_progress, print_summary=True)
    print(f'report: {report_path}')
    return 0


def run_build_engine(args: argparse.Namespace) -> int:
    """Build the engine and print where it went."""
    from darknet53_ros.inference.backends.engine_file import require_tensorrt
    from darknet53_ros.optimize.engine_builder import build_engine

    require_tensorrt()
    metadata = build_engine(args.model, args.output, precision=args.precision,
                            dla_core=args.dla_core, batch=args.batch,
                            workspace_mib=args.workspace, calib_source=args.calib,
                            calib_count=args.calib_count, timing_cache=args.timing_cache,
                            progress=not args.no_progress, device=args.device,
                            cuda_runtime=args.cuda_runtime)
    print(f"{args.output}: TensorRT {metadata['tensorrt_version']}, {metadata['precision']} "
          f"(float layers {metadata['float_precision']}), batch "
          f"{':'.join(map(str, metadata['batch']))}, GPU {metadata['gpu_name']} "
          f"(sm {metadata['compute_capability']})")
    if args.verify is None:
        return 0
    return _verify(args, args.output, args.model, args.verify, record=True)


def run_verify_engine(args: argparse.Namespace) -> int:
    """Verify an existing engine against its ONNX model."""
    from darknet53_ros.inference.backends.engine_file import require_tensorrt

    require_tensorrt()
    return _verify(args, args.engine, args.model, args.source, record=not args.no_record)


def _verify(args: argparse.Namespace, engine: Path, model: Path | None, source: str | None,
            record: bool) -> int:
    """Run the verification; print it; 1 when the engine disagrees with its model."""
    from darknet53_ros.optimize.engine_verify import verify_engine

    result = verify_engine(engine, model, source, count=args.verify_count,
                           topic=args.verify_topic, conf_threshold=args.conf_threshold,
                           nms_threshold=args.nms_threshold, record=record,
                           device=args.device, cuda_runtime=args.cuda_runtime)
    det = result['detections']
    for name, diff in result['outputs'].items():
        print(f"  {name}: max |diff| {diff['max_abs_diff']:.4g}, mean |diff| "
              f"{diff['mean_abs_diff']:.4g}")
    iou = 'n/a' if det['mean_iou'] is None else f"{det['mean_iou']:.3f}"
    print(f"  detections: engine {det['engine']}, ONNX Runtime {det['reference']}, matched "
          f"{det['matched']} ({det['match_rate']:.0%}), mean IoU {iou} on {result['source']}")
    print(f"{engine}: {'agrees with' if result['agrees'] else 'DISAGREES with'} "
          f"{result['reference']}" + (' (recorded in the metadata)' if record else ''))
    return 0 if result['agrees'] else 1
