"""The detector node at robot frame sizes on a real ROS 2: received and detected rates per
camera, latency from the header stamps, CPU per frame and DDS receive-buffer losses.

Needs a sourced ROS 2 (Humble or Jazzy) with sensor_msgs, vision_msgs and diagnostic_msgs;
without one it prints why and exits 0. Every trial runs in fresh processes on its own
``ROS_DOMAIN_ID``, local to this host:

- a **publisher** of pre-serialised frames (``Publisher.publish(bytes)``; the stamp is written
  into the payload at publish time) at ``--rate`` Hz per camera: raw ``bgr8`` or JPEG
  (quality 90) of a synthetic scene, for each ``--sizes`` and ``--cameras`` count;
- one **subject**: ``count`` (an rclpy subscriber that deserialises and counts), ``raw`` (the
  same with ``raw=True``), ``node`` (this checkout's detector node, ``python -m
  darknet53_ros.ros.node``), ``old`` (the node of ``--node-python-path``, e.g. a worktree of
  main: ``git -C /work/main worktree add /tmp/base-21 main``), each node also ``+annot`` (a
  best-effort subscriber on every ``NAME/detections/image``);
- for nodes, a **probe** counting ``NAME/detections`` (detected rate, stamp-to-arrival latency)
  and reading ``/diagnostics`` (frames the node received).

The window starts ``--warmup`` s after every camera delivered; over ``--measure`` s the script
reads the subject's CPU time (``/proc/PID/stat``) and the host's ``Udp: RcvbufErrors``
(``/proc/net/snmp``). Trials are interleaved (every configuration and subject in each of
``--repeats`` rounds, the subject order rotated per round) and the targets of issue 21 are
printed as paired ratios within each round, with their spread.

``--quick`` is a smoke test (640x480 raw, one camera, short windows, one round).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, list[str]] = {}
"""``--variant NAME=ARGS`` subjects: this checkout's node with extra node arguments."""
TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100
NAMESPACE = '/bench'


# -- frames --------------------------------------------------------------------------------------
def scene(width: int, height: int, seed: int = 0) -> Any:
    """A synthetic street-like BGR frame (gradients, boxes, texture): JPEG q90 of 1080p is
    about 300 kB, like a camera's."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220],
                     axis=-1)
    for _ in range(40):
        x1, y1 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        w, h = int(rng.integers(8, width // 4)), int(rng.integers(8, height // 4))
        cv2.rectangle(image, (x1, y1), (x1 + w, y1 + h), rng.integers(0, 255, 3).tolist(), -1)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def payload(transport: str, width: int, height: int, camera: int) -> bytes:
    """The serialized Image or CompressedImage of a camera's frame (stamp patched later)."""
    import cv2

    from darknet53_ros.io.cdr import CdrHeader, CdrTime, write_compressed_image, write_image

    image = scene(width, height, camera)
    header = CdrHeader(CdrTime(0, 0), f'cam{camera}_optical')
    if transport == 'raw':
        return write_image(header, height, width, 'bgr8', width * 3, image)
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return write_compressed_image(header, 'jpeg', data.reshape(-1))


def _stamp_writer(data: bytes) -> Any:
    """Write ``(sec, nanosec)`` into a bytes object in place (benchmark only: the payload is
    published as it is, with no copy; CPython keeps a bytes object's data after its header)."""
    import ctypes
    import struct

    offset = sys.getsizeof(b'') - 1 + 4  # the bytes object's data, then the CDR header
    stamp = (ctypes.c_char * 8).from_address(id(data) + offset)

    def write(ns: int) -> None:
        stamp[:] = struct.pack('<iI', *divmod(ns, 1_000_000_000))

    return write


def _topic(index: int, transport: str) -> str:
    base = f'{NAMESPACE}/cam{index}/image_raw'
    return f'{base}/compressed' if transport == 'jpeg' else base


def _sensor_qos(reliable: bool = False) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


def _stamp_of(data: Any) -> int:
    import struct

    sec, nanosec = struct.unpack_from('<iI', data, 4)
    return sec * 1_000_000_000 + nanosec


