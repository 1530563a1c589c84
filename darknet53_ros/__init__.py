"""darknet53_ros: Darknet-53 / YOLOv3 detection for ROS 2 (ONNX Runtime and TensorRT)."""

from darknet53_ros.version import __version__

__all__ = ['Detector', '__version__']


def __getattr__(name: str) -> object:
    """Import ``Detector`` lazily (``from darknet53_ros import Detector``) so that importing the
    package stays free of heavy dependencies."""
    if name == 'Detector':
        from darknet53_ros.inference.detector import Detector

        return Detector
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
