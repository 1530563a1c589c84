"""A synthetic multi-camera rosbag2 (MCAP; SQLite3 on Python 3.8) of
:mod:`darknet53_ros.training.synthetic` scenes, for the demo and tests."""
from __future__ import annotations

import os
from pathlib import Path

import cv2

from darknet53_ros.errors import ConfigError, SourceError
from darknet53_ros.io.bag_writer import BagWriter
from darknet53_ros.io.bags import IMAGE_TYPE
from darknet53_ros.io.messages import MessageTypes, header_msg, image_msg
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
    """Write a multi-camera rosbag2 of synthetic scenes; returns messages per topic.

    Camera ``k`` (see :func:`camera_topics`) shows scene ``frame * cameras + k`` of stream
    ``seed``; frame ``i`` is stamped ``BAG_START_NS + i / fps + k`` milliseconds (header stamp and
    bag timestamp agree). The bag is written by :class:`~darknet53_ros.io.bag_writer.BagWriter`
    (MCAP; SQLite3 where rosbags cannot write MCAP), atomically.
    """
    if cameras < 1 or frames < 1:
        raise ConfigError(f'cameras ({cameras}) and frames ({frames}) must be >= 1')
    if not fps > 0:
        raise ConfigError(f'fps {fps} must be > 0')
    check_size(width, height)
    target = Path(path)
    if target.exists() and not overwrite:
        raise SourceError(f'{target}: already exists (pass --overwrite to replace it)')
    types = MessageTypes.from_rosbags('humble')
    topics = camera_topics(cameras)
    counts = dict.fromkeys((topic for topic, _, _ in topics), 0)
    with BagWriter(target, types=types, overwrite=overwrite) as writer:
        for frame in progress_iter(range(frames), progress, 'bag', frames, 'img'):
            for k, (topic, msgtype, frame_id) in enumerate(topics):
                stamp = BAG_START_NS + round(frame * 1e9 / fps) + k * 1_000_000
                header = header_msg(types, stamp, frame_id)
                image, _ = generate_scene(seed, frame * cameras + k, width, height)
                if msgtype == IMAGE_TYPE:
                    msg = image_msg(types, header, image)
                else:
                    ok, data = cv2.imencode('.jpg', image, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
                    if not ok:
                        raise SourceError(f'{topic}: JPEG encoding failed')
                    msg = types.CompressedImage(header=header, format='jpeg',
                                                data=data.reshape(-1))
                writer.write(topic, stamp, msg)
                counts[topic] += 1
    return counts
