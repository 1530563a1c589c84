"""The inference backend interface and the ONNX contract's metadata reader.

A backend runs one model that follows the package's ONNX contract: input ``images`` float32
``[B, 3, H, W]``, outputs ``boxes`` ``[B, N, 4]`` and ``scores`` ``[B, N, C]``.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from darknet53_ros.errors import ModelError

#: Names fixed by the contract.
INPUT_NAME = 'images'
OUTPUT_NAMES = ('boxes', 'scores')
PRODUCER = 'darknet53_ros'

#: metadata_props every consumer needs; ``strides``, ``anchors``, ``heads``, ``producer`` are
#: parsed and checked when present.
REQUIRED_METADATA = ('names', 'classes', 'input_width', 'input_height')


class Backend(abc.ABC):
    """One loaded model. Use as a context manager or call :meth:`close`.

    Attributes:
        name: the backend's registry name (``onnxruntime``, ``tensorrt``).
        precision: what the loaded model computes in (``fp32``, ``fp16``, ``int8``).
        model_path: the file the backend loaded.
        input_name: the input tensor's name (``images``).
        input_shape: ``(batch, 3, height, width)``; ``batch`` is ``None`` (or -1) when dynamic.
        output_names: names of the outputs :meth:`infer` returns (``boxes``, ``scores`` first).
        max_batch: the largest batch :meth:`infer` accepts (``None``: unbounded).
        metadata: the model's parsed contract metadata (see :func:`parse_metadata`), possibly
            empty when the model carries none.
    """

    name: str = ''
    precision: str = 'fp32'
    model_path: Path
    input_name: str = INPUT_NAME
    input_shape: tuple[int | None, int, int, int]
    output_names: tuple[str, ...] = OUTPUT_NAMES
    max_batch: int | None = None
    metadata: dict[str, Any]

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a float32 ``[B, 3, H, W]`` batch; return outputs by name."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the backend's resources (sessions, engines, device memory)."""

    def describe(self) -> dict[str, str]:
        """What this backend runs, for logs and diagnostics: ``backend``, ``precision``,
        ``model_file``, ``input_size`` and ``classes``, plus what :meth:`details` adds."""
        info = {
            'backend': self.name,
            'precision': self.precision,
            'model_file': str(self.model_path),
            'input_size': f'{self.input_shape[3]}x{self.input_shape[2]}',
            'classes': str(self.metadata.get('classes', 'unknown')),
        }
        info.update(self.details())
        return info

    def details(self) -> dict[str, str]:
        """Backend-specific facts for :meth:`describe` (providers, GPU, TensorRT version)."""
        return {}

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model requires, or ``None`` when the batch is dynamic."""
        batch = self.input_shape[0]
        return batch if batch is not None and batch > 0 else None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_json(source: str, key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelError(f'{source}: metadata {key!r} is not valid JSON: {exc}') from None


def _parse_int(source: str, key: str, text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ModelError(f'{source}: metadata {key!r} = {text!r} is not an integer') from None
    if value < minimum:
        raise ModelError(f'{source}: metadata {key!r} = {value} must be at least {minimum}')
    return value


def _is_number_pairs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(pair, list) and len(pair) == 2
        and all(isinstance(v, (int, float)) for v in pair) for pair in value)


def parse_metadata(props: Mapping[str, str], source: str = '<model>') -> dict[str, Any]:
    """Parse the contract's ``metadata_props`` (all strings) into typed values.

    Returns a dict with ``names`` (list of str), ``classes``, ``input_width``,
    ``input_height`` (int) and, when present, ``strides`` (list of ``[sx, sy]``), ``anchors``
    (list per head of ``[w, h]`` pairs), ``heads`` (list of int) and ``producer`` (str).

    Raises:
        ModelError: naming ``source`` and the key when a required key is missing or a value
            is malformed.
    """
    missing = [key for key in REQUIRED_METADATA if key not in props]
    if missing:
        raise ModelError(f'{source}: metadata_props lacks {", ".join(map(repr, missing))} '
                         f'(not exported by {PRODUCER}?)')
    names = _parse_json(source, 'names', props['names'])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{source}: metadata 'names' must be a JSON list of strings")
    result: dict[str, Any] = {
        'names': names,
        'classes': _parse_int(source, 'classes', props['classes']),
        'input_width': _parse_int(source, 'input_width', props['input_width']),
        'input_height': _parse_int(source, 'input_height', props['input_height']),
    }
    if len(names) != result['classes']:
        raise ModelError(f"{source}: metadata 'names' has {len(names)} entries but "
                         f"'classes' is {result['classes']}")
    if 'strides' in props:
        strides = _parse_json(source, 'strides', props['strides'])
        if not _is_number_pairs(strides):
            raise ModelError(f"{source}: metadata 'strides' must be a list of [sx, sy]")
        result['strides'] = strides
    if 'anchors' in props:
        anchors = _parse_json(source, 'anchors', props['anchors'])
        if not isinstance(anchors, list) or not all(_is_number_pairs(a) for a in anchors):
            raise ModelError(f"{source}: metadata 'anchors' must be a list per head of "
                             '[w, h] pairs')
        result['anchors'] = anchors
    if 'heads' in props:
        heads = _parse_json(source, 'heads', props['heads'])
        if not isinstance(heads, list) or not all(isinstance(h, int) for h in heads):
            raise ModelError(f"{source}: metadata 'heads' must be a list of layer indices")
        result['heads'] = heads
    if 'producer' in props:
        result['producer'] = props['producer']
    return result


def model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse the contract metadata of an ONNX file (see :func:`parse_metadata`).

    Raises:
        ModelError: naming the file when it cannot be read or its metadata is missing/invalid.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f'{path}: cannot read ONNX model: {exc}') from None
    except Exception as exc:  # protobuf DecodeError is not a ValueError subclass everywhere
        raise ModelError(f'{path}: not a valid ONNX model: {exc}') from None
    props = {prop.key: prop.value for prop in model.metadata_props}
    return parse_metadata(props, str(path))
