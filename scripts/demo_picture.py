"""Write the README's picture, doc/images/demo_detections.jpg: two annotated frames of
``darknet53 demo`` (the bundled demo model on its synthetic two-camera recording) side by side.

    python3 scripts/demo_picture.py [-o doc/images/demo_detections.jpg]

Deterministic: the recording's seed and the model are fixed.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
import tempfile

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-o', '--output', type=Path,
                        default=ROOT / 'doc' / 'images' / 'demo_detections.jpg')
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import cv2

    from darknet53_ros.tools.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        run_demo(Path(tmp) / 'demo', progress=False)
        frames = [cv2.imread(str(Path(tmp) / 'demo' / 'annotated' / name)) for name in (
            'front_image_raw_000000.jpg', 'left_image_raw_compressed_000001.jpg')]
    picture = cv2.hconcat(frames)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), picture, [cv2.IMWRITE_JPEG_QUALITY, 80])
    print(f'wrote {args.output} ({picture.shape[1]}x{picture.shape[0]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
