"""Replay a rosbag2 through the detector node's core, offline, into a new bag.

The same :class:`~darknet53_ros.ros.node_core.NodeCore` as the ROS node (same parameters, same
FrameScheduler, same image conversion and messages) processes the bag's image topics; the
output bag holds what the node would publish in the root namespace: ``/<camera>/detections``,
``/<camera>/detections/image`` (unless ``publish_annotated`` is false), ``/<camera>/label_info``
once and ``/diagnostics`` every ``diagnostics_period`` of bag time.

Two modes:

- deterministic (default): every frame is processed, in bag order, in this thread;
  ``max_frame_age`` is disabled and nothing is superseded (a batch is flushed as soon as it is
  full or a camera's next frame arrives). The core's clocks run on bag time, so outputs are
  stamped (bag time) after their inputs and the result is reproducible.
- ``--realtime``: messages are submitted at bag rate (``--rate`` times faster) from this thread
  while the inference thread works as on the robot, honouring ``max_frame_age``: frames are
  superseded or go stale exactly as they would live.

Cameras: ``--cameras`` entries (``NAME:TOPIC[:TRANSPORT]``, short for the ``cameras``
parameter plus ``NAME.topic`` and ``NAME.transport``, or just a bag topic), else the
``cameras`` (and ``NAME.*``) of ``--params``, else every image topic of the bag. A camera given
as a bag topic is named after it (``/front/image_raw/compressed`` -> ``front_image_raw``) and
publishes under the topic (``/front/image_raw/detections``, as
:func:`~darknet53_ros.io.bags.detections_topic`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import logging
import os
from pathlib import Path
import time
from typing import Any

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.io.bag_writer import BagWriter, bag_storage
from darknet53_ros.io.bags import BagReader, base_image_topic
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.ros.cameras import applies_to
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore
from darknet53_ros.ros.params import NodeParams, load_params_file
from darknet53_ros.tools.bag_sink import BagSink, absolute_topic

_LOG = logging.getLogger('darknet53.replay')

DIAGNOSTICS_TOPIC = '/diagnostics'


@dataclass
class ReplaySummary:
    """What a replay did."""

    output: Path
    cameras: dict[str, dict[str, Any]]
    """Per camera: the core's statistics (received, published, dropped by reason ...)."""
    topics: dict[str, int]
    """Messages written per output topic."""
    undecodable: dict[str, int] = field(default_factory=dict)
    """Input messages that could not be deserialised, per topic."""


def _auto_name(topic: str) -> str:
    """The camera name of a bag topic (a name token: ``front_image_raw``)."""
    return base_image_topic(topic).strip('/').replace('/', '_')


def _cli_camera(item: str, image_topics: dict[str, str]) -> tuple[str, str, str]:
    """``(name, base topic, transport)`` of one ``--cameras`` entry."""
    if ':' not in item and item.startswith('/'):
        if item not in image_topics:
            raise SourceError(f'--cameras: no image topic {item} in the bag (have: '
                              f'{", ".join(sorted(image_topics))})')
        compressed = image_topics[item].endswith('CompressedImage')
        return _auto_name(item), base_image_topic(item), 'compressed' if compressed else 'raw'
    parts = [p.strip() for p in item.split(':')]
    if len(parts) > 3:
        raise ConfigError(f"--cameras: {item!r} is not 'NAME[:TOPIC[:TRANSPORT]]'")
    name = parts[0]
    topic = parts[1] if len(parts) > 1 and parts[1] else f'{name}/image_raw'
    transport = parts[2] if len(parts) > 2 and parts[2] else ''
    if topic.rstrip('/').endswith('/compressed'):
        topic, transport = base_image_topic(topic), transport or 'compressed'
    return name, topic, transport or 'raw'


def _output_prefixes(params: NodeParams, named_after_topic: set[str]) -> NodeParams:
    """Cameras named after a bag topic publish under that topic (``front_image_raw`` reading
    ``/front/image_raw`` -> ``/front/image_raw/detections``)."""
    return replace(params, cameras=tuple(
        replace(c, prefix=c.topic.strip('/')) if c.name in named_after_topic else c
        for c in params.cameras))


