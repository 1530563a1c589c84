"""End-to-end tests of darknet53_ros.inference.detector with hand-built contract ONNX models."""
from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ImageError, ModelError
from darknet53_ros.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from darknet53_ros.inference.detector import Detector, DetectorConfig
from darknet53_ros.inference.postprocess import Detections

from ..conftest import requires
from .test_backends import contract_metadata, make_contract_model

pytestmark = requires('onnxruntime', 'cv2')

NAMES = ['person', 'dog', 'cat']
# Network-pixel outputs of the constant model (416x416 input).
BOXES = np.array([
    [65, 117, 130, 182],    # dog 0.9
    [66, 118, 131, 183],    # dog 0.8, IoU ~0.94 with the first: suppressed
    [65, 117, 130, 182],    # cat 0.6, same box, other class: kept
    [-10, 30, 20, 70],      # person 0.3, partly outside the image: clipped
    [200, 200, 300, 300],   # person 0.2: below the 0.25 threshold
], np.float32)
SCORES = np.zeros((5, 3), np.float32)
SCORES[[0, 1, 2, 3, 4], [1, 1, 2, 0, 0]] = [0.9, 0.8, 0.6, 0.3, 0.2]


def darknet_map(box: list[float], src_w: int, src_h: int, net_w: int, net_h: int,
                clip: bool = True) -> list[float]:
    """Network box -> source pixels with Darknet's letterbox arithmetic (independent code)."""
    if net_w / src_w < net_h / src_h:
        new_w, new_h = net_w, (src_h * net_w) // src_w
    else:
        new_w, new_h = (src_w * net_h) // src_h, net_h
    dx, dy = (net_w - new_w) // 2, (net_h - new_h) // 2
    x1, y1, x2, y2 = box
    out = [(x1 - dx) * src_w / new_w, (y1 - dy) * src_h / new_h,
           (x2 - dx) * src_w / new_w, (y2 - dy) * src_h / new_h]
    if clip:
        out = [min(max(v, 0), limit) for v, limit in zip(out, [src_w, src_h] * 2)]
    return out


@pytest.fixture(scope='module')
def square_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('models') / 'square.onnx'
    return make_contract_model(path, BOXES, SCORES, 416, 416, NAMES)


def test_detect_maps_boxes_back_to_source_pixels(square_model: Path) -> None:
    with Detector.from_model(square_model, intra_op_threads=1) as detector:
        det = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert isinstance(det, Detections)
    # 640x480 at 416: scale 0.65, 52 rows of padding on top.
    np.testing.assert_allclose(det.boxes, [[100, 100, 200, 200], [100, 100, 200, 200],
                                           [0, 0, 20 / 0.65, 18 / 0.65]], rtol=1e-5)
    np.testing.assert_allclose(det.scores, [0.9, 0.6, 0.3])
    assert det.labels == ['dog', 'cat', 'person']
    assert det.class_ids.tolist() == [1, 2, 0]


@pytest.mark.parametrize('source', [(640, 480), (480, 640), (300, 300), (1000, 50)])
def test_rectangular_network(tmp_path: Path, source: tuple[int, int]) -> None:
    net_w, net_h = 416, 256
    path = make_contract_model(tmp_path / 'rect.onnx', BOXES, SCORES, net_w, net_h, NAMES)
    detector = Detector.from_model(path, conf_threshold=0.25)
    assert (detector.width, detector.height) == (net_w, net_h)
    src_w, src_h = source
    det = detector.detect(np.full((src_h, src_w, 3), 255, np.uint8))
    expected = [darknet_map(BOXES[i].tolist(), src_w, src_h, net_w, net_h) for i in (0, 2, 3)]
    np.testing.assert_allclose(det.boxes, expected, rtol=1e-4, atol=1e-3)
    assert det.labels == ['dog', 'cat', 'person']


def test_plain_resize_mapping(square_model: Path) -> None:
    detector = Detector.from_model(square_model, letterbox=False)
    det = detector.detect(np.zeros((480, 640, 3), np.uint8))
    np.testing.assert_allclose(det.boxes[0], [65 * 640 / 416, 117 * 480 / 416,
                                              130 * 640 / 416, 182 * 480 / 416], rtol=1e-5)


def test_batches_of_mixed_sizes_in_fixed_batch_chunks(tmp_path: Path) -> None:
    # Fixed batch 2; scores scaled by each image's maximum input value: a white image keeps
    # them, a black letterboxed one halves them (grey padding 0.5).
    path = make_contract_model(tmp_path / 'fixed2.onnx', BOXES, SCORES, 416, 416, NAMES,
                               batch=2, scale_by_max=True)
    detector = Detector.from_model(path)
    assert detector.backend.max_batch == 2
    white, black = np.full((480, 640, 3), 255, np.uint8), np.zeros((640, 480), np.uint8)
    results = detector.detect_batch([white, black, white])
    assert len(results) == 3
    np.testing.assert_allclose(results[0].scores, [0.9, 0.6, 0.3])
    np.testing.assert_allclose(results[1].scores, [0.45, 0.3])
    np.testing.assert_allclose(results[2].scores, [0.9, 0.6, 0.3])
    expected = darknet_map(BOXES[0].tolist(), 480, 640, 416, 416)
    np.testing.assert_allclose(results[1].boxes[0], expected, rtol=1e-5)
    assert detector.detect_batch([]) == []