# -- worker processes ----------------------------------------------------------------------------
def run_publisher(args: argparse.Namespace) -> None:
    """Publish pre-serialised frames of ``args.cameras`` cameras until SIGINT."""
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    width, height = (int(v) for v in args.size.split('x'))
    rclpy.init()
    node = rclpy.create_node('bench_publisher')
    msg_type = Image if args.transport == 'raw' else CompressedImage
    pubs = [node.create_publisher(msg_type, _topic(i, args.transport), _sensor_qos(
        args.reliable)) for i in range(args.cameras)]
    frames = [payload(args.transport, width, height, i) for i in range(args.cameras)]
    writers = [_stamp_writer(f) for f in frames]
    times: list[list[float]] = [[] for _ in frames]
    stop = {'now': False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    period = 1.0 / args.rate
    start = time.monotonic()
    k = 0
    while not stop['now']:
        due = start + k * period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:  # fell behind by a whole frame: skip it (as a camera does)
            k += 1
            continue
        for i, (pub, frame, write) in enumerate(zip(pubs, frames, writers)):
            write(time.time_ns())
            pub.publish(frame)
            times[i].append(time.time())
        k += 1
    Path(args.out).write_text(json.dumps({'published': times}))
    node.destroy_node()
    rclpy.try_shutdown()


class _Window:
    """Waits until every camera delivered, then ``warmup`` s, then measures ``measure`` s;
    writes ``start``/``end`` marker files (epoch seconds) into ``folder``."""

    def __init__(self, folder: Path, cameras: int, warmup: float, measure: float) -> None:
        self.folder, self.cameras = folder, cameras
        self.warmup, self.measure = warmup, measure
        self.ready: set[int] = set()
        self.start = self.end = None

    def seen(self, camera: int) -> None:
        if len(self.ready) < self.cameras:
            self.ready.add(camera)
            if len(self.ready) == self.cameras:
                self.start = time.time() + self.warmup
                self.end = self.start + self.measure

    def inside(self, when: float) -> bool:
        return self.start is not None and self.start <= when < self.end

    def tick(self) -> bool:
        """Write the markers when due; False once the window is over."""
        now = time.time()
        if self.start is not None and now >= self.start and not (self.folder / 'start').exists():
            (self.folder / 'start').write_text(repr(self.start))
        if self.end is not None and now >= self.end:
            (self.folder / 'end').write_text(repr(self.end))
            return False
        return True


def _spin_until(node: Any, window: _Window, deadline: float) -> None:
    import rclpy

    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    while window.tick() and time.time() < deadline:
        executor.spin_once(timeout_sec=0.01)


def run_subscriber(args: argparse.Namespace) -> None:
    """A baseline subscriber: count frames (and stamps) per camera, deserialising or raw."""
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node('bench_subscriber')
    msg_type = Image if args.transport == 'raw' else CompressedImage
    window = _Window(Path(args.folder), args.cameras, args.warmup, args.measure)
    counts = [0] * args.cameras
    latencies: list[float] = []

    def callback(index: int) -> Any:
        def on_frame(msg: Any) -> None:
            now = time.time()
            window.seen(index)
            if window.inside(now):
                counts[index] += 1
                stamp = _stamp_of(msg) if args.raw else (
                    msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                latencies.append(now - stamp * 1e-9)
        return on_frame

    subs = [node.create_subscription(msg_type, _topic(i, args.transport), callback(i),
                                     _sensor_qos(), raw=args.raw) for i in range(args.cameras)]
    _spin_until(node, window, time.time() + args.timeout)
    Path(args.out).write_text(json.dumps({'received': counts, 'detected': None,
                                          'latency': latencies, 'window': args.measure}))
    del subs
    node.destroy_node()
    rclpy.try_shutdown()


def run_probe(args: argparse.Namespace) -> None:
    """Watch a node: detections per camera, latency, /diagnostics, optional annotated viewer."""
    from diagnostic_msgs.msg import DiagnosticArray
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    rclpy.init()
    node = rclpy.create_node('bench_probe')
    window = _Window(Path(args.folder), args.cameras, args.warmup, args.measure)
    detected = [0] * args.cameras
    annotated = [0] * args.cameras
    latencies: list[float] = []
    diagnostics: list[tuple[float, dict[str, Any]]] = []

    def on_detections(index: int) -> Any:
        def callback(msg: Any) -> None:
            now = time.time()
            window.seen(index)
            if window.inside(now):
                detected[index] += 1
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                latencies.append(now - stamp * 1e-9)
        return callback

    def on_annotated(index: int) -> Any:
        def callback(data: Any) -> None:
            if window.inside(time.time()):
                annotated[index] += 1
        return callback

    def on_diagnostics(msg: Any) -> None:
        entry = {}
        for status in msg.status:
            name = status.name.rsplit(': ', 1)[-1]
            values = {kv.key: kv.value for kv in status.values}
            entry[name] = {'received': int(values.get('received', 0) or 0),
                           'level': int.from_bytes(status.level, 'little')
                           if isinstance(status.level, bytes) else int(status.level),
                           'message': status.message}
        diagnostics.append((time.time(), entry))

    keep = [node.create_subscription(Detection2DArray, f'{NAMESPACE}/cam{i}/detections',
                                     on_detections(i), QoSProfile(depth=10))
            for i in range(args.cameras)]
    keep.append(node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10))
    if args.annotated:
        viewer = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        keep += [node.create_subscription(Image, f'{NAMESPACE}/cam{i}/detections/image',
                                          on_annotated(i), viewer, raw=True)
                 for i in range(args.cameras)]
    _spin_until(node, window, time.time() + args.timeout)
    Path(args.out).write_text(json.dumps({
        'received': _received_rates(diagnostics, window, args.cameras), 'detected': detected,
        'annotated': annotated, 'latency': latencies, 'window': args.measure,
        'status': diagnostics[-1][1] if diagnostics else {}}))
    del keep
    node.destroy_node()
    rclpy.try_shutdown()


def _received_rates(samples: list[tuple[float, dict[str, Any]]], window: _Window,
                    cameras: int) -> list[float] | None:
    """Frames per second each camera's node received over the window, from the cumulative
    ``received`` of /diagnostics (the samples nearest the window's edges)."""
    if window.start is None or len(samples) < 2:
        return None
    inside = [s for s in samples if window.start - 1.0 <= s[0] <= window.end + 1.0]
    if len(inside) < 2:
        return None
    (t0, first), (t1, last) = inside[0], inside[-1]
    rates = []
    for i in range(cameras):
        name = f'cam{i}'
        if name not in first or name not in last or t1 <= t0:
            return None
        rates.append((last[name]['received'] - first[name]['received']) / (t1 - t0))
    return rates


# -- orchestration -------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rcvbuf_errors() -> int:
    lines = [ln.split() for ln in Path('/proc/net/snmp').read_text().splitlines()
             if ln.startswith('Udp:')]
    header, values = lines[0], lines[1]
    return int(values[header.index('RcvbufErrors')])


def _env(args: argparse.Namespace, python_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(python_path), *filter(None, [
        os.environ.get('PYTHONPATH')])])
    env['ROS_DOMAIN_ID'] = str(args.domain_id)
    env.setdefault('ROS_LOCALHOST_ONLY', '1')  # Humble
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # Jazzy
    if args.rmw:
        env['RMW_IMPLEMENTATION'] = args.rmw
    if 'cyclonedds' in env.get('RMW_IMPLEMENTATION', 'rmw_cyclonedds_cpp') \
            and args.dds_config and 'CYCLONEDDS_URI' not in os.environ:
        env['CYCLONEDDS_URI'] = f'file://{Path(args.dds_config).resolve()}'
    return env


