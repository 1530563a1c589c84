"""A fake ``tensorrt`` module: a runtime whose engine computes from the fake device memory, and
a builder that records the calls and flags it receives."""
from __future__ import annotations

from pathlib import Path
import types
from typing import Any

import numpy as np


def make_fake_trt(memory: list, boxes: int = 10, classes: int = 2) -> types.ModuleType:
    trt = types.ModuleType('tensorrt')
    trt.__version__ = '10.3.0.30'  # type: ignore[attr-defined]

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = 'in', 'out'

    shapes = {'images': (-1, 3, 8, 8), 'boxes': (-1, boxes, 4), 'scores': (-1, boxes, classes)}

    class Context:
        def __init__(self) -> None:
            self.batch = 0
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            assert name == 'images'
            if not 1 <= shape[0] <= 4:
                return False
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return (self.batch,) + shapes[name][1:]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, handle: int) -> bool:
            assert handle == 77
            by_address = {int(m): m for m in memory}
            images = np.frombuffer(bytes(by_address[self.addresses['images']].data),
                                   np.float32)[:self.batch * 192].reshape(self.batch, -1)
            means = images.mean(axis=1)
            out_boxes = np.repeat(means[:, None, None], boxes * 4, 1).reshape(
                self.batch, boxes, 4).astype(np.float32)
            out_scores = np.full((self.batch, boxes, classes), self.batch, np.float32)
            for name, value in (('boxes', out_boxes), ('scores', out_scores)):
                raw = value.tobytes()
                by_address[self.addresses[name]].data[:len(raw)] = raw
            return True

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i: int) -> str:
            return ['images', 'scores', 'boxes'][i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == 'images' else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return 'float32'

        def get_tensor_shape(self, name: str) -> tuple:
            return shapes[name]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [(1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if data == b'fake engine' else None

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]
    return trt


def make_fake_builder(trt: types.ModuleType, version: str, calls: list) -> None:
    trt.__version__ = version  # type: ignore[attr-defined]

    class Flag:
        def __init__(self, name: str) -> None:
            self.name = name

        def __int__(self) -> int:
            return 0

        def __repr__(self) -> str:
            return self.name

    flags = types.SimpleNamespace(FP16=Flag('FP16'), INT8=Flag('INT8'),
                                  GPU_FALLBACK=Flag('GPU_FALLBACK'))
    trt.BuilderFlag = flags  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(  # type: ignore[attr-defined]
        EXPLICIT_BATCH=Flag('EXPLICIT_BATCH'))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='WORKSPACE')  # type: ignore[attr-defined]
    trt.DeviceType = types.SimpleNamespace(DLA='DLA')  # type: ignore[attr-defined]
    trt.Dims4 = lambda *d: tuple(d)  # type: ignore[attr-defined]

    class Memory(bytes):
        pass

    class Cache:
        def serialize(self) -> bytes:
            return b'timing'

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(('pool', pool, size))

        def add_optimization_profile(self, profile: Any) -> int:
            calls.append(('profile', profile.shapes))
            return 0

        def set_flag(self, flag: Flag) -> None:
            calls.append(('flag', flag.name))

        def create_timing_cache(self, data: bytes) -> Cache:
            calls.append(('timing', data))
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore: bool) -> bool:
            return True

        def get_timing_cache(self) -> Cache:
            return Cache()

    class Profile:
        def set_shape(self, name: str, *shapes: tuple) -> None:
            self.shapes = (name, shapes)

    class Parser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls.append(('parse', Path(path).name))
            return True

    class Builder:
        num_DLA_cores = 2  # noqa: N815 - TensorRT's attribute name

        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> object:
            calls.append(('network', flags))
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Config) -> Memory:
            return Memory(b'serialized engine')

    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = Parser  # type: ignore[attr-defined]
