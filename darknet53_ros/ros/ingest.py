"""Camera subscription callbacks that read serialized frames: :class:`RawIngest`.

The node subscribes with rclpy's ``raw=True``: the callback gets the CDR payload as ``bytes``
and :mod:`darknet53_ros.io.cdr` reads the header fields and views the pixels without copying.
rclpy's own conversion (a Python ``array`` filled element by element, then the message
object) limited a 4x1080p30 node to 21 Hz per camera where a ``raw=True`` subscriber kept
28 Hz (issue 21). A payload the reader does not parse (an encapsulation other than plain
CDR) goes through ``deserialize`` (rclpy's ``deserialize_message``); one neither can read is
handed on as an :class:`~darknet53_ros.io.cdr.UnreadableFrame`, which the decoder drops as
``bad_image`` with the reason. No rclpy here: the node passes the functions in.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from darknet53_ros.io.cdr import (
    CdrError,
    CdrUnsupportedError,
    UnreadableFrame,
    read_compressed_image,
    read_image,
)

__all__ = ['RawIngest']


class RawIngest:
    """The callback of one camera's ``raw=True`` subscription.

    Args:
        submit: ``(camera, message)``, the node core's ``submit``.
        camera: the camera name.
        compressed: ``sensor_msgs/CompressedImage`` (else ``Image``).
        deserialize: ``bytes -> message`` fallback (rclpy's ``deserialize_message`` for the
            subscription's type), or None.
    """

    def __init__(self, submit: Callable[[str, Any], Any], camera: str, compressed: bool,
                 deserialize: Callable[[bytes], Any] | None = None) -> None:
        """Create the callback; counts frames read by the CDR reader and by the fallback."""
        self.submit = submit
        self.camera = camera
        self.read = read_compressed_image if compressed else read_image
        self.deserialize = deserialize
        self.read_cdr = 0
        self.read_fallback = 0

    def __call__(self, data: Any) -> None:
        """Read one payload (or pass a deserialized message on) and submit it; never raises
        for bad data."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self.submit(self.camera, data)  # a message object (not a raw subscription)
            return
        msg: Any
        try:
            msg = self.read(data)
            self.read_cdr += 1
        except CdrUnsupportedError as exc:
            msg = self._fallback(data, exc)
        except CdrError as exc:
            msg = UnreadableFrame(exc)
        self.submit(self.camera, msg)

    def _fallback(self, data: Any, error: CdrError) -> Any:
        if self.deserialize is None:
            return UnreadableFrame(error)
        try:
            msg = self.deserialize(bytes(data))
        except Exception as exc:  # rclpy raises its own types
            return UnreadableFrame(CdrError(f'{error}; the RMW cannot deserialize it either: '
                                            f'{type(exc).__name__}: {exc}'))
        self.read_fallback += 1
        return msg
