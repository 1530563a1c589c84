"""A fake ``tensorrt`` module with the API surface of one TensorRT version.

``make_fake_trt(driver, version)`` models 8.5, 10.3, 10.16 and 11.1 (:data:`SURFACES`): a
builder flag, network creation flag or config attribute that a version does not have raises
``AttributeError`` there, as in the real bindings; strongly typed networks refuse layer
precisions. The runtime deserialises two kinds of fake plans: ``b'fake engine'`` (a toy that
writes the input mean into ``boxes``) and the builder's ``b'ORT:' + ONNX bytes`` plans, which
run the source model through ONNX Runtime (optionally perturbed), so a build can be verified
end to end. Every TensorRT object records in ``driver.errors`` when it outlives the CUDA
context it was made in.
"""
from __future__ import annotations

from pathlib import Path
import types
from typing import Any

import numpy as np

from .cuda_driver import FakeDriver

#: Per version: builder flags, network creation flags, and what the config/layers offer;
#: ``dla``: the release has DLA on Jetson (none in 10.8 - 10.x and 11.0 - 11.4.0: the builder
#: then reports no DLA cores, as on a GPU without DLA).
SURFACES: dict[str, dict[str, Any]] = {
    '8.5': {'flags': ('FP16', 'INT8', 'GPU_FALLBACK', 'OBEY_PRECISION_CONSTRAINTS'),
            'network': ('EXPLICIT_BATCH',), 'calibrator': True, 'monitor': False,
            'layer_precision': True, 'dla': True},
    '10.3': {'flags': ('FP16', 'INT8', 'GPU_FALLBACK', 'OBEY_PRECISION_CONSTRAINTS'),
             'network': ('EXPLICIT_BATCH', 'STRONGLY_TYPED'), 'calibrator': True,
             'monitor': True, 'layer_precision': True, 'dla': True},
    '10.16': {'flags': ('FP16', 'INT8', 'GPU_FALLBACK', 'OBEY_PRECISION_CONSTRAINTS'),
              'network': ('EXPLICIT_BATCH', 'STRONGLY_TYPED'), 'calibrator': True,
              'monitor': True, 'layer_precision': True, 'dla': False},
    '11.1': {'flags': ('GPU_FALLBACK',), 'network': ('STRONGLY_TYPED',), 'calibrator': False,
             'monitor': True, 'layer_precision': False, 'dla': False},
}
VERSIONS = {'8.5': '8.5.2.2', '10.3': '10.3.0.30', '10.16': '10.16.0.72', '11.1': '11.1.0.9'}


class Tracked:
    """A TensorRT object that must be destroyed while its CUDA context still exists."""

    driver: FakeDriver

    def __init__(self) -> None:
        self._live = self.driver.refcount[0] > 0

    def __del__(self) -> None:
        if self._live and self.driver.refcount[0] <= 0:
            self.driver.errors.append(f'{type(self).__name__} destroyed after the CUDA '
                                      'context was released')


class Flag:
    def __init__(self, name: str, value: int = 0) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


class HostMemory(bytearray):
    """``IHostMemory``: a buffer; ``bytes()`` of it (a copy of the engine) is refused."""

    def __bytes__(self) -> bytes:
        raise AssertionError('the serialized engine was copied into bytes')

    @property
    def nbytes(self) -> int:
        return len(self)


