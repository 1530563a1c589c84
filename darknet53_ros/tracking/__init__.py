"""Multi-object tracking of detections (NumPy; SciPy or lap for the assignment): a
ByteTrack-class tracker per camera (:class:`Tracker`) and per-camera id assignment for the
node and the offline tools (:class:`CameraTrackers`). No ROS, no torch."""
from darknet53_ros.tracking.cameras import CameraTrackers
from darknet53_ros.tracking.tracker import Tracker, TrackerConfig

__all__ = ['CameraTrackers', 'Tracker', 'TrackerConfig']
