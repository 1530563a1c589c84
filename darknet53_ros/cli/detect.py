"""``darknet53 detect`` (offline runner) and ``darknet53 demo`` (the main job's default)."""
from __future__ import annotations

import argparse
from pathlib import Path

from darknet53_ros.cli.common import add_detector_options
from darknet53_ros.errors import ConfigError
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``demo`` subcommands."""
    p = subparsers.add_parser(
        'detect', help='detect objects in images, a folder, a video or a rosbag2',
        description='Run the detector offline. Writes COCO results (detections.json), '
        'annotated images or video, and for a rosbag2 a new MCAP bag with '
        '<topic>/detections (vision_msgs/Detection2DArray) and annotated images.')
    p.add_argument('--model', type=Path, required=True, help='.onnx model or TensorRT .engine')
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument('--source', type=Path,
                       help='image, folder of images, video file or rosbag2 (MCAP / SQLite3)')
    where.add_argument('--fleet', nargs='+', metavar='SOURCE',
                       help='many sources on Ray Data (bags, videos, image folders, globs, '
                       'text listings, archive folders): a resumable Parquet dataset; see '
                       'doc/fleet.md')
    p.add_argument('--output', type=Path, required=True, help='output folder')
    p.add_argument('--topics', nargs='+', help='rosbag2 image topics (default: all)')
    p.add_argument('--batch', '--batch-size', dest='batch', type=int, default=None,
                   help='frames per inference (default: 1; with --fleet 4)')
    p.add_argument('--annotated', choices=('compressed', 'raw', 'none'), default=None,
                   help='annotated image topic in output bags (default: compressed)')
    p.add_argument('--save-images', type=int, default=None, metavar='N',
                   help='for bags: also save the first N annotated frames as JPEG')
    p.add_argument('--no-annotate', action='store_true', help='write detections only')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an output folder that is not empty (whole, atomically)')
    p.add_argument('--max-image-pixels', type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   metavar='N', help='skip (count as failed) larger images, checked on the '
                   'header before decoding; the default is 8K DCI, 8192x4320')
    add_detector_options(p)
    add_fleet_options(p)
    p.set_defaults(func=run_detect)

    p = subparsers.add_parser(
        'demo', help='the main job on its embedded default: bundled model, synthetic cameras',
        description='Export the bundled demo model (Darknet-53/YOLOv3, reduced width, trained '
        'on the synthetic benchmark) to ONNX, record a synthetic multi-camera rosbag2, and '
        'detect: writes a detections bag, annotated images and COCO results. No ROS, no GPU.')
    p.add_argument('--output', type=Path, default=Path('out/demo'),
                   help='output folder')
    p.add_argument('--cameras', type=int, default=2, help='synthetic cameras')
    p.add_argument('--frames', type=int, default=10, help='frames per camera')
    p.add_argument('--seed', type=int, default=2024, help='scene seed')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run_demo)



def add_fleet_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``detect --fleet`` (Ray Data)."""
    group = parser.add_argument_group('fleet (with --fleet; Ray Data, Python 3.10+)')
    group.add_argument('--ray-address', metavar='ADDR',
                       help='Ray cluster to run on (auto: the one started on this machine; '
                       'default: RAY_ADDRESS, else a new local Ray)')
    group.add_argument('--workers', type=int, default=None, metavar='N',
                       help='detector actors (default: GPUs / --gpus-per-worker, else CPUs '
                       'less one / --cpus-per-worker)')
    group.add_argument('--cpus-per-worker', type=float, default=1.0, metavar='C',
                       help='CPUs per detector actor (also its ONNX Runtime threads)')
    group.add_argument('--gpus-per-worker', type=float, default=None, metavar='G',
                       help='GPUs per detector actor, e.g. 0.5 for two per GPU (default: 1 '
                       'for TensorRT engines, 0 for ONNX)')
    group.add_argument('--write-bags', action='store_true',
                       help="also write each bag source's detections bag (detections "
                       'topics, no annotated images)')


def run_detect(args: argparse.Namespace) -> int:
    """Run the offline runner; exit 1 only when no frame could be processed."""
    from darknet53_ros.cli.common import build_detector
    from darknet53_ros.tools.runner import OfflineRunner, format_summary

    if args.fleet:
        return run_fleet(args)
    with build_detector(args.model, args) as detector:
        runner = OfflineRunner(detector, args.output, batch=args.batch or 1,
                               annotate=not args.no_annotate,
                               annotated_format=args.annotated or 'compressed',
                               save_images=args.save_images, progress=not args.no_progress,
                               overwrite=args.overwrite, max_image_pixels=args.max_image_pixels)
        summary = runner.run(args.source, args.topics)
    print(format_summary(summary))
    return 0 if summary.processed else 1


def run_fleet(args: argparse.Namespace) -> int:
    """``detect --fleet``: exit 0 when every source is committed, 1 when some failed."""
    if args.save_images or args.annotated not in (None, 'none'):
        raise ConfigError('--save-images and --annotated apply to --source: the fleet writes '
                          'no annotated images (its bags hold the detections topics)')
    from darknet53_ros.model.names import read_names
    from darknet53_ros.tools.fleet import FleetOptions
    from darknet53_ros.tools.fleet import run_fleet as fleet
    from darknet53_ros.tools.fleet_report import format_fleet_summary

    detector = {'conf_threshold': args.conf, 'nms_threshold': args.nms,
                'max_detections': args.max_det}
    if args.names:
        detector['class_names'] = list(read_names(args.names))
    options = FleetOptions(
        output=args.output, ray_address=args.ray_address, workers=args.workers,
        batch_size=args.batch or 4, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, backend=args.backend, detector=detector,
        threads=args.threads, topics=tuple(args.topics or ()),
        max_image_pixels=args.max_image_pixels, write_bags=args.write_bags,
        overwrite=args.overwrite, progress=not args.no_progress)
    summary = fleet(args.model, args.fleet, options)
    print(format_fleet_summary(summary))
    return 1 if summary.failed_sources else 0


def run_demo(args: argparse.Namespace) -> int:
    """Bundled model + synthetic multi-camera recording -> detections bag and images."""
    from darknet53_ros.tools.demo import run_demo as demo

    summary, text = demo(args.output, cameras=args.cameras, frames=args.frames,
                         seed=args.seed, progress=not args.no_progress)
    print(text)
    return 0 if summary.processed else 1