def make_fake_trt(driver: FakeDriver, version: str = '10.3', boxes: int = 10,
                  classes: int = 2) -> types.ModuleType:
    surface = SURFACES[version]
    trt = types.ModuleType('tensorrt')
    trt.__version__ = VERSIONS[version]  # type: ignore[attr-defined]
    trt.calls = []  # type: ignore[attr-defined]
    trt.runtimes = []  # type: ignore[attr-defined]
    calls: list = trt.calls  # type: ignore[attr-defined]
    base = type('Tracked', (Tracked,), {'driver': driver})

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = 'in', 'out'

    class DataType:
        FLOAT, HALF, INT8, INT32, INT64 = 'float32', 'float16', 'int8', 'int32', 'int64'

    trt.DataType = DataType  # type: ignore[attr-defined]
    trt.float32, trt.float16 = DataType.FLOAT, DataType.HALF  # type: ignore[attr-defined]
    trt.int8, trt.int32 = DataType.INT8, DataType.INT32  # type: ignore[attr-defined]
    trt.int64 = DataType.INT64  # type: ignore[attr-defined]

    # ---- runtime ------------------------------------------------------------------------
    class Context(base):
        def __init__(self, engine: Engine) -> None:
            super().__init__()
            self.engine = engine
            self.batch = 0
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            assert name == 'images'
            low, _, high = self.engine.profile
            if not low <= shape[0] <= high:
                return False
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return (self.batch,) + self.engine.shapes[name][1:]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, handle: int) -> bool:
            driver.check_stream(handle)
            c, h, w = self.engine.shapes['images'][1:]
            count = self.batch * c * h * w
            raw = bytes(driver.by_address(self.addresses['images']).data[:count * 4])
            images = np.frombuffer(raw, np.float32).reshape(self.batch, c, h, w)
            for name, value in self.engine.compute(images).items():
                data = np.ascontiguousarray(value, np.float32).tobytes()
                driver.by_address(self.addresses[name]).data[:len(data)] = data
            return True

    class Engine(base):
        def __init__(self, data: bytes) -> None:
            super().__init__()
            self.profile = (1, 2, 4)
            self.session: Any = None
            self.noise = 0.0
            if data.startswith(b'ORT:'):
                import onnxruntime as ort

                header, _, model = data[4:].partition(b':')
                self.noise, low, opt, high = (float(v) for v in header.split(b','))
                self.profile = (int(low), int(opt), int(high))
                self.session = ort.InferenceSession(model, providers=['CPUExecutionProvider'])
                shape = self.session.get_inputs()[0].shape
                self.shapes = {'images': (-1, *shape[1:])}
                for out in self.session.get_outputs():
                    self.shapes[out.name] = (-1, *out.shape[1:])
            else:
                self.shapes = {'images': (-1, 3, 8, 8), 'boxes': (-1, boxes, 4),
                               'scores': (-1, boxes, classes)}
            self.names = list(self.shapes)

        def compute(self, images: np.ndarray) -> dict[str, np.ndarray]:
            if self.session is not None:
                names = [o.name for o in self.session.get_outputs()]
                outputs = dict(zip(names, self.session.run(names, {'images': images})))
                if self.noise:
                    outputs['boxes'] = outputs['boxes'] + self.noise
                return outputs
            means = images.reshape(len(images), -1).mean(axis=1)
            return {'boxes': np.repeat(means[:, None, None], boxes * 4, 1).reshape(
                        len(images), boxes, 4),
                    'scores': np.full((len(images), boxes, classes), len(images))}

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == 'images' else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple:
            return self.shapes[name]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [(b, *self.shapes['images'][1:]) for b in self.profile]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime(base):
        def __init__(self, logger: Any) -> None:
            super().__init__()
            self.DLA_core = -1
            trt.runtimes.append(self)  # type: ignore[attr-defined]

        def deserialize_cuda_engine(self, data: Any) -> Engine | None:
            raw = bytes(memoryview(data))
            if raw == b'fake engine' or raw.startswith(b'ORT:'):
                return Engine(raw)
            return None

    # ---- builder ------------------------------------------------------------------------
    flags = types.SimpleNamespace(**{n: Flag(n) for n in surface['flags']})
    network_flags = {'EXPLICIT_BATCH': 0, 'STRONGLY_TYPED': 1}
    trt.BuilderFlag = flags  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(  # type: ignore[attr-defined]
        **{n: Flag(n, network_flags[n]) for n in surface['network']})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='WORKSPACE')  # type: ignore[attr-defined]
    trt.DeviceType = types.SimpleNamespace(DLA='DLA', GPU='GPU')  # type: ignore[attr-defined]
    trt.Dims4 = lambda *d: tuple(d)  # type: ignore[attr-defined]

    class Tensor:
        def __init__(self, name: str, dtype: str) -> None:
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, network: Network, name: str, outputs: list[Tensor]) -> None:
            self._strong, self.name, self._outputs = network.strongly_typed, name, outputs
            self._precision = DataType.FLOAT
            self.num_outputs = len(outputs)

        def get_output(self, i: int) -> Tensor:
            return self._outputs[i]

        def _check(self) -> None:
            if not surface['layer_precision']:
                raise AttributeError('layer precision was removed in TensorRT 11')
            if self._strong:
                raise RuntimeError('setting layer precision in a strongly typed network')

        @property
        def precision(self) -> str:
            return self._precision

        @precision.setter
        def precision(self, value: str) -> None:
            self._check()
            self._precision = value
            calls.append(('precision', self.name, value))

        def set_output_type(self, index: int, dtype: str) -> None:
            self._check()
            self._outputs[index].dtype = dtype

    class Network(base):
        def __init__(self, flags: int) -> None:
            super().__init__()
            self.strongly_typed = bool(flags & 2) or version.startswith('11')
            self.layers: list[Layer] = []

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class Cache:
        def serialize(self) -> HostMemory:
            return HostMemory(b'timing')

    class Config(base):
        def __init__(self) -> None:
            super().__init__()
            self.model: bytes = b''

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(('pool', pool, size))

        def add_optimization_profile(self, profile: Any) -> int:
            calls.append(('profile', profile.shapes))
            self.profile = [s[0] for s in profile.shapes[1]]
            return 0

        def set_flag(self, flag: Flag) -> None:
            calls.append(('flag', flag.name))

        def create_timing_cache(self, data: bytes) -> Cache:
            calls.append(('timing', bytes(data)))
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore: bool) -> bool:
            return True

        def get_timing_cache(self) -> Cache:
            return Cache()

        def __setattr__(self, name: str, value: Any) -> None:
            if name in ('int8_calibrator',) and not surface['calibrator']:
                raise AttributeError(f'IBuilderConfig.{name} does not exist in {version}')
            if name == 'progress_monitor' and not surface['monitor']:
                raise AttributeError(f'IBuilderConfig.{name} does not exist in {version}')
            if name in ('DLA_core', 'default_device_type'):
                calls.append((name, value))
            object.__setattr__(self, name, value)

    if surface['calibrator']:
        Config.set_calibration_profile = lambda self, p: None  # type: ignore[attr-defined]

    class Profile:
        def set_shape(self, name: str, *shapes: tuple) -> None:
            self.shapes = (name, shapes)

    class Parser(base):
        num_errors = 0

        def __init__(self, network: Network, logger: Any) -> None:
            super().__init__()
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(('parse', Path(path).name))
            model = onnx.load(path)
            self.network.model = Path(path).read_bytes()  # type: ignore[attr-defined]
            net = self.network
            for init in model.graph.initializer:
                dtype = DataType.FLOAT if init.data_type == 1 else DataType.INT64
                net.layers.append(Layer(net, init.name, [Tensor(init.name, dtype)]))
            for node in model.graph.node:
                name = node.name or f'node_of_{node.output[0]}'
                net.layers.append(Layer(net, name, [Tensor(o, DataType.FLOAT)
                                                    for o in node.output]))
            return True

    class Builder(base):
        num_DLA_cores = 2 if surface['dla'] else 0  # noqa: N815 - TensorRT's attribute name
        noise = 0.0

        def __init__(self, logger: Any) -> None:
            super().__init__()

        def create_network(self, flags: int = 0) -> Network:
            calls.append(('network', flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> HostMemory:
            model = getattr(network, 'model', b'')
            if not model:
                return HostMemory(b'serialized engine')
            low, opt, high = (int(b) for b in config.profile)
            header = f'{Builder.noise},{low},{opt},{high}'.encode()
            return HostMemory(b'ORT:' + header + b':' + model)

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.float32  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = Parser  # type: ignore[attr-defined]
    if surface['calibrator']:
        trt.IInt8EntropyCalibrator2 = type(  # type: ignore[attr-defined]
            'IInt8EntropyCalibrator2', (), {'__init__': lambda self: None})
    if surface['monitor']:
        trt.IProgressMonitor = type(  # type: ignore[attr-defined]
            'IProgressMonitor', (), {'__init__': lambda self: None})
    return trt