def _camera_values(cameras: list[str] | None, values: dict[str, Any],
                   image_topics: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    """The ``cameras`` parameter and ``NAME.topic``/``NAME.transport`` for the replay (see the
    module doc; ``{}`` when the params' own cameras apply), and the cameras named after their
    bag topic."""
    if not cameras and 'cameras' in values:
        return {}, set()
    if cameras:
        entries = [_cli_camera(item, image_topics) for item in cameras]
        named = {e[0] for item, e in zip(cameras, entries)
                 if ':' not in item and item.startswith('/')}
    elif image_topics:
        entries = [(_auto_name(t), base_image_topic(t),
                    'compressed' if m.endswith('CompressedImage') else 'raw')
                   for t, m in sorted(image_topics.items())]
        named = {e[0] for e in entries}
    else:
        raise SourceError('bag: no sensor_msgs/Image or CompressedImage topics to replay')
    out: dict[str, Any] = {'cameras': [name for name, _, _ in entries]}
    for name, topic, transport in entries:
        out.update({f'{name}.topic': topic, f'{name}.transport': transport})
    return out, named


class _BagClock:
    """Deterministic mode's clocks: bag time (ns and seconds)."""

    def __init__(self) -> None:
        self.ns = 0

    def now_ns(self) -> int:
        return self.ns

    def seconds(self) -> float:
        return self.ns * 1e-9


def replay_bag(bag: str | os.PathLike[str], output: str | os.PathLike[str],
               model: str | os.PathLike[str] | None = None,
               params: str | os.PathLike[str] | dict[str, Any] | None = None,
               cameras: list[str] | None = None, backend: str | None = None,
               realtime: bool = False, rate: float = 1.0, annotated: bool = True,
               storage: str | None = None, distro: str = 'humble', overwrite: bool = False,
               detector: Any = None) -> ReplaySummary:
    """Replay ``bag`` through the node core into the new bag ``output``.

    Args:
        bag: input rosbag2.
        output: output bag directory (written atomically).
        model: model file (overrides the ``model`` parameter; relative to the cwd).
        params: a params YAML path or a dict of parameter values.
        cameras: ``--cameras`` entries (see the module doc).
        backend: overrides the ``backend`` parameter.
        realtime: bag-rate mode with the inference thread (else deterministic).
        rate: realtime speed factor.
        annotated: write annotated images (and ``publish_annotated`` is true).
        storage, distro, overwrite: output bag options (``storage`` None: the default, see
            :class:`~darknet53_ros.io.bag_writer.BagWriter`).
        detector: an already loaded Detector to use (it is closed at the end).

    Raises:
        ConfigError: bad parameters; SourceError: unreadable bag or unknown topics;
        ModelError/BackendError: the model cannot be loaded.
    """
    if not rate > 0:
        raise ConfigError(f'--rate: {rate} must be > 0')
    storage = bag_storage(storage, output)  # before any work: one line when falling back
    if isinstance(params, dict):
        values = dict(params)
        source = 'parameters'
    elif params is not None:
        values = load_params_file(params)
        source = str(params)
    else:
        values, source = {}, 'parameters'
    if backend:
        values['backend'] = backend
    types = MessageTypes.from_rosbags(distro)
    reader = BagReader(bag, types)
    reader.open()
    try:
        image_topics = {t.name: t.msgtype for t in reader.image_topics()}
        chosen, named = _camera_values(cameras, values, image_topics)
        if chosen:  # other cameras' NAME.* settings of the params file do not apply
            values = {k: v for k, v in values.items() if applies_to(k, chosen['cameras'])}
            values.update(chosen)
        if not realtime:
            values['max_frame_age'] = 0.0
        values.setdefault('annotated_max_rate', 0.0)  # offline: every frame, full size,
        values.setdefault('annotated_scale', 1.0)  # unless the params say otherwise
        node_params = _output_prefixes(NodeParams.from_dict(values, source), named)
        by_topic: dict[str, str] = {}
        for cam in node_params.cameras:
            topic = absolute_topic(cam.input_topic)
            if topic not in reader.topics:
                raise SourceError(f'rosbag2 {bag}: camera {cam.name} topic {topic} is not in '
                                  f'the bag (image topics: {", ".join(sorted(image_topics))})')
            by_topic[topic] = cam.name
        model_path = None
        if detector is None:
            model_file = None
            if model is not None:
                candidate = Path(model).expanduser()
                model_file = candidate.resolve() if candidate.is_file() else None
                if model_file is None:
                    values['model'] = str(model)
                    node_params = _output_prefixes(NodeParams.from_dict(values, source), named)
            detector, model_path = load_detector(node_params, model_path=model_file)
        with BagWriter(output, storage=storage, types=types, overwrite=overwrite) as writer:
            wanted = annotated and node_params.publish_annotated
            outputs = BagSink(writer, 'compressed' if wanted else 'none')
            messages = reader.messages(list(by_topic))
            if realtime:
                core = _run_realtime(node_params, detector, types, outputs, messages,
                                     by_topic, rate, model_path)
            else:
                core = _run_deterministic(node_params, detector, types, outputs, messages,
                                          by_topic, model_path)
            stats = core.stats()
            topics = dict(writer.counts)
        undecodable = {t: c.undecodable for t, c in reader.counts.items() if c.undecodable}
    except BaseException:
        if detector is not None:
            detector.close()
        raise
    finally:
        reader.close()
    return ReplaySummary(Path(output), stats, topics, undecodable)


def _start_outputs(core: Any, outputs: BagSink, stamp_ns: int) -> None:
    for camera in core.params.cameras:  # NAME/label_info beside NAME/detections
        label = core.label_info_msg(stamp_ns, camera.name)
        if label is not None:
            outputs.write(absolute_topic(camera.label_info_topic), stamp_ns, label)


def _run_deterministic(params: Any, detector: Any, types: Any, outputs: BagSink,
                       messages: Any, by_topic: dict[str, str], model_path: Any) -> Any:
    clock = _BagClock()
    core = NodeCore(params, detector, types, outputs, logger=_LOG, clock=clock.seconds,
                    now_ns=clock.now_ns, model_path=model_path)
    period_ns = round(params.diagnostics_period * 1e9)
    next_diag: int | None = None
    waiting: set[str] = set()
    try:
        for topic, timestamp, msg in messages:
            clock.ns = max(clock.ns, timestamp)
            if next_diag is None:
                _start_outputs(core, outputs, timestamp)
                next_diag = timestamp + period_ns
            camera = by_topic[topic]
            if camera in waiting:  # never supersede: process what waits first
                core.process_pending()
                waiting.clear()
            core.submit(camera, msg)
            waiting.add(camera)
            if len(waiting) >= params.max_batch:
                core.process_pending()
                waiting.clear()
            while timestamp >= next_diag:
                outputs.write(DIAGNOSTICS_TOPIC, next_diag, core.diagnostics_msg(next_diag))
                next_diag += period_ns
        core.process_pending()
        if next_diag is not None:
            outputs.write(DIAGNOSTICS_TOPIC, clock.ns, core.diagnostics_msg(clock.ns))
    finally:
        core.shutdown()
    return core


def _run_realtime(params: Any, detector: Any, types: Any, outputs: BagSink, messages: Any,
                  by_topic: dict[str, str], rate: float, model_path: Any) -> Any:
    start_mono = time.monotonic()
    start_bag = 0

    def now_ns() -> int:
        return start_bag + round((time.monotonic() - start_mono) * rate * 1e9)

    core = NodeCore(params, detector, types, outputs, logger=_LOG, now_ns=now_ns,
                    model_path=model_path)
    period = params.diagnostics_period / rate
    next_diag: float | None = None
    try:
        core.start()
        for topic, timestamp, msg in messages:
            if next_diag is None:
                start_mono, start_bag = time.monotonic(), timestamp
                _start_outputs(core, outputs, timestamp)
                next_diag = start_mono + period
            target = start_mono + (timestamp - start_bag) * 1e-9 / rate
            while True:
                now = time.monotonic()
                if next_diag <= min(now, target):
                    outputs.write(DIAGNOSTICS_TOPIC, now_ns(), core.diagnostics_msg())
                    next_diag += period
                    continue
                if now >= target:
                    break
                time.sleep(min(target, next_diag) - now)
            core.submit(by_topic[topic], msg)
        deadline = time.monotonic() + 30.0
        while core.scheduler.pending() and time.monotonic() < deadline:
            time.sleep(0.005)
        core.shutdown()
        if next_diag is not None:
            outputs.write(DIAGNOSTICS_TOPIC, now_ns(), core.diagnostics_msg())
    finally:
        core.shutdown()
    return core
