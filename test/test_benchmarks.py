"""Smoke tests of the scripts in ``benchmarks/`` (a handful of rounds: that they run and check
their implementations agree before timing; no figure is asserted)."""
from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

from .conftest import requires

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])}
    done = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / script), *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@requires('cv2', 'onnxruntime', 'onnx')
def test_bench_peers_runs() -> None:
    out = _run('bench_peers.py', '--rounds', '3', '--warmup', '1')
    assert 'all implementations give the same' in out
    for section in ('preprocess, hot', 'postprocess', 'after an inference run', 'pre + post'):
        assert section in out
    assert 'ours is' in out and 'load average' in out


@requires('cv2')
def test_bench_nms_runs() -> None:
    assert _run('bench_nms.py', '--repeat', '2').strip()


@requires('ray', 'pyarrow', 'cv2', 'onnxruntime', 'rosbags')
def test_bench_fleet_runs() -> None:
    out = _run('bench_fleet.py', '--bags', '1', '--frames', '1', '--rounds', '1',
               '--warmup', '0', '--variants', 'detect,fleet-1w')
    assert 'fleet and detect find the same' in out
    assert 'fleet-1w' in out and 'x' in out.split('against detect')[-1]


@requires('cv2', 'onnxruntime', 'onnx', 'trackeval')
def test_bench_tracking_runs(tmp_path: Path) -> None:
    _run('bench_tracking.py', 'prepare', '--data', str(tmp_path), '--sets', 'smoke')
    out = _run('bench_tracking.py', 'run', '--data', str(tmp_path), '--sets', 'smoke',
               '--rounds', '1', '--warmup', '0')
    assert 'ours' in out and 'HOTA' in out and 'load average' in out


def test_ros_throughput_quick() -> None:
    """Without a sourced ROS 2 it says so and exits 0; with one, a short run (raw 640x480,
    one camera: the baseline subscribers and the node, with and without a viewer)."""
    out = _run('ros_throughput.py', '--quick')
    assert out.startswith('skipped: ') or 'targets (paired within each round' in out, out
