"""TensorRT build helpers: decode layers pinned to FP32, the legacy INT8 calibrator, build
progress, and the ONNX facts the plan needs (decode tensors).

TensorRT is imported lazily, inside the functions that need it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
import logging
from pathlib import Path
import threading
from typing import Any

import numpy as np

from darknet53_ros.errors import EngineError
from darknet53_ros.fileio import atomic_write_bytes
from darknet53_ros.inference.backends.cuda_runtime import CudaContext
from darknet53_ros.inference.preprocess import preprocess
from darknet53_ros.optimize.calibration import calibration_hash, calibration_images, image_digest
from darknet53_ros.progress import progress_bar

_LOG = logging.getLogger(__name__)

#: ONNX ops that end the convolutional part; what follows the last of them is the decode.
_COMPUTE_OPS = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')


# --------------------------------------------------------------------------------------------
# The YOLO decode, kept in FP32


def decode_names(model: Any) -> list[str]:
    """Names of the decode part of an ONNX graph: node names and the tensors (outputs and
    initializers) of every node after the last convolution on each path to an output."""
    producers = {out: node for node in model.graph.node for out in node.output}
    feeds_compute: dict[int, bool] = {}

    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches_compute(node: Any) -> bool:
        key = id(node)
        if key not in feeds_compute:
            feeds_compute[key] = False  # cycle guard (graphs are acyclic)
            feeds_compute[key] = node.op_type in _COMPUTE_OPS or any(
                reaches_compute(c) for out in node.output for c in consumers.get(out, ()))
        return feeds_compute[key]

    names: list[str] = []
    for node in model.graph.node:
        if reaches_compute(node) or node.op_type in ('QuantizeLinear', 'DequantizeLinear'):
            continue
        if node.name:
            names.append(node.name)
        names.extend(node.output)
        names.extend(i for i in node.input if i and i not in producers)
    images = {i.name for i in model.graph.input}
    return sorted(set(names) - images)


def pin_decode_fp32(network: Any, decode: Iterable[str]) -> int:
    """Constrain the decode layers of a weakly typed ``network`` to FP32 (precision and
    output types); returns how many layers were pinned. Needs ``OBEY_PRECISION_CONSTRAINTS``
    on the builder config."""
    import tensorrt as trt

    names = set(decode)
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if layer.name not in names and not any(o.name in names for o in outputs):
            continue
        if not outputs or any(o.dtype not in floats for o in outputs):
            continue  # shape arithmetic and integer constants keep their types
        layer.precision = trt.float32
        for j in range(len(outputs)):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


# --------------------------------------------------------------------------------------------
# Build progress (TensorRT >= 10)


def progress_monitor(enabled: bool) -> Any:
    """A ``trt.IProgressMonitor`` showing build phases as progress bars, else ``None``."""
    import tensorrt as trt

    if not enabled or not hasattr(trt, 'IProgressMonitor'):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tuple[Any, list[int]]] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None,
                        num_steps: int) -> None:
            with self._lock:
                self._bars[phase_name] = (progress_bar(True, phase_name, num_steps), [0])

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                entry = self._bars.get(phase_name)
                if entry is not None:
                    bar, done = entry
                    bar.update(step + 1 - done[0])
                    done[0] = step + 1
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                entry = self._bars.pop(phase_name, None)
                if entry is not None:
                    entry[0].close()

    return Monitor()


# --------------------------------------------------------------------------------------------
# Legacy INT8 calibration of an FP32 model (TensorRT < 11)


def calibration_batches(source: str | Path, width: int, height: int, batch_size: int,
                        count: int | None = None) -> Iterator[np.ndarray]:
    """Preprocessed ``[batch, 3, H, W]`` float32 batches from a calibration source.

    A last incomplete batch is dropped (TensorRT's calibration profile has a fixed batch).
    """
    buffer: list[np.ndarray] = []
    for i, item in enumerate(calibration_images(source)):
        if count is not None and i >= count:
            break
        buffer.append(item.image)
        if len(buffer) == batch_size:
            batch, _ = preprocess(buffer, width, height)
            yield np.ascontiguousarray(batch)
            buffer = []


def calibration_source_hash(source: str | Path, count: int | None = None) -> str:
    """sha256 over the pixel digests of the images a calibration source yields."""
    digests = []
    for i, item in enumerate(calibration_images(source)):
        if count is not None and i >= count:
            break
        digests.append(image_digest(item.image))
    if not digests:
        raise EngineError(f'{source}: no calibration images')
    return calibration_hash(digests)


def entropy_calibrator(context: CudaContext, batches: Iterator[np.ndarray], batch_size: int,
                       nbytes: int, cache_path: Path) -> Any:
    """A legacy ``IInt8EntropyCalibrator2`` feeding ``batches`` through ``context``'s device
    memory (pycuda or cuda-python alike); runs inside ``context.scope()``. The device buffer
    is the context's and is freed when it closes."""
    import tensorrt as trt

    base = trt.IInt8EntropyCalibrator2

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.device = context.device_alloc(nbytes)
            self.count = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = next(batches)
            except StopIteration:
                return None
            context.memcpy_htod(self.device, np.ascontiguousarray(batch, np.float32))
            self.count += len(batch)
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.is_file():
                _LOG.info('using calibration cache %s', cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, memoryview(cache))

        def free(self) -> None:
            context.release(self.device)

    return Calibrator()
