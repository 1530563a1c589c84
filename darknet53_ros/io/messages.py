"""ROS 2 message building, written against message classes passed in.

The same code builds messages from rclpy's generated classes (on a robot) and from rosbags'
typestore classes (offline, tests): :class:`MessageTypes` bundles the classes, and every message
is constructed with *all* fields passed by keyword (rosbags classes are dataclasses without
defaults; rclpy classes accept keywords). ``byte`` constants (diagnostic levels) are taken from
the classes themselves, since rclpy uses ``bytes`` and rosbags ``int`` for them.

Detection2DArray layout (vision_msgs 4.x, Humble/Jazzy), see :func:`detections_to_msg`:

- ``header``: the source image header (stamp and frame_id unchanged).
- ``detections[i].header``: the source header; ``detections[i].id``: empty, or with tracking
  the track id (a decimal string, unique per camera; empty for detections without a track).
- ``detections[i].bbox.center.position.x/y``: box centre in source-image pixels,
  ``bbox.center.theta`` = 0, ``bbox.size_x/size_y``: box width/height in pixels.
- ``detections[i].results``: one ``ObjectHypothesisWithPose``: ``hypothesis.class_id`` = class
  name (or ``str(index)``), ``hypothesis.score`` = score; ``pose`` identity, zero covariance.
"""
from __future__ import annotations

import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.io.encodings import bgr_to_compressed_fields, bgr_to_image_fields
from darknet53_ros.io.rosbags_compat import get_store, store_names

__all__ = [
    'DIAGNOSTIC_LEVELS',
    'VISION_MSGS',
    'MessageTypes',
    'as_header',
    'byte_data',
    'compressed_image_msg',
    'detections_to_msg',
    'diagnostic_array_msg',
    'header_msg',
    'image_msg',
    'label_info_msg',
    'stamp_to_ns',
    'vision_msgs_definitions',
]

VISION_MSGS = ('Point2D', 'Pose2D', 'BoundingBox2D', 'ObjectHypothesis',
               'ObjectHypothesisWithPose', 'Detection2D', 'Detection2DArray', 'VisionClass',
               'LabelInfo')
"""vision_msgs 4.x message names shipped as ``darknet53_ros/msg/*.msg``."""

DIAGNOSTIC_LEVELS = ('OK', 'WARN', 'ERROR', 'STALE')
"""``diagnostic_msgs/DiagnosticStatus`` level names, by numeric value."""


