"""The node core with ``tracking: true``: stable Detection2D.id per camera (no ROS needed)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from darknet53_ros.inference.detector import DetectorConfig
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import NodeParams

from ..conftest import requires

pytestmark = requires('cv2')


class BrightBoxDetector:
    """Finds the bright rectangle of each image (score 0.9, class 1): a deterministic stand-in
    for a model, so the test is about ids, not detection."""

    names = ['a', 'b']
    width = height = 64

    def __init__(self) -> None:
        self.config = DetectorConfig()
        self.backend = SimpleNamespace(model_path='fake.onnx', verification=None,
                                       describe=lambda: {'backend': 'fake', 'precision': 'fp32'})

    def detect_batch(self, images: list) -> list:
        out = []
        for image in images:
            ys, xs = np.nonzero(image[..., 0] > 128)
            boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float) \
                if len(xs) else np.zeros((0, 4))
            out.append(SimpleNamespace(boxes=boxes, scores=np.full(len(boxes), 0.9),
                                       class_ids=np.ones(len(boxes), np.int64)))
        return out

    def close(self) -> None:
        pass


class Collect(Outputs):
    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def detections(self, camera: Any, msg: Any, stamp_ns: int) -> None:
        self.msgs.append((camera.name, msg))


def _frame(types: Any, k: int, stamp_ns: int) -> Any:
    from darknet53_ros.io.messages import header_msg, image_msg

    image = np.zeros((120, 320, 3), np.uint8)
    x = 20 + 2 * k
    image[30:90, x:x + 30] = 255
    return image_msg(types, header_msg(types, stamp_ns, 'cam'), image)


@pytest.mark.parametrize('tracking', [True, False])
def test_one_object_keeps_one_id_across_100_frames_with_a_dropped_frame(
        tracking: bool, message_types: Any) -> None:
    types = message_types
    params = NodeParams.from_dict({'cameras': ['front', 'rear'], 'front.tracking': tracking,
                                   'rear.tracking': tracking, 'max_frame_age': 0.0})
    outputs = Collect()
    core = NodeCore(params, BrightBoxDetector(), types, outputs)  # type: ignore[arg-type]
    for k in range(100):
        if k == 50:
            continue  # dropped: the next stamp is two frame periods later
        stamp = 10**12 + k * 33_333_333
        core.submit('front', _frame(types, k, stamp))
        core.submit('rear', _frame(types, 99 - k, stamp))
        core.process_pending()
    ids = {'front': [], 'rear': []}  # type: dict[str, list[str]]
    for camera, msg in outputs.msgs:
        assert len(msg.detections) == 1
        ids[camera].append(msg.detections[0].id)
    assert len(ids['front']) == len(ids['rear']) == 99
    expected = {'1'} if tracking else {''}
    assert set(ids['front']) == set(ids['rear']) == expected
    core.shutdown()


@requires('onnxruntime', 'onnx')
def test_demo_model_follows_a_cone_with_one_id(tmp_path: Any, message_types: Any) -> None:
    """What the ROS test of the node does, without ROS: the bundled demo model on a cone
    crossing the view, 100 frames at 30 fps with one dropped; one id throughout."""
    from darknet53_ros.io.messages import header_msg, image_msg
    from darknet53_ros.ros.model_files import load_detector

    from .test_tracking_ros import _cone_frames

    types = message_types
    params = NodeParams.from_dict({'cameras': ['front'], 'front.tracking': True,
                                   'conf_threshold': 0.1, 'max_frame_age': 0.0})
    detector, path = load_detector(params, share_dir=False, cache_dir=tmp_path)
    outputs = Collect()
    core = NodeCore(params, detector, types, outputs, model_path=path)
    frame = _cone_frames()
    for k in range(100):
        if k != 50:
            core.submit('front', image_msg(types, header_msg(types, k * 33_333_333 + 1, 'f'),
                                           frame(k)))
            core.process_pending()
    core.shutdown()
    best = [max(m.detections, key=lambda d: d.results[0].hypothesis.score).id
            for _, m in outputs.msgs if m.detections]
    tracked = [i for i in best if i]
    assert len(tracked) >= 90 and len(set(tracked)) == 1, best
