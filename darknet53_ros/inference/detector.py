"""The detection pipeline: preprocess -> backend inference -> postprocess, per image or batch.

>>> from darknet53_ros import Detector
>>> with Detector.from_model('yolov3.onnx', conf_threshold=0.3) as detector:
...     detections = detector.detect(cv2.imread('dog.jpg'))
...     for box, label, score in zip(detections.boxes, detections.labels, detections.scores):
...         print(label, score, box)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
import logging
import os
from typing import Any, cast

import numpy as np

from darknet53_ros.errors import BackendError, ConfigError, ModelError
from darknet53_ros.inference.backends.base import Backend
from darknet53_ros.inference.backends.gpu_preprocess import (
    PREPROCESS_MODES,
    DevicePreprocessing,
    resolve_preprocess,
)
from darknet53_ros.inference.backends.registry import create_backend
from darknet53_ros.inference.postprocess import (
    Detections,
    check_nms_method,
    check_thresholds,
    postprocess,
)
from darknet53_ros.inference.preprocess import (
    ImageBatch,
    LetterboxTransform,
    Preprocessor,
    check_image,
)

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    """Detection parameters.

    Attributes:
        input_width, input_height: network input size; ``None`` reads it from the model
            (contract metadata, else the model's fixed input shape).
        conf_threshold: keep (box, class) pairs with ``score >= conf_threshold``, in [0, 1].
        nms_threshold: suppress same-class boxes with IoU above this, in [0, 1].
        max_detections: at most this many detections per image.
        letterbox: keep the aspect ratio with grey padding (Darknet); ``False`` stretches.
        class_names: overrides the model's ``names`` metadata.
        nms_method: ``'auto'``, ``'opencv'`` or ``'numpy'`` (identical results).
        class_agnostic: suppress across classes too.
        preprocess: ``'auto'`` (on the GPU when the backend can, else the CPU), ``'cpu'`` or
            ``'gpu'`` (the TensorRT backend's letterbox kernel; ConfigError elsewhere). With
            ``auto``, a first GPU batch that fails with a BackendError (no nvcc/NVRTC to
            compile the kernel, ...) logs one warning and the detector stays on the CPU.
    """

    input_width: int | None = None
    input_height: int | None = None
    conf_threshold: float = 0.25
    nms_threshold: float = 0.45
    max_detections: int = 100
    letterbox: bool = True
    class_names: Sequence[str] | None = None
    nms_method: str = 'auto'
    class_agnostic: bool = False
    preprocess: str = 'auto'

    def __post_init__(self) -> None:
        check_thresholds(self.conf_threshold, self.nms_threshold, self.max_detections)
        for field in ('input_width', 'input_height'):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
                raise ConfigError(f'{field}: {value!r} must be a positive integer')
        check_nms_method(self.nms_method)
        if self.preprocess not in PREPROCESS_MODES:
            raise ConfigError(f'preprocess: {self.preprocess!r}, expected one of '
                              f'{", ".join(PREPROCESS_MODES)}')


_CONFIG_FIELDS = frozenset(f.name for f in fields(DetectorConfig))


class Detector:
    """Detect objects with a contract model behind any :class:`Backend`.

    The stages are callable separately (for timing or custom pipelines):
    :meth:`preprocess`, :meth:`infer`, :meth:`postprocess`. The preprocessed batch lives in a
    reused buffer, so one detector must not be shared between threads.
    """

    def __init__(self, backend: Backend, config: DetectorConfig | None = None) -> None:
        self.backend = backend
        self.config = config or DetectorConfig()
        metadata = getattr(backend, 'metadata', None) or {}
        _, _, model_h, model_w = backend.input_shape
        self.width = self._size('input_width', self.config.input_width,
                                metadata.get('input_width'), model_w)
        self.height = self._size('input_height', self.config.input_height,
                                 metadata.get('input_height'), model_h)
        names = self.config.class_names or metadata.get('names')
        self.names: tuple[str, ...] | None = tuple(names) if names else None
        self._fixed_batch = backend.fixed_batch
        self._chunk = backend.max_batch if backend.max_batch and backend.max_batch > 0 else None
        self._preprocessor = Preprocessor(self.width, self.height, self.config.letterbox)
        #: where images are letterboxed: ``'cpu'`` or ``'gpu'`` (backend ``infer_images``)
        self.preprocess_on = resolve_preprocess(self.config.preprocess, backend)
        self._gpu_proven = False

    @staticmethod
    def _size(field: str, configured: int | None, metadata: int | None,
              model: int | None) -> int:
        """Input size: configured, else the metadata's, else the model's fixed shape."""
        if metadata is not None and model is not None and metadata != model:
            raise ModelError(f'{field}: metadata says {metadata} but the model input is {model}')
        if configured is not None and model is not None and configured != model:
            raise ConfigError(f"{field}: {configured} differs from the model's fixed input "
                              f'size {model}')
        size = configured or metadata or model
        if not size:
            raise ConfigError(f'{field}: not set and not found in the model')
        return int(size)

    @classmethod
    def from_model(cls, path: str | os.PathLike[str], backend: str = 'auto',
                   **kw: Any) -> Detector:
        """Load ``path`` with :func:`create_backend`; ``kw`` naming :class:`DetectorConfig`
        fields configure detection, the others go to the backend (``device``,
        ``intra_op_threads``, ...)."""
        config = DetectorConfig(**{k: v for k, v in kw.items() if k in _CONFIG_FIELDS})
        opts = {k: v for k, v in kw.items() if k not in _CONFIG_FIELDS}
        instance = create_backend(path, backend, **opts)
        try:
            return cls(instance, config)
        except BaseException:
            instance.close()
            raise

    def preprocess(self, images: ImageBatch) -> tuple[np.ndarray, list[LetterboxTransform]]:
        """Letterbox ``images`` into the reused ``[B, 3, H, W]`` batch (padded to the model's
        fixed batch when it has one); return ``(batch, transforms)``."""
        return self._preprocessor(images, batch_size=self._fixed_batch)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the backend; return its ``(boxes [B, N, 4], scores [B, N, C])``."""
        outputs = self.backend.infer(batch)
        try:
            return outputs['boxes'], outputs['scores']
        except KeyError as exc:
            raise ModelError(f'backend output {exc} missing (got {list(outputs)})') from None

    def postprocess(self, boxes: np.ndarray, scores: np.ndarray,
                    transforms: Sequence[LetterboxTransform]) -> list[Detections]:
        """Threshold, NMS and map back to source pixels (one :class:`Detections` per
        transform)."""
        cfg = self.config
        return postprocess(boxes, scores, transforms, cfg.conf_threshold, cfg.nms_threshold,
                           cfg.max_detections, self.names, cfg.nms_method, cfg.class_agnostic)

    def detect(self, image: np.ndarray) -> Detections:
        """Detect objects in one image (``uint8`` BGR, grey or BGRA)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: ImageBatch) -> list[Detections]:
        """Detect objects in several images (any sizes), in chunks of the backend's batch."""
        items = list(images) if not isinstance(images, np.ndarray) or images.ndim == 4 \
            else [images]
        step = self._chunk or max(len(items), 1)
        results: list[Detections] = []
        for start in range(0, len(items), step):
            if self.preprocess_on == 'gpu':
                gpu = self._detect_on_device(items[start:start + step], start)
                if gpu is not None:
                    results.extend(gpu)
                    continue
            batch, transforms = self._preprocessor(items[start:start + step],
                                                   batch_size=self._fixed_batch, start=start)
            boxes, scores = self.infer(batch)
            results.extend(self.postprocess(boxes, scores, transforms))
        return results

    def _detect_on_device(self, images: list[np.ndarray], start: int,
                          ) -> list[Detections] | None:
        """Pre-process and run ``images`` through the backend's ``infer_images``; ``None``
        when ``auto`` gave up on the GPU (its first batch failed) and the CPU should run it."""
        for i, image in enumerate(images):
            check_image(image, f'images[{start + i}]')
        try:
            outputs, transforms = cast(DevicePreprocessing, self.backend).infer_images(
                images, self.width, self.height, self.config.letterbox)
        except BackendError as exc:
            if self._gpu_proven or self.config.preprocess != 'auto':
                raise
            _LOG.warning('preprocess auto: GPU pre-processing failed on the first batch (%s); '
                         'pre-processing on the CPU from now on', exc)
            self.preprocess_on = 'cpu'
            return None
        self._gpu_proven = True
        return self.postprocess(outputs['boxes'], outputs['scores'], transforms)

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