@dataclass(frozen=True)
class MessageTypes:
    """The message classes the builders use, from rclpy or from a rosbags typestore."""

    flavor: str
    """``'rclpy'`` or ``'rosbags'``."""
    Time: Any
    Header: Any
    Image: Any
    CompressedImage: Any
    Point: Any
    Quaternion: Any
    Pose: Any
    PoseWithCovariance: Any
    Point2D: Any
    Pose2D: Any
    BoundingBox2D: Any
    ObjectHypothesis: Any
    ObjectHypothesisWithPose: Any
    Detection2D: Any
    Detection2DArray: Any
    DiagnosticArray: Any
    DiagnosticStatus: Any
    KeyValue: Any
    LabelInfo: Any = None
    """None with old vision_msgs installs that lack it."""
    VisionClass: Any = None
    typestore: Any = None
    """The rosbags ``Typestore`` (rosbags flavour only)."""

    @classmethod
    def from_rosbags(cls, distro: Any = 'humble') -> MessageTypes:
        """Classes from a rosbags typestore with this package's vision_msgs registered.

        Args:
            distro: ``'humble'``, ``'jazzy'`` (any ``rosbags.typesys.Stores`` name, with or
                without the ``ros2_`` prefix), a ``Stores`` member, or a ``Typestore``.

        Raises:
            ConfigError: unknown distro name.
        """
        from rosbags.typesys import Stores

        if isinstance(distro, Stores):
            store = get_store(distro.value)
        elif hasattr(distro, 'register') and hasattr(distro, 'types'):
            store = distro
        else:
            name = str(distro).lower()
            name = name if name.startswith(('ros1_', 'ros2_')) or name in ('latest', 'empty') \
                else f'ros2_{name}'
            try:
                store = get_store(name)
            except ValueError:
                raise ConfigError(f'rosbags distro: unknown typestore {distro!r} (known: '
                                  f'{", ".join(store_names())})') from None
        register_vision_msgs(store)
        types = store.types

        def get(name: str) -> Any:
            return types.get(name)

        return cls(
            flavor='rosbags',
            Time=get('builtin_interfaces/msg/Time'),
            Header=get('std_msgs/msg/Header'),
            Image=get('sensor_msgs/msg/Image'),
            CompressedImage=get('sensor_msgs/msg/CompressedImage'),
            Point=get('geometry_msgs/msg/Point'),
            Quaternion=get('geometry_msgs/msg/Quaternion'),
            Pose=get('geometry_msgs/msg/Pose'),
            PoseWithCovariance=get('geometry_msgs/msg/PoseWithCovariance'),
            DiagnosticArray=get('diagnostic_msgs/msg/DiagnosticArray'),
            DiagnosticStatus=get('diagnostic_msgs/msg/DiagnosticStatus'),
            KeyValue=get('diagnostic_msgs/msg/KeyValue'),
            typestore=store,
            **{name: get(f'vision_msgs/msg/{name}') for name in VISION_MSGS},
        )

    @classmethod
    def from_rclpy(cls) -> MessageTypes:
        """Classes from the ROS 2 Python message packages (imported here, lazily).

        Raises:
            ConfigError: a message package is missing or vision_msgs is older than 4.x.
        """
        try:
            from builtin_interfaces.msg import Time
            from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
            from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
            from sensor_msgs.msg import CompressedImage, Image
            from std_msgs.msg import Header
            import vision_msgs.msg as vision
        except ImportError as exc:
            raise ConfigError(f'ROS 2 message packages: {exc} (source your ROS 2 setup and '
                              'install ros-$ROS_DISTRO-vision-msgs)') from None
        required = [n for n in VISION_MSGS if n not in ('LabelInfo', 'VisionClass')]
        missing = [n for n in required if not hasattr(vision, n)]
        if missing:
            raise ConfigError(f'vision_msgs: missing {", ".join(missing)}; vision_msgs >= 4 '
                              '(ROS 2 Humble or newer) is required')
        return cls(
            flavor='rclpy', Time=Time, Header=Header, Image=Image,
            CompressedImage=CompressedImage, Point=Point, Quaternion=Quaternion, Pose=Pose,
            PoseWithCovariance=PoseWithCovariance, DiagnosticArray=DiagnosticArray,
            DiagnosticStatus=DiagnosticStatus, KeyValue=KeyValue,
            LabelInfo=getattr(vision, 'LabelInfo', None),
            VisionClass=getattr(vision, 'VisionClass', None),
            **{n: getattr(vision, n) for n in required},
        )

    def missing(self) -> list[str]:
        """Names of classes that are None (empty when everything is available)."""
        return [f.name for f in fields(self) if f.name not in ('flavor', 'typestore')
                and getattr(self, f.name) is None]

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes of a rosbags message (rosbags flavour only)."""
        self._need_typestore()
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, data: bytes | memoryview, msgtype: str) -> Any:
        """A rosbags message from CDR bytes (rosbags flavour only)."""
        self._need_typestore()
        return self.typestore.deserialize_cdr(data, msgtype)

    def _need_typestore(self) -> None:
        if self.typestore is None:
            raise ConfigError('MessageTypes: (de)serialisation needs the rosbags flavour')


def vision_msgs_definitions() -> dict[str, str]:
    """``{'vision_msgs/msg/Name': msg text}`` of the shipped vision_msgs 4.x definitions."""
    folder = Path(__file__).resolve().parents[1] / 'msg'  # package data (zip_safe=False)
    return {f'vision_msgs/msg/{n}': (folder / f'{n}.msg').read_text(encoding='utf-8')
            for n in VISION_MSGS}


def register_vision_msgs(typestore: Any) -> None:
    """Register the shipped vision_msgs definitions in a rosbags typestore (idempotent)."""
    from rosbags.typesys import get_types_from_msg

    typs: dict[str, Any] = {}
    for name, text in vision_msgs_definitions().items():
        typs.update(get_types_from_msg(text, name))
    typestore.register(typs)


# -- builders ----------------------------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (or of a header's ``stamp``)."""
    stamp = getattr(stamp, 'stamp', stamp)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_msg(types: MessageTypes, stamp_ns: int, frame_id: str = '') -> Any:
    """A ``std_msgs/Header`` with the given stamp (ns since epoch) and frame."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types.Header(stamp=types.Time(sec=int(sec), nanosec=int(nanosec)),
                        frame_id=str(frame_id))


def as_header(types: MessageTypes, header: Any, now_ns: Callable[[], int]) -> Any:
    """``header`` as a ``std_msgs/Header`` of ``types``: as it is when it already is one,
    rebuilt from its ``stamp`` and ``frame_id`` otherwise (a header read from CDR), stamped
    ``now_ns()`` when None."""
    if header is None:
        return header_msg(types, now_ns(), '')
    if isinstance(header, types.Header):
        return header
    return header_msg(types, stamp_to_ns(header), str(getattr(header, 'frame_id', '')))


def _identity_pose(types: MessageTypes) -> Any:
    return types.PoseWithCovariance(
        pose=types.Pose(position=types.Point(x=0.0, y=0.0, z=0.0),
                        orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36, dtype=np.float64))


def detections_to_msg(types: MessageTypes, header: Any, boxes: Any, scores: Any,
                      class_ids: Any, names: Sequence[str] | None = None,
                      class_id_format: str = 'name', ids: Sequence[str] | None = None) -> Any:
    """Build a ``vision_msgs/Detection2DArray`` (always; empty when there are no boxes).

    Args:
        types: message classes.
        header: the source image header (reused as array and per-detection header).
        boxes: [n, 4] x1, y1, x2, y2 in source-image pixels.
        scores: [n] confidences.
        class_ids: [n] integer class indices.
        names: class names by index (optional).
        class_id_format: ``'name'`` (name when known, else ``str(index)``) or ``'index'``.
        ids: [n] ``Detection2D.id`` strings (track ids; default empty).

    Rows with non-finite coordinates or scores are skipped.

    Raises:
        ConfigError: bad ``class_id_format``.
        ValueError: array shapes disagree.
    """
    if class_id_format not in ('name', 'index'):
        raise ConfigError(f'class_id_format: expected name or index, got {class_id_format!r}')
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else \
        np.zeros((0, 4))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(class_ids):
        raise ValueError(f'detections: {len(boxes)} boxes, {len(scores)} scores and '
                         f'{len(class_ids)} class ids')
    if ids is not None and len(ids) != len(boxes):
        raise ValueError(f'detections: {len(ids)} ids for {len(boxes)} boxes')
    id_texts = [''] * len(boxes) if ids is None else [str(i) for i in ids]
    labels = list(names) if class_id_format == 'name' and names is not None else []
    detections = []
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    for (x1, y1, x2, y2), score, cls, ok, ident in zip(boxes.tolist(), scores.tolist(),
                                                       class_ids.tolist(), finite.tolist(),
                                                       id_texts):
        if not ok:
            continue
        label = labels[cls] if 0 <= cls < len(labels) else str(cls)
        bbox = types.BoundingBox2D(
            center=types.Pose2D(position=types.Point2D(x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0),
                                theta=0.0),
            size_x=float(x2 - x1), size_y=float(y2 - y1))
        result = types.ObjectHypothesisWithPose(
            hypothesis=types.ObjectHypothesis(class_id=str(label), score=float(score)),
            pose=_identity_pose(types))
        detections.append(types.Detection2D(header=header, results=[result], bbox=bbox,
                                            id=ident))
    return types.Detection2DArray(header=header, detections=detections)


def label_info_msg(types: MessageTypes, header: Any, names: Sequence[str],
                   threshold: float) -> Any:
    """Build a ``vision_msgs/LabelInfo``: class index -> name, and the score threshold.

    Raises:
        ConfigError: the installed vision_msgs lacks LabelInfo, or more than 65535 classes.
    """
    if types.LabelInfo is None or types.VisionClass is None:
        raise ConfigError('vision_msgs: LabelInfo is not available (vision_msgs >= 4.1 needed)')
    if len(names) > 65535:
        raise ConfigError(f'names: {len(names)} classes do not fit uint16 class ids')
    class_map = [types.VisionClass(class_id=i, class_name=str(n)) for i, n in enumerate(names)]
    return types.LabelInfo(header=header, class_map=class_map, threshold=float(threshold))


def _level(types: MessageTypes, level: Any) -> Any:
    if isinstance(level, bytes):
        level = level[0] if level else 0
    if isinstance(level, str):
        name = level.upper()
    else:
        index = int(level)
        if not 0 <= index < len(DIAGNOSTIC_LEVELS):
            raise ConfigError(f'diagnostic level: {level!r} is not 0..3')
        name = DIAGNOSTIC_LEVELS[index]
    if name not in DIAGNOSTIC_LEVELS:
        raise ConfigError(f'diagnostic level: {level!r} is not one of {DIAGNOSTIC_LEVELS}')
    return getattr(types.DiagnosticStatus, name)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (float, np.floating)):
        return f'{float(value):.6g}'
    if isinstance(value, Mapping):
        return ', '.join(f'{k}={_format_value(v)}' for k, v in value.items())
    return str(value)


def diagnostic_array_msg(types: MessageTypes, header: Any,
                         statuses: Mapping[str, Mapping[str, Any]],
                         hardware_id: str = '') -> Any:
    """Build a ``diagnostic_msgs/DiagnosticArray`` from plain dicts.

    ``statuses`` maps a status name (e.g. ``'darknet53: /cam0'``) to a dict of values. The
    optional keys ``level`` (0..3 or ``'OK'``/``'WARN'``/``'ERROR'``/``'STALE'``, default OK),
    ``message`` and ``hardware_id`` fill those fields; every other key becomes a ``KeyValue``
    (floats as ``%.6g``, bools as true/false, nested dicts as ``k=v, ...``).
    """
    status_msgs = []
    for name, stats in statuses.items():
        values = [types.KeyValue(key=str(k), value=_format_value(v)) for k, v in stats.items()
                  if k not in ('level', 'message', 'hardware_id')]
        status_msgs.append(types.DiagnosticStatus(
            level=_level(types, stats.get('level', 0)), name=str(name),
            message=str(stats.get('message', '')),
            hardware_id=str(stats.get('hardware_id', hardware_id)), values=values))
    return types.DiagnosticArray(header=header, status=status_msgs)


def byte_data(types: MessageTypes, data: Any) -> Any:
    """``data`` (uint8 array or bytes) as a ``uint8[]`` field value of ``types``' messages:
    ``array('B')`` for rclpy (copied from bytes at once; its constructors convert anything else
    element by element, 50 ms for a 640x480 bgr8 image on Humble, and its field setters refuse
    numpy arrays), a flat uint8 array for rosbags (what its CDR serializer takes)."""
    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if types.flavor == 'rclpy':
        return array.array('B', raw.tobytes())
    return raw


def image_msg(types: MessageTypes, header: Any, bgr: np.ndarray, encoding: str = 'bgr8') -> Any:
    """Build a ``sensor_msgs/Image`` from a uint8 BGR image (see ``bgr_to_image_fields``)."""
    f = bgr_to_image_fields(bgr, encoding)
    return types.Image(header=header, height=f['height'], width=f['width'],
                       encoding=f['encoding'], is_bigendian=f['is_bigendian'], step=f['step'],
                       data=byte_data(types, f['data']))


def compressed_image_msg(types: MessageTypes, header: Any, bgr: np.ndarray,
                         fmt: str = 'jpeg', quality: int = 90) -> Any:
    """Build a ``sensor_msgs/CompressedImage`` (jpeg or png) from a uint8 BGR image."""
    f = bgr_to_compressed_fields(bgr, fmt, quality)
    return types.CompressedImage(header=header, format=f['format'],
                                 data=byte_data(types, f['data']))
