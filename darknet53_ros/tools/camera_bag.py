"""A synthetic multi-camera rosbag2 (MCAP) of :mod:`darknet53_ros.training.synthetic` scenes,
for the demo and tests."""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile

import cv2

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.fileio import replace_path
from darknet53_ros.progress import progress as progress_iter
from darknet53_ros.training.synthetic.scenes import check_size, generate_scene

CAMERA_NAMES: tuple[str, ...] = ('front', 'left', 'right', 'rear', 'top', 'bottom')
BAG_START_NS = 1_700_000_000_000_000_000
"""Stamp of the first frame in bags from :func:`write_camera_bag` (fixed for reproducibility)."""



def camera_topics(cameras: int) -> list[tuple[str, str, str]]:
    """``(topic, msgtype, frame_id)`` per camera: even cameras raw bgr8, odd ones JPEG."""
    result = []
    for k in range(cameras):
        name = CAMERA_NAMES[k] if k < len(CAMERA_NAMES) else f'cam{k}'
        frame_id = f'{name}_camera_optical_frame'
        if k % 2 == 0:
            result.append((f'/{name}/image_raw', 'sensor_msgs/msg/Image', frame_id))
        else:
            result.append((f'/{name}/image_raw/compressed', 'sensor_msgs/msg/CompressedImage',
                           frame_id))
    return result


def write_camera_bag(path: str | os.PathLike[str], cameras: int = 2, frames: int = 20,
                     seed: int = 0, width: int = 320, height: int = 256, fps: float = 10.0,
                     overwrite: bool = False, progress: bool = False) -> dict[str, int]:
    """Write a multi-camera rosbag2 (MCAP) of synthetic scenes; returns messages per topic.

    Camera ``k`` (see :func:`camera_topics`) shows scene ``frame * cameras + k`` of stream
    ``seed``; frame ``i`` is stamped ``BAG_START_NS + i / fps + k`` milliseconds (header stamp and
    bag timestamp agree). The bag is written to a temporary folder beside ``path`` and renamed.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if cameras < 1 or frames < 1:
        raise ConfigError(f'cameras ({cameras}) and frames ({frames}) must be >= 1')
    if not fps > 0:
        raise ConfigError(f'fps {fps} must be > 0')
    check_size(width, height)
    target = Path(path)
    if target.exists() and not overwrite:
        raise SourceError(f'{target}: already exists (pass --overwrite to replace it)')
    target.parent.mkdir(parents=True, exist_ok=True)
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    Header, Time = types['std_msgs/msg/Header'], types['builtin_interfaces/msg/Time']
    Image, Compressed = types['sensor_msgs/msg/Image'], types['sensor_msgs/msg/CompressedImage']
    topics = camera_topics(cameras)
    counts = dict.fromkeys((topic for topic, _, _ in topics), 0)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f'.{target.name}.', suffix='.tmp'))
    try:
        bag = tmp / target.name
        with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = [writer.add_connection(topic, msgtype, typestore=store)
                     for topic, msgtype, _ in topics]
            for frame in progress_iter(range(frames), progress, 'bag', frames, 'img'):
                for k, ((topic, msgtype, frame_id), conn) in enumerate(zip(topics, conns)):
                    stamp = BAG_START_NS + round(frame * 1e9 / fps) + k * 1_000_000
                    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                    frame_id=frame_id)
                    image, _ = generate_scene(seed, frame * cameras + k, width, height)
                    if msgtype == 'sensor_msgs/msg/Image':
                        msg = Image(header=header, height=height, width=width, encoding='bgr8',
                                    is_bigendian=0, step=width * 3, data=image.reshape(-1))
                    else:
                        ok, data = cv2.imencode('.jpg', image, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
                        if not ok:
                            raise SourceError(f'{topic}: JPEG encoding failed')
                        msg = Compressed(header=header, format='jpeg', data=data.reshape(-1))
                    writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))
                    counts[topic] += 1
        replace_path(bag, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
