"""``darknet53 detect`` (offline runner) and ``darknet53 demo`` (the main job's default)."""
from __future__ import annotations

import argparse
from pathlib import Path

from darknet53_ros.cli.common import add_detector_options
from darknet53_ros.io.encodings import DEFAULT_MAX_IMAGE_PIXELS


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
    p.add_argument('--batch', type=int, default=1, help='frames per inference')
    p.add_argument('--annotated', choices=('compressed', 'raw', 'none'), default='compressed',
                   help='annotated image topic in output bags')
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



def run_detect(args: argparse.Namespace) -> int:
    """Run the offline runner; exit 1 only when no frame could be processed."""
    from darknet53_ros.cli.common import build_detector
    from darknet53_ros.tools.runner import OfflineRunner, format_summary

    with build_detector(args.model, args) as detector:
        runner = OfflineRunner(detector, args.output, batch=args.batch,
                               annotate=not args.no_annotate, annotated_format=args.annotated,
                               save_images=args.save_images, progress=not args.no_progress,
                               overwrite=args.overwrite, max_image_pixels=args.max_image_pixels)
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