def test_separate_stages(square_model: Path) -> None:
    detector = Detector.from_model(square_model)
    images = [np.zeros((480, 640, 3), np.uint8), np.zeros((100, 100, 4), np.uint8)]
    batch, transforms = detector.preprocess(images)
    assert batch.shape == (2, 3, 416, 416) and len(transforms) == 2
    boxes, scores = detector.infer(batch)
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5, 3)
    results = detector.postprocess(boxes, scores, transforms)
    assert [len(r) for r in results] == [3, 3]
    assert results[1].boxes.max() <= 100


def test_config_names_and_thresholds(square_model: Path) -> None:
    detector = Detector.from_model(square_model, class_names=['p', 'd', 'c'],
                                   conf_threshold=0.5, max_detections=1, nms_method='numpy')
    det = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert det.labels == ['d'] and det.scores.tolist() == pytest.approx([0.9])
    agnostic = Detector.from_model(square_model, class_agnostic=True)
    assert agnostic.detect(np.zeros((480, 640, 3), np.uint8)).labels == ['dog', 'person']


@pytest.mark.parametrize('kwargs, field', [
    ({'conf_threshold': 1.5}, 'conf_threshold'),
    ({'conf_threshold': -0.01}, 'conf_threshold'),
    ({'nms_threshold': 2}, 'nms_threshold'),
    ({'max_detections': 0}, 'max_detections'),
    ({'input_width': -32}, 'input_width'),
    ({'nms_method': 'magic'}, 'nms_method'),
    ({'preprocess': 'tpu'}, 'preprocess'),
])
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DetectorConfig(**kwargs)


def test_input_size_must_match_model(square_model: Path) -> None:
    with pytest.raises(ConfigError, match='input_height: 320'):
        Detector.from_model(square_model, input_height=320)
    assert Detector.from_model(square_model, input_width=416).width == 416


def test_metadata_size_mismatch_and_missing_metadata(tmp_path: Path) -> None:
    props = contract_metadata(NAMES, 320, 416)
    path = make_contract_model(tmp_path / 'lying.onnx', BOXES, SCORES, 416, 416, NAMES,
                               metadata=props)
    with pytest.raises(ModelError, match='input_width: metadata says 320'):
        Detector.from_model(path)
    bare = make_contract_model(tmp_path / 'bare.onnx', BOXES, SCORES, 416, 416, metadata={})
    detector = Detector(OnnxRuntimeBackend(bare))
    assert detector.names is None and (detector.width, detector.height) == (416, 416)
    assert detector.detect(np.zeros((416, 416, 3), np.uint8)).labels == ['1', '2', '0']


def test_bad_image_names_its_index(square_model: Path) -> None:
    detector = Detector.from_model(square_model)
    good = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ImageError, match=r'images\[2\]: dtype float64'):
        detector.detect_batch([good, good, np.zeros((10, 10, 3))])
    with pytest.raises(ImageError, match='zero-sized'):
        detector.detect(np.zeros((0, 5, 3), np.uint8))


def test_package_exposes_detector_lazily() -> None:
    code = ('import sys, darknet53_ros; '
            'assert "darknet53_ros.inference.detector" not in sys.modules; '
            'assert "onnxruntime" not in sys.modules; '
            'from darknet53_ros import Detector; '
            'assert Detector.__module__ == "darknet53_ros.inference.detector"')
    subprocess.run([sys.executable, '-c', code], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    import darknet53_ros

    with pytest.raises(AttributeError, match='Nope'):
        darknet53_ros.Nope  # noqa: B018


class _DevicePreprocessingBackend(OnnxRuntimeBackend):
    """ONNX Runtime behind the GPU pre-processing hook, letterboxing with the kernel's model."""

    def infer_images(self, images, width, height, letterbox):
        from darknet53_ros.inference.backends.gpu_preprocess import encoding_of, model_letterbox
        from darknet53_ros.inference.preprocess import letterbox_transform

        self.calls = getattr(self, 'calls', 0) + 1
        batch = np.stack([model_letterbox(i, encoding_of(i), width, height, letterbox)
                          for i in images])
        transforms = [letterbox_transform(i.shape[1], i.shape[0], width, height, letterbox)
                      for i in images]
        return self.infer(batch), transforms


def test_preprocess_gpu_uses_the_backend_hook(square_model: Path) -> None:
    images = [np.random.default_rng(i).integers(0, 256, (120 + 40 * i, 200, 3), np.uint8)
              for i in range(3)]
    with Detector.from_model(square_model) as cpu:
        assert cpu.preprocess_on == 'cpu'
        expected = cpu.detect_batch(images)
    backend = _DevicePreprocessingBackend(square_model)
    with Detector(backend, DetectorConfig(preprocess='auto')) as gpu:
        assert gpu.preprocess_on == 'gpu'
        found = gpu.detect_batch(images)
    assert backend.calls == 1 and len(found) == 3
    for mine, ref in zip(found, expected):
        np.testing.assert_allclose(mine.boxes, ref.boxes, atol=0.5)
        assert mine.class_ids.tolist() == ref.class_ids.tolist()
    with pytest.raises(ConfigError, match='preprocess: gpu, but the onnxruntime backend'):
        Detector.from_model(square_model, preprocess='gpu')
