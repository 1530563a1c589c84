"""The one bag-in / bag-out writer: detections and annotated images into a new rosbag2.

:class:`BagSink` wraps an open :class:`~darknet53_ros.io.bag_writer.BagWriter` (topics are
registered on first write; writes are serialised by a lock, so an inference thread and the
feeding thread may share it). It serves both offline paths:

* ``darknet53 detect`` on a bag (:mod:`darknet53_ros.tools.runner`): :meth:`BagSink.add_frame`
  turns a :class:`~darknet53_ros.io.sources.Frame` and its detections into
  ``<topic>/detections`` and an annotated image topic;
* ``darknet53 replay`` (:mod:`darknet53_ros.tools.replay`): as the node core's
  :class:`~darknet53_ros.ros.node_core.Outputs`, it writes what the node would publish.
"""
from __future__ import annotations

from collections.abc import Sequence
import threading
from typing import Any

import numpy as np

from darknet53_ros.errors import ConfigError
from darknet53_ros.io.bag_writer import BagWriter
from darknet53_ros.io.bags import annotated_topic, detections_topic
from darknet53_ros.io.messages import (
    compressed_image_msg,
    detections_to_msg,
    header_msg,
    image_msg,
)
from darknet53_ros.io.sources import Frame
from darknet53_ros.ros.node_core import Outputs

ANNOTATED_FORMATS = ('compressed', 'raw', 'none')
"""Annotated image topics: JPEG ``CompressedImage``, raw ``bgr8`` ``Image``, or none."""


def absolute_topic(topic: str) -> str:
    """A node-relative topic as written to a bag from the root namespace (``a/b`` -> ``/a/b``);
    private (``~``) names cannot be replayed."""
    if topic.startswith('~'):
        raise ConfigError(f'parameter cameras: private topic {topic!r} cannot be replayed '
                          '(use an absolute or relative name)')
    return topic if topic.startswith('/') else f'/{topic}'


class BagSink(Outputs):
    """Writes detection and annotated-image messages into an open bag writer.

    Args:
        writer: an open :class:`~darknet53_ros.io.bag_writer.BagWriter` (its ``types`` build the
            messages).
        annotated: ``'compressed'``, ``'raw'`` or ``'none'`` (see :data:`ANNOTATED_FORMATS`).
        names: class names for :meth:`add_frame`'s detection messages.
    """

    def __init__(self, writer: BagWriter, annotated: str = 'compressed',
                 names: Sequence[str] | None = None) -> None:
        if annotated not in ANNOTATED_FORMATS:
            raise ConfigError(f'--annotated must be one of {", ".join(ANNOTATED_FORMATS)}')
        self.writer = writer
        self.types = writer.types
        self.annotated_format = annotated
        self.names = names
        self.lock = threading.Lock()

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Write one message (thread-safe)."""
        with self.lock:
            self.writer.write(topic, stamp_ns, msg)

    # -- the node core's Outputs (replay) --------------------------------------------------
    def detections(self, camera: Any, msg: Any, stamp_ns: int) -> None:
        """A camera's ``Detection2DArray`` on its detections topic."""
        self.write(absolute_topic(camera.detections_topic), stamp_ns, msg)

    def wants_annotated(self, camera: Any) -> bool:
        """Whether annotated images are written at all."""
        return self.annotated_format != 'none'

    def annotated(self, camera: Any, msg: Any, stamp_ns: int) -> None:
        """A camera's annotated image message on its annotated topic."""
        self.write(absolute_topic(camera.annotated_topic), stamp_ns, msg)

    # -- offline runner frames ---------------------------------------------------------------
    def add_frame(self, frame: Frame, det: Any, annotated: np.ndarray | None,
                  ids: Sequence[str] | None = None) -> None:
        """Detections of a bag frame (with ``ids`` as ``Detection2D.id``, and its annotated
        image, when given) under the frame's topic
        (:func:`~darknet53_ros.io.bags.detections_topic`,
        :func:`~darknet53_ros.io.bags.annotated_topic`)."""
        assert frame.topic is not None
        header = frame.header if frame.header is not None else header_msg(
            self.types, frame.stamp_ns or 0)
        when = frame.log_time_ns if frame.log_time_ns is not None else (frame.stamp_ns or 0)
        msg = detections_to_msg(self.types, header, det.boxes, det.scores, det.class_ids,
                                self.names, ids=ids)
        self.write(detections_topic(frame.topic), when, msg)
        if annotated is None or self.annotated_format == 'none':
            return
        base = annotated_topic(frame.topic)
        if self.annotated_format == 'compressed':
            self.write(base + '/compressed', when,
                       compressed_image_msg(self.types, header, annotated, 'jpeg', 90))
        else:
            self.write(base, when, image_msg(self.types, header, annotated, 'bgr8'))

    def close(self, ok: bool = True) -> list[str]:
        """Finalise the bag (``ok``) or discard it; returns the written bag's path, if any."""
        if not ok:
            self.writer.abort()
            return []
        return [str(self.writer.close())]