def _node_version(code: Path) -> str:
    """The commit of the node's checkout (what a row measured)."""
    try:
        return subprocess.run(['git', '-C', str(code), 'log', '-1', '--format=%h %s'],
                              capture_output=True, text=True, check=False).stdout.strip()[:60]
    except OSError:
        return '?'


def _node_command(cameras: int, transport: str, extra: list[str], code: Path) -> list[str]:
    """``python -m darknet53_ros.ros.node`` with the benchmark's cameras: per-camera
    parameters (``camN.topic``, ``camN.transport``) where the checkout ``code`` has them, the
    older ``'NAME:TOPIC:TRANSPORT'`` strings otherwise."""
    kind = 'compressed' if transport == 'jpeg' else 'raw'
    names = [f'cam{i}' for i in range(cameras)]
    if (code / 'darknet53_ros' / 'ros' / 'schema.py').is_file():
        camera_args = ['-p', f'cameras:=[{", ".join(names)}]']
        for name in names:
            camera_args += ['-p', f'{name}.topic:={NAMESPACE}/{name}/image_raw',
                            '-p', f'{name}.transport:={kind}']
    else:
        entries = ', '.join(f"'{name}:{NAMESPACE}/{name}/image_raw:{kind}'" for name in names)
        camera_args = ['-p', f'cameras:=[{entries}]']
    return [sys.executable, '-m', 'darknet53_ros.ros.node', '--ros-args',
            '-r', f'__ns:={NAMESPACE}', '-r', '__node:=darknet53_detector',
            *camera_args, '-p', 'diagnostics_period:=0.5', *extra]


