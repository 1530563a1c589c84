"""darknet53_ros: Darknet-53 / YOLOv3 detection for ROS 2 (ONNX Runtime and TensorRT)."""

__version__ = '0.1.0'
