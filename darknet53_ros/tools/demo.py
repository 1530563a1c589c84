"""The main job on its embedded default: the bundled demo model on a synthetic recording."""
from __future__ import annotations

import os
from pathlib import Path
import tempfile

from darknet53_ros.errors import DarknetError
from darknet53_ros.inference.detector import Detector
from darknet53_ros.model.cfg import load_cfg
from darknet53_ros.model.names import read_names
from darknet53_ros.model.weights import read_weights
from darknet53_ros.tools.camera_bag import write_camera_bag
from darknet53_ros.tools.runner import OfflineRunner, RunSummary, format_summary

MODELS_DIR = Path(__file__).resolve().parents[1] / 'models'
"""Where the bundled demo model (``demo.cfg``, ``demo.weights``, ``demo.names``) lives."""


def demo_model_files() -> tuple[Path, Path, Path]:
    """(cfg, weights, names) of the bundled demo model; DarknetError if missing."""
    files = tuple(MODELS_DIR / f'demo.{ext}' for ext in ('cfg', 'weights', 'names'))
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DarknetError(f'bundled demo model missing: {", ".join(missing)} (reinstall the '
                           'package, or train one with scripts/train_demo.sh)')
    cfg, weights, names = files
    return cfg, weights, names


def export_demo_model(out: Path) -> Path:
    """Export the bundled demo model to ``out`` (ONNX) and return its path."""
    from darknet53_ros.model.onnx_export import export_onnx  # onnx: no rosdep key

    cfg, weights, names = demo_model_files()
    network = load_cfg(cfg)
    export_onnx(network, read_weights(weights, network), out, names=read_names(names))
    return out


def run_demo(output: Path, cameras: int = 2, frames: int = 10, seed: int = 2024,
             width: int = 640, height: int = 480, progress: bool = True,
             ) -> tuple[RunSummary, str]:
    """Record a synthetic multi-camera bag, detect on it; returns (summary, summary text).

    ``output`` is replaced whole: detections, the model and the recording end up in it."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f'.{output.name}.inputs.', dir=output.parent) as tmp:
        model = export_demo_model(Path(tmp) / 'demo.onnx')
        bag = Path(tmp) / 'cameras'
        write_camera_bag(bag, cameras=cameras, frames=frames, seed=seed, width=width,
                         height=height, overwrite=True)
        with Detector.from_model(model) as detector:
            runner = OfflineRunner(detector, output, batch=min(cameras, 4),
                                   save_images=cameras * 2, progress=progress, overwrite=True)
            summary = runner.run(bag)
        model, bag = output / model.name, output / bag.name
        os.replace(Path(tmp) / model.name, model)
        os.replace(Path(tmp) / bag.name, bag)
    text = '\n'.join([f'demo model: {model} ({detector.width}x{detector.height}, classes: '
                      f'{", ".join(detector.names or ())})',
                      f'synthetic recording: {bag} ({cameras} cameras x {frames} frames)',
                      format_summary(summary)])
    return summary, text