def _wait_file(path: Path, procs: list[subprocess.Popen], timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return True
        if any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.01)
    return False


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGINT) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_trial(args: argparse.Namespace, transport: str, size: str, cameras: int,
              subject: str) -> dict[str, Any]:
    """One trial in fresh processes; returns rates, latencies, CPU and RcvbufErrors."""
    folder = Path(tempfile.mkdtemp(prefix='ros_throughput_'))
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ['--cameras', str(cameras), '--transport', transport, '--folder', str(folder),
              '--warmup', str(args.warmup), '--measure', str(args.measure),
              '--timeout', str(args.timeout)]
    base, annotated = subject.split('+')[0], subject.endswith('+annot')
    code = Path(args.node_python_path) if base == 'old' else ROOT
    env = _env(args, ROOT)
    publisher = subprocess.Popen(me + ['_publish', '--size', size, '--rate', str(args.rate),
                                       '--out', str(folder / 'published.json'), *common]
                                 + (['--reliable'] if args.reliable else []),
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subject_proc = probe = None
    node_log = None
    procs = [publisher]
    result: dict[str, Any] = {'transport': transport, 'size': size, 'cameras': cameras,
                              'subject': subject}
    try:
        if base in ('count', 'raw'):
            subject_proc = subprocess.Popen(
                me + ['_subscribe', '--out', str(folder / 'result.json'), *common]
                + (['--raw'] if base == 'raw' else []), env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
            procs.append(subject_proc)
        else:
            node_log = (folder / 'node.log').open('w')
            extra = args.node_arg + VARIANTS.get(base, [])
            subject_proc = subprocess.Popen(  # cwd: `python -m` puts it first on sys.path
                _node_command(cameras, transport, extra, code), env=_env(args, code),
                cwd=str(code), stdout=node_log, stderr=subprocess.STDOUT)
            probe = subprocess.Popen(
                me + ['_probe', '--out', str(folder / 'result.json'), *common]
                + (['--annotated'] if annotated else []), env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs += [subject_proc, probe]
        if not _wait_file(folder / 'start', procs, args.timeout):
            raise RuntimeError(f'{subject}: no frames through within {args.timeout:g} s '
                               f'(logs in {folder})')
        cpu0, errors0, t0 = _cpu_seconds(subject_proc.pid), _rcvbuf_errors(), time.time()
        if not _wait_file(folder / 'end', procs, args.measure + 30):
            raise RuntimeError(f'{subject}: the window did not end (logs in {folder})')
        cpu1, errors1, t1 = _cpu_seconds(subject_proc.pid), _rcvbuf_errors(), time.time()
        watcher = probe or subject_proc
        watcher.wait(30)
        data = json.loads((folder / 'result.json').read_text())
    finally:
        for proc in (probe, subject_proc, publisher):
            _stop(proc)
        if node_log is not None:
            node_log.close()
    published = json.loads((folder / 'published.json').read_text())['published'] \
        if (folder / 'published.json').exists() else []
    start = float((folder / 'start').read_text())
    end = float((folder / 'end').read_text())
    window = end - start
    result['published_hz'] = [sum(start <= t < end for t in times) / window
                              for times in published]
    if data['received'] is not None and base in ('count', 'raw'):
        result['received_hz'] = [n / window for n in data['received']]
    else:
        result['received_hz'] = data['received']
    result['detected_hz'] = None if data['detected'] is None else \
        [n / window for n in data['detected']]
    result['annotated_hz'] = [n / window for n in data.get('annotated', [])]
    frames = sum(data['detected'] if data['detected'] is not None else data['received'])
    result['cpu_percent'] = 100 * (cpu1 - cpu0) / max(t1 - t0, 1e-9)
    result['cpu_ms_per_frame'] = 1e3 * (cpu1 - cpu0) / frames if frames else None
    result['rcvbuf_errors'] = errors1 - errors0
    lat = sorted(data['latency'])
    result['latency_ms'] = None if not lat else (1e3 * lat[len(lat) // 2],
                                                 1e3 * lat[min(len(lat) - 1,
                                                               int(0.99 * len(lat)))])
    result['status'] = {k: v for k, v in data.get('status', {}).items() if k.startswith('cam')}
    return result


def _mean(values: list[float] | None) -> float | None:
    return None if not values else statistics.fmean(values)


def _fmt(value: float | None, spec: str = '.1f') -> str:
    return '-' if value is None else format(value, spec)


def print_row(r: dict[str, Any]) -> None:
    lat = r['latency_ms'] or (None, None)
    levels = ','.join(str(s['level']) for s in r['status'].values()) or '-'
    print(f"{r['transport']:>4} {r['size']:>9} {r['cameras']}x {r['subject']:<11} "
          f"pub {_fmt(_mean(r['published_hz'])):>5}  recv {_fmt(_mean(r['received_hz'])):>5}  "
          f"det {_fmt(_mean(r['detected_hz'])):>5}  ann {_fmt(_mean(r['annotated_hz'])):>5}  "
          f"p50/p99 {_fmt(lat[0], '.0f'):>4}/{_fmt(lat[1], '.0f'):<4} ms  "
          f"cpu {r['cpu_percent']:5.0f} %  {_fmt(r['cpu_ms_per_frame'], '.1f'):>5} ms/frame  "
          f"rcvbuf {r['rcvbuf_errors']:>4}  diag {levels}", flush=True)
    warnings = [f"{name}: {s['message']}" for name, s in sorted(r['status'].items())
                if s['level'] and s['message']]
    if warnings and r['subject'].startswith('node'):  # this checkout's reasons
        print(f'      {warnings[0][:150]}', flush=True)


def _ratio(rows: list[dict[str, Any]], num: tuple, den: tuple, key: str) -> list[float]:
    """Per round: mean ``key`` of the ``num`` trial over that of the ``den`` trial."""
    out = []
    for rnd in sorted({r['round'] for r in rows}):
        def pick(spec: tuple, rnd: int = rnd) -> float | None:
            transport, size, cameras, subject = spec
            for r in rows:
                if (r['round'], r['transport'], r['size'], r['cameras'], r['subject']) == \
                        (rnd, transport, size, cameras, subject):
                    value = r[key]
                    return _mean(value) if isinstance(value, list) else value
            return None
        a, b = pick(num), pick(den)
        if a is not None and b:
            out.append(a / b)
    return out


def print_targets(rows: list[dict[str, Any]], have_old: bool) -> None:
    """The four targets of issue 21 as paired ratios (mean, min-max over rounds)."""
    hd, vga = '1920x1080', '640x480'
    checks = [
        ('annotated viewer: det(node+annot)/det(node), 2x1080p raw >= 0.95',
         ('raw', hd, 2, 'node+annot'), ('raw', hd, 2, 'node'), 'detected_hz'),
        ('annotated viewer: det(node+annot)/det(node), 4x640x480 raw >= 0.95',
         ('raw', vga, 4, 'node+annot'), ('raw', vga, 4, 'node'), 'detected_hz'),
        ('ingest: recv(node)/recv(raw subscriber), 4x1080p raw >= 0.95',
         ('raw', hd, 4, 'node'), ('raw', hd, 4, 'raw'), 'received_hz'),
    ]
    if have_old:
        checks += [
            ('CPU per detected frame node/old, 2x1080p raw <= 0.65',
             ('raw', hd, 2, 'node'), ('raw', hd, 2, 'old'), 'cpu_ms_per_frame'),
            ('  ... detections node/old there (>= 1.0)',
             ('raw', hd, 2, 'node'), ('raw', hd, 2, 'old'), 'detected_hz'),
            ('decode: det(node)/det(old), 4x1080p JPEG >= 1.5',
             ('jpeg', hd, 4, 'node'), ('jpeg', hd, 4, 'old'), 'detected_hz'),
            ('annotated viewer today: det(old+annot)/det(old), 2x1080p raw',
             ('raw', hd, 2, 'old+annot'), ('raw', hd, 2, 'old'), 'detected_hz'),
        ]
    print('\ntargets (paired within each round: mean [min-max], rounds)')
    for title, num, den, key in checks:
        ratios = _ratio(rows, num, den, key)
        if ratios:
            print(f'  {title}: {statistics.fmean(ratios):.2f} [{min(ratios):.2f}-'
                  f'{max(ratios):.2f}], n={len(ratios)}')
        else:
            print(f'  {title}: not measured (needs that configuration)')


def orchestrate(args: argparse.Namespace) -> int:
    missing = [m for m in ('rclpy', 'sensor_msgs.msg', 'vision_msgs.msg',
                           'diagnostic_msgs.msg') if not _importable(m)]
    if missing:
        print(f'skipped: {", ".join(missing)} not importable (source a ROS 2 Humble/Jazzy '
              'setup with vision_msgs first)')
        return 0
    if args.quick:
        args.transports, args.sizes, args.cameras = ['raw'], ['640x480'], [1]
        args.repeats, args.warmup, args.measure = 1, 1.0, 3.0
    subjects = ['count', 'raw', 'node', 'node+annot']
    if args.node_python_path and not (Path(args.node_python_path) / 'darknet53_ros' / 'ros' /
                                      'node.py').is_file():
        print(f'--node-python-path {args.node_python_path}: no darknet53_ros/ros/node.py there')
        return 2
    if args.node_python_path:
        subjects += ['old', 'old+annot']
    for variant in args.variant:
        name, _, extra = variant.partition('=')
        VARIANTS[name] = extra.split()
        subjects.append(name)
    if args.subjects:
        subjects = [s for s in subjects if s in args.subjects]
    configs = [(t, s, c) for t in args.transports for s in args.sizes for c in args.cameras]
    print(f'# node: {ROOT} ({_node_version(ROOT)})')
    if args.node_python_path:
        print(f'# old:  {args.node_python_path} ({_node_version(Path(args.node_python_path))})')
    with open('/proc/loadavg') as f:
        load = f.read().split()[:3]
    print(f'# {len(configs)} configuration(s) x {len(subjects)} subjects x {args.repeats} '
          f'round(s); {args.warmup:g} s warm-up, {args.measure:g} s window; ROS_DOMAIN_ID '
          f'{args.domain_id}; RMW {os.environ.get("RMW_IMPLEMENTATION", "default")}; '
          f'load average {" ".join(load)}; {os.cpu_count()} CPUs', flush=True)
    rows = []
    for rnd in range(args.repeats):
        order = subjects[rnd % len(subjects):] + subjects[:rnd % len(subjects)]
        for transport, size, cameras in configs:
            for subject in order:
                try:
                    row = run_trial(args, transport, size, cameras, subject)
                except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                    print(f'{transport} {size} {cameras}x {subject}: FAILED: {exc}', flush=True)
                    continue
                row['round'] = rnd
                rows.append(row)
                print_row(row)
    print_targets(rows, bool(args.node_python_path))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if rows else 1


def _importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('role', nargs='?', default='run',
                        choices=('run', '_publish', '_subscribe', '_probe'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--quick', action='store_true', help='a short smoke test')
    parser.add_argument('--transports', type=lambda s: s.split(','), default=['raw', 'jpeg'])
    parser.add_argument('--sizes', type=lambda s: s.split(','),
                        default=['640x480', '1920x1080'])
    parser.add_argument('--cameras', type=lambda s: [int(v) for v in str(s).split(',')],
                        default=[1, 2, 4])
    parser.add_argument('--subjects', type=lambda s: s.split(','), default=None,
                        help='subset of count,raw,node,node+annot,old,old+annot')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=float, default=3.0)
    parser.add_argument('--measure', type=float, default=10.0)
    parser.add_argument('--rate', type=float, default=30.0, help='Hz per camera')
    parser.add_argument('--reliable', action='store_true',
                        help='reliable camera publishers (default best effort)')
    parser.add_argument('--node-python-path', default='',
                        help="a checkout whose node is the 'old' subject (today's baseline)")
    parser.add_argument('--node-arg', action='append', default=[],
                        help='extra node arguments, e.g. --node-arg=-p --node-arg=max_batch:=2')
    parser.add_argument('--variant', action='append', default=[],
                        help="NAME='-p decode_threads:=0 ...': another subject, this node with "
                             'these arguments (NAME+annot also works in --subjects)')
    parser.add_argument('--rmw', default='', help='RMW_IMPLEMENTATION for every process')
    parser.add_argument('--dds-config', default=str(ROOT / 'config' / 'cyclonedds.xml'))
    parser.add_argument('--domain-id', type=int, default=random.randint(120, 200))
    parser.add_argument('--timeout', type=float, default=90.0)
    parser.add_argument('--json', default='', help='write every trial here')
    # worker options
    parser.add_argument('--size', default='640x480', help=argparse.SUPPRESS)
    parser.add_argument('--transport', default='raw', help=argparse.SUPPRESS)
    parser.add_argument('--folder', default='', help=argparse.SUPPRESS)
    parser.add_argument('--out', default='', help=argparse.SUPPRESS)
    parser.add_argument('--raw', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--annotated', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == 'run':
        return orchestrate(args)
    args.cameras = args.cameras[0]
    {'_publish': run_publisher, '_subscribe': run_subscriber, '_probe': run_probe}[args.role](
        args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
