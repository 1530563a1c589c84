"""Tests for the TensorRT backend and the pycuda runtime.

Plain tests drive the backend and :mod:`darknet53_ros.inference.backends.cuda_runtime` through
fake ``tensorrt``
and ``pycuda.driver`` modules (data really flows host -> "device" -> host through them). Tests
marked by the ``gpu`` fixture run for real where TensorRT, pycuda and a CUDA GPU are present
(a Jetson) and skip with the reason elsewhere. ``test_mypy_trt_modules`` type-checks the
TensorRT modules against a repaired copy of ``tensorrt-stubs``.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
import re
import subprocess
import sys
import threading
import types
from typing import Any

import numpy as np
import pytest

from darknet53_ros.errors import BackendError, EngineError
from darknet53_ros.inference.backends.cuda_runtime import IOBuffers
from darknet53_ros.inference.backends.tensorrt_backend import batch_plan, dims, profile_batch
from darknet53_ros.optimize import engine as eng

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Pure logic


@pytest.mark.parametrize(('count', 'low', 'high', 'expected'), [
    (3, 1, 4, [(0, 3, 3)]),
    (9, 1, 4, [(0, 4, 4), (4, 8, 4), (8, 9, 1)]),
    (1, 2, 4, [(0, 1, 2)]),
    (5, 2, 4, [(0, 4, 4), (4, 5, 2)]),
    (2, 1, 1, [(0, 1, 1), (1, 2, 1)]),
])
def test_batch_plan(count: int, low: int, high: int, expected: list) -> None:
    assert batch_plan(count, low, high) == expected


def test_batch_plan_rejects() -> None:
    with pytest.raises(BackendError):
        batch_plan(0, 1, 4)
    with pytest.raises(BackendError):
        batch_plan(2, 3, 2)


def test_profile_batch_both_apis() -> None:
    shapes = [(1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)]

    class Trt10:
        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            assert (name, profile) == ('images', 0)
            return shapes

    class Trt85:
        def get_profile_shape(self, profile: int, name: str) -> list:
            assert (name, profile) == ('images', 0)
            return shapes

    assert profile_batch(Trt10(), 'images') == (1, 2, 4)
    assert profile_batch(Trt85(), 'images') == (1, 2, 4)
    assert dims(np.array([1, 2])) == (1, 2)


class FakeAllocator:
    def __init__(self) -> None:
        self.pinned: list[tuple] = []
        self.device: list[int] = []
        self.released: list[Any] = []

    def pinned_empty(self, shape: tuple, dtype: Any) -> np.ndarray:
        self.pinned.append(shape)
        return np.empty(shape, dtype)

    def device_alloc(self, nbytes: int) -> int:
        self.device.append(nbytes)
        return 1000 + len(self.device)

    def release(self, resource: Any) -> None:
        self.released.append(resource)


def test_io_buffers_reuse_and_grow() -> None:
    alloc = FakeAllocator()
    buffers = IOBuffers(alloc)
    buffers.reserve('images', (4, 3, 2, 2), np.float32)
    first = buffers.host('images', (4, 3, 2, 2), np.float32)
    small = buffers.host('images', (1, 3, 2, 2), np.float32)
    assert small.shape == (1, 3, 2, 2) and np.shares_memory(first, small)
    assert alloc.pinned == [(48,)] and alloc.device == [192] and buffers.allocations == 1
    data = np.arange(12, dtype=np.float64).reshape(1, 3, 2, 2)
    view = buffers.set_input('images', data, np.float32)
    assert view.dtype == np.float32 and np.array_equal(view, data)
    assert buffers.allocations == 1
    buffers.host('images', (8, 3, 2, 2), np.float32)  # larger: reallocated, old released
    assert buffers.allocations == 2 and len(alloc.released) == 2
    assert buffers.device('images') == 1002
    buffers.host('images', (2, 3, 2, 2), np.float16)  # dtype change: reallocated
    assert buffers.allocations == 3


# --------------------------------------------------------------------------------------------
# Fakes of pycuda.driver and tensorrt


class FakeDeviceMemory:
    def __init__(self, nbytes: int, registry: list) -> None:
        self.data = bytearray(nbytes)
        self.freed = False
        registry.append(self)
        self.address = 0x1000 * len(registry)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.freed = True


def make_fake_driver() -> types.ModuleType:
    cuda = types.ModuleType('pycuda.driver')
    stacks = threading.local()
    cuda.events = []  # type: ignore[attr-defined]
    cuda.memory = []  # type: ignore[attr-defined]

    def stack() -> list:
        if not hasattr(stacks, 'items'):
            stacks.items = []
        return stacks.items

    class Context:
        def push(self) -> None:
            stack().append(self)

        @staticmethod
        def pop() -> None:
            stack().pop()

        @staticmethod
        def get_current() -> Any:
            return stack()[-1] if stack() else None

        def detach(self) -> None:
            if stack() and stack()[-1] is self:
                stack().pop()
            cuda.events.append('detach')

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return 'FakeGPU'

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            return Context()

    class Stream:
        handle = 77

        def synchronize(self) -> None:
            assert stack(), 'stream used without a current context'

    def require_context() -> None:
        assert stack(), 'CUDA call without a current context'

    def mem_alloc(nbytes: int) -> FakeDeviceMemory:
        require_context()
        return FakeDeviceMemory(nbytes, cuda.memory)

    def pagelocked_empty(shape: tuple, dtype: Any) -> np.ndarray:
        require_context()
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest: FakeDeviceMemory, src: np.ndarray, stream: Any) -> None:
        require_context()
        raw = np.ascontiguousarray(src).tobytes()
        dest.data[:len(raw)] = raw

    def memcpy_dtoh_async(dest: np.ndarray, src: FakeDeviceMemory, stream: Any) -> None:
        require_context()
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = np.frombuffer(bytes(src.data[:dest.nbytes]), np.uint8)

    cuda.init = lambda: None  # type: ignore[attr-defined]
    cuda.Context = Context  # type: ignore[attr-defined]
    cuda.Device = Device  # type: ignore[attr-defined]
    cuda.Stream = Stream  # type: ignore[attr-defined]
    cuda.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    cuda.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
    cuda.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    cuda.stack = stack  # type: ignore[attr-defined]
    return cuda


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


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple:
    cuda = make_fake_driver()
    pycuda = types.ModuleType('pycuda')
    pycuda.driver = cuda  # type: ignore[attr-defined]
    trt = make_fake_trt(cuda.memory)
    monkeypatch.setitem(sys.modules, 'pycuda', pycuda)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setattr(eng, '_TRT_LOGGER', None)
    return cuda, trt


def _fake_engine(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / 'fake.engine'
    meta = {'tensorrt_version': '10.3.0.30', 'gpu_name': 'FakeGPU', 'compute_capability': '8.7',
            'precision': 'int8', 'input_name': 'images', 'input_shape': [3, 8, 8],
            'batch': [1, 2, 4], 'class_names': ['a', 'b'],
            'model_metadata': {'names': '["a", "b"]', 'classes': '2', 'input_width': '8',
                               'input_height': '8'},
            'build_command': 'darknet53 build-engine --model m.onnx -o fake.engine'}
    meta.update(fields)
    eng.write_engine(path, b'fake engine', meta)
    return path


def test_cuda_context_scope_nesting_and_close_order(fakes: tuple) -> None:
    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    cuda, _ = fakes
    ctx = CudaContext(0)
    assert cuda.Context.get_current() is None
    with ctx.scope():
        with ctx.scope():
            assert ctx.depth == 2 and len(cuda.stack()) == 1
        assert ctx.depth == 1
    assert ctx.depth == 0 and cuda.Context.get_current() is None
    host = ctx.pinned_empty((4,), np.float32)
    device = ctx.device_alloc(16)
    ctx.stream()
    assert host.shape == (4,) and int(device) > 0 and cuda.Context.get_current() is None
    ctx.close()
    assert device.freed and cuda.events == ['detach'] and cuda.Context.get_current() is None
    ctx.close()  # idempotent
    with pytest.raises(BackendError, match='closed'):
        with ctx.scope():
            pass
    with pytest.raises(BackendError, match='device 3'):
        CudaContext(3)


def test_cuda_context_threads_leave_no_context(fakes: tuple) -> None:
    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    cuda, _ = fakes
    ctx = CudaContext(0)
    errors, leftovers = [], []

    def work() -> None:
        try:
            for _ in range(20):
                with ctx.scope():
                    with ctx.scope():
                        ctx.device_alloc(8)
            leftovers.append(len(cuda.stack()))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and leftovers == [0] * 6
    ctx.close()
    assert all(m.freed for m in cuda.memory)


def test_backend_with_fakes(fakes: tuple, tmp_path: Path) -> None:
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    cuda, _ = fakes
    path = _fake_engine(tmp_path)
    rng = np.random.default_rng(0)
    with TensorRTBackend(path, expected={'class_names': ['a', 'b']}) as backend:
        assert backend.input_shape == (None, 3, 8, 8) and backend.max_batch == 4
        assert backend.output_names == ('boxes', 'scores')
        assert backend.metadata['names'] == ['a', 'b']
        for count in (1, 3, 6, 9):  # 6 and 9 exceed the profile max 4: chunked
            batch = rng.random((count, 3, 8, 8), np.float32)
            out = backend.infer(batch)
            assert out['boxes'].shape == (count, 10, 4) and out['scores'].dtype == np.float32
            np.testing.assert_allclose(out['boxes'][:, 0, 0], batch.reshape(count, -1).mean(1),
                                       rtol=1e-6)
        with pytest.raises(BackendError, match='input shape'):
            backend.infer(np.zeros((1, 3, 4, 4), np.float32))
        assert cuda.Context.get_current() is None
    assert cuda.events == ['detach']
    with pytest.raises(BackendError, match='closed'):
        backend.infer(np.zeros((1, 3, 8, 8), np.float32))


def test_backend_threads_with_fakes(fakes: tuple, tmp_path: Path) -> None:
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(_fake_engine(tmp_path))
    batches = [np.full((k % 4 + 1, 3, 8, 8), k, np.float32) for k in range(24)]
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = backend.infer(batches[k])['boxes']

    threads = [threading.Thread(target=work, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend.close()
    for k, boxes in results.items():
        assert boxes.shape[0] == k % 4 + 1 and np.all(boxes == k)


def test_backend_metadata_mismatch_with_fakes(fakes: tuple, tmp_path: Path) -> None:
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    path = _fake_engine(tmp_path, compute_capability='7.2')
    with pytest.raises(EngineError, match="(?s)'compute_capability'.*darknet53 build-engine"):
        TensorRTBackend(path)
    with TensorRTBackend(path, check_metadata=False) as backend:
        assert backend.max_batch == 4
    path.write_bytes(b'corrupt')
    with pytest.raises(EngineError, match='deserialize'):
        TensorRTBackend(path, check_metadata=False)


# --------------------------------------------------------------------------------------------
# Real GPU (Jetson): skipped here


@pytest.fixture
def gpu() -> int:
    if not eng.tensorrt_available():
        pytest.skip('TensorRT is not installed (build and run engines on the Jetson)')
    try:
        import pycuda.driver as cuda
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        pytest.skip(f'pycuda/CUDA unavailable: {exc}')
    if count == 0:
        pytest.skip('no CUDA GPU')
    return 0


def test_gpu_buffers_stream_roundtrip(gpu: int) -> None:
    import pycuda.driver as cuda

    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    ctx = CudaContext(gpu)
    buffers = IOBuffers(ctx)
    stream = ctx.stream()
    data = np.random.default_rng(0).random((2, 3, 4, 4), np.float32)
    with ctx.scope():
        host = buffers.set_input('x', data, np.float32)
        ctx.memcpy_htod_async(buffers.device('x'), host, stream)
        back = ctx.pinned_empty(data.shape, np.float32)
        ctx.memcpy_dtoh_async(back, buffers.device('x'), stream)
        stream.synchronize()
    np.testing.assert_array_equal(back, data)
    ctx.close()
    assert cuda.Context.get_current() is None


def test_gpu_context_many_threads(gpu: int) -> None:
    import pycuda.driver as cuda

    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    ctx = CudaContext(gpu)
    errors, current = [], []

    def work(seed: int) -> None:
        try:
            data = np.full(256, seed, np.float32)
            with ctx.scope():
                with ctx.scope():
                    dev = ctx.device_alloc(data.nbytes)
                    cuda.memcpy_htod(dev, data)
                    back = np.empty_like(data)
                    cuda.memcpy_dtoh(back, dev)
                    assert np.all(back == seed)
            current.append(cuda.Context.get_current())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.close()
    assert not errors and current == [None] * 8


def test_gpu_build_and_infer_matches_onnxruntime(gpu: int, tmp_path: Path) -> None:
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend
    from darknet53_ros.optimize.quantize import quantize_model
    from test.test_quantize import smooth_images, toy_model

    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    qdq = tmp_path / 'toy_int8.onnx'
    quantize_model(model, smooth_images(8), qdq, progress=False)
    x = np.random.default_rng(0).random((5, 3, 32, 32), np.float32)
    sess = ort.InferenceSession(str(model), providers=['CPUExecutionProvider'])
    ref = dict(zip(['boxes', 'scores'], sess.run(['boxes', 'scores'], {'images': x})))
    for source, precision, tol in ((model, 'fp32', 1e-3), (qdq, 'int8', 0.1)):
        engine = tmp_path / f'toy_{precision}.engine'
        eng.build_engine(source, engine, precision=precision, batch=(1, 2, 4),
                         workspace_mib=256, timing_cache=tmp_path / 'timing.cache',
                         progress=False, device=gpu)
        with TensorRTBackend(engine, device=gpu) as backend:
            out = backend.infer(x)  # 5 > max batch 4: two chunks
            assert np.abs(out['scores'] - ref['scores']).max() < tol
            results: list[np.ndarray] = []

            def work(backend: TensorRTBackend, results: list[np.ndarray]) -> None:
                results.append(backend.infer(x[:3])['scores'])

            threads = [threading.Thread(target=work, args=(backend, results))
                       for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(results) == 4 and all(np.array_equal(r, results[0]) for r in results)
    assert (tmp_path / 'timing.cache').is_file()


# --------------------------------------------------------------------------------------------
# mypy against tensorrt-stubs


def _repair_stubs(out: Path) -> None:
    """Copy tensorrt-stubs into ``out``, fixing its syntax errors (parameters named ``in``,
    parameters without default after defaulted ones) so mypy can read it."""
    spec = importlib.util.find_spec('tensorrt_bindings')
    assert spec is not None and spec.submodule_search_locations
    site = Path(list(spec.submodule_search_locations)[0]).parent
    keywords = 'in|from|def|class|lambda|is|not|and|or|global|pass|with|as'
    for package in ('tensorrt', 'tensorrt_bindings'):
        (out / package).mkdir(parents=True, exist_ok=True)
        for stub in (site / package).glob('*.pyi'):
            text = re.sub(rf'([(,]\s*)({keywords})(\s*:)', r'\1\2_\3', stub.read_text())
            lines = text.split('\n')
            for _ in range(500):
                try:
                    ast.parse('\n'.join(lines))
                    break
                except SyntaxError as exc:
                    index = (exc.lineno or 1) - 1
                    match = re.match(r'(\s*def \w+\()(.*)(\)\s*->.*)$', lines[index])
                    if match is None:
                        pytest.skip(f'cannot repair {stub}:{exc.lineno}')
                    params, seen_default = [], False
                    for param in match.group(2).split(', '):
                        if '=' in param:
                            seen_default = True
                        elif seen_default and not param.strip().startswith('*'):
                            param += ' = ...'
                        params.append(param)
                    fixed = match.group(1) + ', '.join(params) + match.group(3)
                    if fixed == lines[index]:
                        pytest.skip(f'cannot repair {stub}:{exc.lineno}')
                    lines[index] = fixed
            (out / package / stub.name).write_text('\n'.join(lines))


def test_mypy_trt_modules(tmp_path: Path) -> None:
    pytest.importorskip('mypy')
    spec = importlib.util.find_spec('tensorrt_bindings')
    if spec is None or not spec.submodule_search_locations or not any(
            Path(p, 'tensorrt.pyi').is_file() for p in spec.submodule_search_locations):
        pytest.skip('tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)')
    stubs = tmp_path / 'stubs'
    _repair_stubs(stubs)
    control = tmp_path / 'control.py'  # proves the stubs are really used
    control.write_text('import tensorrt as trt\n\n\ndef f() -> None:\n'
                       '    trt.Builder(1, 2, 3)\n')
    env = dict(os.environ, MYPYPATH=str(stubs))
    targets = ['darknet53_ros/optimize/engine.py',
               'darknet53_ros/inference/backends/tensorrt_backend.py',
               'darknet53_ros/inference/backends/cuda_runtime.py', str(control)]
    result = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'mypy.ini'),
         '--cache-dir', str(tmp_path / 'cache'), *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ': error:' in line]
    assert errors and all(line.startswith(str(control)) for line in errors), result.stdout


# --------------------------------------------------------------------------------------------
# build_engine through a fake TensorRT builder (flags per TensorRT version)


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


@pytest.mark.parametrize(('version', 'precision', 'qdq', 'flags', 'network_flags'), [
    ('8.5.2.2', 'int8', True, ['FP16', 'INT8'], 1),
    ('10.3.0.30', 'fp16', False, ['FP16'], 0),
    ('10.3.0.30', 'fp32', True, ['INT8'], 0),
    ('11.0.0', 'int8', True, [], 0),
])
def test_build_engine_with_fake_tensorrt(fakes: tuple, tmp_path: Path, version: str,
                                         precision: str, qdq: bool, flags: list,
                                         network_flags: int) -> None:
    onnx = pytest.importorskip('onnx')
    from darknet53_ros.optimize.quantize import quantize_model
    from test.test_quantize import smooth_images, toy_model

    _, trt = fakes
    calls: list = []
    make_fake_builder(trt, version, calls)
    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    if qdq:
        quantize_model(model, smooth_images(2), tmp_path / 'q.onnx', progress=False)
        model = tmp_path / 'q.onnx'
    out = tmp_path / 'engines' / 'toy.engine'
    meta = eng.build_engine(model, out, precision=precision, batch='1:2:4', workspace_mib=64,
                            timing_cache=tmp_path / 'timing.cache', progress=False,
                            dla_core=None if precision == 'fp32' else 1)
    assert out.read_bytes() == b'serialized engine'
    assert (tmp_path / 'timing.cache').read_bytes() == b'timing'
    assert [c[1] for c in calls if c[0] == 'flag'] == flags + (
        [] if precision == 'fp32' else ['GPU_FALLBACK'])
    assert ('network', network_flags) in calls and ('pool', 'WORKSPACE', 64 << 20) in calls
    assert ('profile', ('images', ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)))) in calls
    assert meta['tensorrt_version'] == version and meta['compute_capability'] == '8.7'
    assert meta['qdq'] is qdq and meta['batch'] == [1, 2, 4]
    assert meta['class_names'] == ['a', 'b'] and meta['gpu_name'] == 'FakeGPU'
    assert (meta['calibration_sha256'] is not None) is qdq
    assert meta['build_command'].startswith('darknet53 build-engine --model ')
    eng.check_engine_metadata(out, expected={'onnx_sha256': eng.sha256_file(model)},
                              runtime_info={'tensorrt_version': version,
                                            'compute_capability': (8, 7)})


def test_build_engine_fake_rejections(fakes: tuple, tmp_path: Path) -> None:
    onnx = pytest.importorskip('onnx')
    from test.test_quantize import toy_model

    _, trt = fakes
    make_fake_builder(trt, '11.1.0', [])
    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    with pytest.raises(EngineError, match='strongly typed'):
        eng.build_engine(model, tmp_path / 'a.engine', precision='fp16', progress=False)
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eng.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    make_fake_builder(trt, '10.3.0', [])
    with pytest.raises(EngineError, match='darknet53 quantize'):
        eng.build_engine(model, tmp_path / 'a.engine', precision='int8', progress=False)
    with pytest.raises(EngineError, match='DLA core 5'):
        eng.build_engine(model, tmp_path / 'a.engine', precision='fp16', dla_core=5,
                         progress=False)
