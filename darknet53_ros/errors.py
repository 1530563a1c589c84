"""Exception types, one per domain; each message names the file, topic or field at fault."""


class Darknet53Error(Exception):
    """Base class of every error this package raises on purpose."""


class DarknetError(Darknet53Error):
    """A Darknet ``.cfg`` or ``.weights`` file is malformed or inconsistent."""


class ExportError(Darknet53Error):
    """A network cannot be exported to ONNX (unsupported layer, bad input size)."""


class ModelError(Darknet53Error):
    """An ONNX model does not follow this package's input/output contract."""


class BackendError(Darknet53Error):
    """An inference backend cannot be created or failed to run."""


class EngineError(BackendError):
    """A TensorRT engine cannot be built, loaded or does not match its metadata."""


class ImageError(Darknet53Error):
    """An image or image message cannot be decoded (encoding, size, corrupt data)."""


class SourceError(Darknet53Error):
    """An input source (file, folder, video, rosbag2, topic) cannot be read."""


class ConfigError(Darknet53Error):
    """A parameter, option or configuration value is invalid."""


class DatasetError(Darknet53Error):
    """A dataset (annotations, label files, images) is malformed."""
