"""Terminal-style Ctrl-C on ``ros2 launch`` while streaming: exit 0 and a clean log.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: ``ros2 launch`` and
every node get it, and launch then forwards one more SIGINT to each node (a second Ctrl-C adds
two more). This starts the installed ``multi_camera.launch.py`` in its own session (its own
process group, like a terminal job) with two cameras (raw and compressed), publishes frames
(some undecodable) until both cameras get detections, sends SIGINT to the group twice and
checks: ``ros2 launch`` exits 0, every node "finished cleanly", and nothing is logged at ERROR
(no traceback, no "process has died", no publish on an invalid context).

Needs a sourced ROS 2 with this package installed (colcon build); skipped per test otherwise.
Also a script for repeated runs: ``python3 test/ros/test_launch_sigint.py --runs 10``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

try:
    from ..conftest import optional_module, ros_not_ready
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from test.conftest import optional_module, ros_not_ready

CAMERAS = {'front': ('/sigint_cams/front/image_raw', 'raw'),
           'left': ('/sigint_cams/left/image_raw', 'compressed')}
NAMESPACE = 'sigint_test'
BAD_LOG = ('[ERROR]', 'Traceback', 'terminate called', 'process has died',
           'context is invalid', 'Failed to publish', 'KeyboardInterrupt')


def _not_ready() -> str:
    if shutil.which('ros2') is None:
        return 'the ros2 command is not on PATH'
    if optional_module('onnx') is None:
        return 'onnx not installed: the launch serves the bundled demo model (.cfg -> ONNX)'
    return ros_not_ready('rclpy', 'vision_msgs.msg', 'ament_index_python.packages')


NOT_READY = _not_ready()


def _cameras_file() -> str:
    lines = ['/**:', '  ros__parameters:', f'    cameras: [{", ".join(CAMERAS)}]']
    lines += [f'    {name}: {{topic: {topic}, transport: {transport}}}'
              for name, (topic, transport) in CAMERAS.items()]
    lines += ['    max_frame_age: 2.0', '    diagnostics_period: 0.5']
    fd, path = tempfile.mkstemp(prefix='darknet53_sigint_', suffix='.yaml')
    with os.fdopen(fd, 'w') as stream:
        stream.write('\n'.join(lines) + '\n')
    return path


def run_and_interrupt(interrupts: int = 2, stream: bool = True, launch_args: tuple = (),
                      timeout: float = 90.0) -> tuple[int, str, dict[str, int]]:
    """Start the launch, stream until both cameras have detections, Ctrl-C it.

    Returns ``(return code, log, detections received per camera)``.
    """
    import rclpy
    from rclpy.context import Context
    from sensor_msgs.msg import CompressedImage, Image
    import vision_msgs.msg as vision

    from darknet53_ros.io.messages import (
        MessageTypes,
        compressed_image_msg,
        header_msg,
        image_msg,
    )
    from darknet53_ros.training.synthetic import generate_scene

    cameras_file = _cameras_file()
    log = tempfile.TemporaryFile(mode='w+')
    proc = subprocess.Popen(
        ['ros2', 'launch', 'darknet53_ros', 'multi_camera.launch.py', f'namespace:={NAMESPACE}',
         f'cameras_file:={cameras_file}', 'backend:=onnxruntime', *launch_args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED='1', RCUTILS_COLORIZED_OUTPUT='0'))
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sigint_cameras', context=context)
    received: dict[str, int] = dict.fromkeys(CAMERAS, 0)
    try:
        types = MessageTypes.from_rclpy()
        publishers = {}
        for name, (topic, transport) in CAMERAS.items():
            node.create_subscription(
                vision.Detection2DArray, f'/{NAMESPACE}/{name}/detections',
                lambda msg, name=name: received.__setitem__(name, received[name] + 1), 10)
            publishers[name] = (node.create_publisher(CompressedImage, f'{topic}/compressed', 10)
                                if transport == 'compressed'
                                else node.create_publisher(Image, topic, 10))
        deadline = time.monotonic() + timeout
        index = 0
        streamed_after = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if stream or not all(c >= 3 for c in received.values()):
                image, _ = generate_scene(7, index, 320, 256)
                stamp = node.get_clock().now().nanoseconds
                for name, (_, transport) in CAMERAS.items():
                    header = header_msg(types, stamp, f'{name}_optical')
                    msg = (compressed_image_msg(types, header, image)
                           if transport == 'compressed' else image_msg(types, header, image))
                    if index % 10 == 5:  # undecodable frames: dropped, counted, warned
                        msg.data = [0, 1, 2, 3] if transport == 'compressed' else msg.data[:100]
                    publishers[name].publish(msg)
                index += 1
            end = time.monotonic() + 1 / 15
            while time.monotonic() < end:
                _spin(node, context)
            if all(c >= 3 for c in received.values()):
                streamed_after += 1
                # Streaming: go on until a bad frame was decoded and warned about too (on a
                # loaded machine a bad frame can be superseded before it is decoded).
                if streamed_after >= (10 if stream else 1) and (
                        not stream or _logged(log, DECODE_WARNING)):
                    break
        if not stream:
            time.sleep(1.0)  # idle: nothing in flight
        for _ in range(interrupts):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.15)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        os.unlink(cameras_file)
    log.seek(0)
    text = log.read()
    log.close()
    return code, text, received


DECODE_WARNING = 'dropped a frame it cannot decode'


def _logged(log: Any, text: str) -> bool:
    """Whether the launch's log file (written by the child) holds ``text`` so far; read with
    pread, which leaves the offset the child writes at alone."""
    fd = log.fileno()
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    return text in data.decode('utf-8', 'replace')


def _spin(node, context) -> None:
    from rclpy.executors import SingleThreadedExecutor

    executor = getattr(node, '_sigint_executor', None)
    if executor is None:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        node._sigint_executor = executor
    executor.spin_once(timeout_sec=0.01)


def check(code: int, text: str, received: dict[str, int], nodes: int) -> list[str]:
    """What is wrong with a run (empty: clean)."""
    problems = []
    if code != 0:
        problems.append(f'ros2 launch exited {code}')
    problems += [f'log has {bad!r}' for bad in BAD_LOG if bad in text]
    cleanly = text.count('process has finished cleanly')
    if cleanly != nodes:
        problems.append(f'{cleanly} of {nodes} node(s) finished cleanly')
    if not all(c >= 3 for c in received.values()):
        problems.append(f'detections per camera: {received}')
    return problems


@pytest.mark.skipif(bool(NOT_READY), reason=NOT_READY)
@pytest.mark.parametrize('launch_args,nodes,stream', [
    ((), 1, True),
    (('node_per_camera:=true',), 2, True),
    (('lifecycle:=true',), 1, True),
    ((), 1, False),
], ids=['one-node-streaming', 'node-per-camera-streaming', 'lifecycle-streaming', 'idle'])
def test_ctrl_c_while_streaming_is_clean(launch_args, nodes, stream):
    code, text, received = run_and_interrupt(2, stream, launch_args)
    assert not check(code, text, received, nodes), (check(code, text, received, nodes), text)
    if stream:  # bad frames were dropped and warned about, good ones kept flowing
        assert DECODE_WARNING in text


def main() -> int:
    """Repeat the Ctrl-C run; prints one line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--interrupts', type=int, default=2)
    parser.add_argument('--nodes', type=int, default=1)
    parser.add_argument('launch_args', nargs='*')
    args = parser.parse_args()
    if NOT_READY:
        print(NOT_READY)
        return 2
    clean = 0
    for run in range(1, args.runs + 1):
        code, text, received = run_and_interrupt(args.interrupts, True,
                                                 tuple(args.launch_args))
        problems = check(code, text, received, args.nodes)
        clean += not problems
        print(f'run {run}: exit {code}, detections {received}, '
              f'{"clean" if not problems else "; ".join(problems)}', flush=True)
        if problems:
            print(text[-3000:])
    print(f'{clean} of {args.runs} runs clean')
    return 0 if clean == args.runs else 1


if __name__ == '__main__':
    sys.exit(main())
