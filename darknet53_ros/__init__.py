"""darknet53_ros: Darknet-53 / YOLOv3 detection for ROS 2 (ONNX Runtime and TensorRT)."""

__version__ = '0.1.0'


def __getattr__(name: str) -> object:
    """Import :class:`~darknet53_ros.detector.Detector` lazily (``from darknet53_ros import
    Detector``) so that importing the package stays free of heavy dependencies."""
    if name == 'Detector':
        from darknet53_ros.detector import Detector

        return Detector
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
