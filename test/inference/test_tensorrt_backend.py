"""Tests for the TensorRT backend and the pycuda runtime.

Plain tests drive the backend and :mod:`darknet53_ros.inference.backends.cuda_runtime` through
the fake ``tensorrt`` and ``pycuda.driver`` modules of ``test/fakes`` (data really flows host ->
"device" -> host through them; the ``fakes`` fixture installs them). Tests marked by the
``gpu`` fixture run for real where TensorRT, pycuda and a CUDA GPU are present (a Jetson) and
skip with the reason elsewhere. The builder and ``test_mypy_trt_modules`` are in
``test/optimize/test_engine_builder.py``.
"""
from __future__ import annotations

from pathlib import Path
import threading
from typing import Any

import numpy as np
import pytest

from darknet53_ros.errors import BackendError, EngineError
from darknet53_ros.inference.backends.cuda_runtime import IOBuffers
from darknet53_ros.inference.backends.engine_file import tensorrt_available, write_engine
from darknet53_ros.inference.backends.tensorrt_backend import batch_plan, dims, profile_batch
from darknet53_ros.optimize.engine_builder import build_engine

from ..fakes.pycuda import FakeAllocator

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
# Backend and CUDA runtime through the fakes (test/fakes)


def _fake_engine(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / 'fake.engine'
    meta = {'tensorrt_version': '10.3.0.30', 'gpu_name': 'FakeGPU', 'compute_capability': '8.7',
            'precision': 'int8', 'input_name': 'images', 'input_shape': [3, 8, 8],
            'batch': [1, 2, 4], 'class_names': ['a', 'b'],
            'model_metadata': {'names': '["a", "b"]', 'classes': '2', 'input_width': '8',
                               'input_height': '8'},
            'build_command': 'darknet53 build-engine --model m.onnx -o fake.engine'}
    meta.update(fields)
    write_engine(path, b'fake engine', meta)
    return path


RUNTIMES = ['pycuda', 'cuda-python']


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_cuda_context_scope_nesting_and_close_order(fakes: tuple, runtime: str) -> None:
    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    core = fakes[0].core
    ctx = CudaContext(0, runtime)
    assert ctx.runtime == runtime and core.refcount[0] == 1 and core.stack() == []
    with ctx.scope():
        with ctx.scope():
            assert ctx.depth == 2 and len(core.stack()) == 1
        assert ctx.depth == 1
    assert ctx.depth == 0 and core.stack() == []
    host = ctx.pinned_empty((4,), np.float32)
    device = ctx.device_alloc(16)
    stream = ctx.stream()  # kept alive by the caller past close(), like a backend attribute
    with ctx.scope():
        host[:] = [1, 2, 3, 4]
        ctx.memcpy_htod_async(device, host, stream)
        back = ctx.pinned_empty((4,), np.float32)
        ctx.memcpy_dtoh_async(back, device, stream)
        stream.synchronize()
    assert back.tolist() == [1, 2, 3, 4] and core.stack() == []
    ctx.close()
    # streams destroyed inside the live context, memory freed, context popped and released
    assert core.errors == [] and core.stack() == [] and core.refcount[0] == 0
    assert not any(core.streams.values()) and all(m.freed for m in core.memory)
    assert all(h.freed for h in core.host) and stream.native is None
    del stream  # pycuda's destructor would run now: it must find nothing left to destroy
    assert core.errors == []
    ctx.close()  # idempotent
    with pytest.raises(BackendError, match='closed'):
        with ctx.scope():
            pass
    with pytest.raises(BackendError, match='device 3'):
        CudaContext(3, runtime)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_cuda_context_close_only_from_owner_thread(fakes: tuple, runtime: str) -> None:
    from darknet53_ros.inference.backends.cuda_runtime import CudaContext

    core = fakes[0].core
    ctx = CudaContext(0, runtime)
    ctx.device_alloc(8)
    errors: list[Exception] = []

    def close() -> None:
        try:
            ctx.close()
        except BackendError as exc:
            errors.append(exc)

    thread = threading.Thread(target=close)
    thread.start()
    thread.join()
    assert len(errors) == 1 and 'thread that created it' in str(errors[0])
    assert core.refcount[0] == 1 and not ctx.closed and not core.memory[0].freed
    with ctx.scope():
        with pytest.raises(BackendError, match='inside its scope'):
            ctx.close()
    ctx.close()
    assert core.refcount[0] == 0 and core.errors == [] and core.stack() == []


def test_pycuda_detach_leaves_context_pushed_and_is_popped(fakes: tuple) -> None:
    """pycuda's detach() of a primary context that is not current pushes it to release it
    and leaves it pushed; the runtime pops it, so nothing stays on the owner's stack."""
    cuda, _ = fakes
    context = cuda.Device(0).retain_primary_context()
    context.detach()
    assert len(cuda.core.stack()) == 1  # the fake models the pycuda behaviour
    cuda.core.pop()
    from darknet53_ros.inference.backends.cuda_pycuda import PycudaDriver

    driver = PycudaDriver()
    handle = driver.retain_primary(0)
    driver.release_primary(0, handle)
    assert cuda.core.stack() == [] and cuda.core.refcount[0] == 0


def test_runtime_selection(fakes: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from darknet53_ros.errors import ConfigError
    from darknet53_ros.inference.backends.cuda_runtime import select_driver

    from ..fakes.pycuda import make_fake_pycuda

    assert select_driver('auto').name == 'pycuda'
    assert select_driver('cuda_python').name == 'cuda-python'
    with pytest.raises(ConfigError, match='cuda_runtime'):
        select_driver('opencl')
    monkeypatch.setitem(sys.modules, 'pycuda', None)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', None)
    assert select_driver('auto').name == 'cuda-python'
    with pytest.raises(BackendError, match='pycuda is not installed'):
        select_driver('pycuda')
    for name in ('cuda', 'cuda.bindings', 'cuda.bindings.driver', 'cuda.cuda'):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendError, match='(?s)no CUDA runtime.*pycuda.*cuda-python'):
        select_driver('auto')
    old, old_driver = make_fake_pycuda(fakes[0].core, version=(2024, 1, 2),
                                       cuda_version=(13, 0, 0))
    monkeypatch.setitem(sys.modules, 'pycuda', old)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', old_driver)
    with pytest.raises(BackendError, match=r'pycuda 2024\.1\.2 does not support CUDA 13'):
        select_driver('pycuda')


class DynamicLibNotFoundError(RuntimeError):
    """What cuda-python 12.8+ (cuda.pathfinder) raises when a CUDA library is missing."""


def test_cuda_python_without_driver_or_nvrtc_libraries(fakes: tuple,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda-python installed where libcuda / libnvrtc are not (a CI box, a container without
    the NVIDIA runtime): one BackendError naming the library, not cuda-python's own error."""
    import sys

    from darknet53_ros.inference.backends.cuda_python import CudaPythonDriver, compile_ptx

    from ..fakes.cuda_python import make_fake_nvrtc

    def missing(name: str) -> Any:
        def call(*args: Any) -> Any:
            raise DynamicLibNotFoundError(f'"{name}" could not be found')
        return call

    monkeypatch.setattr(sys.modules['cuda.bindings.driver'], 'cuInit', missing('cuda'))
    with pytest.raises(BackendError, match=r'NVIDIA driver \(libcuda\): '
                                           'DynamicLibNotFoundError: "cuda"'):
        CudaPythonDriver()
    nvrtc = make_fake_nvrtc(fakes[0].core)
    monkeypatch.setitem(sys.modules, 'cuda.bindings.nvrtc', nvrtc)
    monkeypatch.setattr(nvrtc, 'nvrtcCreateProgram', missing('nvrtc'))
    with pytest.raises(BackendError, match=r'cannot load NVRTC .*"nvrtc" could not be found'):
        compile_ptx('extern "C" __global__ void k() {}', 'k', (), (8, 7))


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
    # TensorRT objects released before the context; streams inside it; nothing left current
    assert cuda.core.errors == [] and cuda.core.stack() == [] and cuda.core.refcount[0] == 0
    with pytest.raises(BackendError, match='closed'):
        backend.infer(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_backend_close_from_another_thread_is_refused(fakes: tuple, tmp_path: Path,
                                                      runtime: str) -> None:
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    core = fakes[0].core
    backend = TensorRTBackend(_fake_engine(tmp_path), cuda_runtime=runtime)
    assert backend.details()['cuda_runtime'] == runtime
    assert backend.verification[0] == 'warning'  # never verified
    errors: list[Exception] = []
    thread = threading.Thread(target=lambda: errors.extend(_close(backend)))
    thread.start()
    thread.join()
    assert 'thread that created' in str(errors[0]) and core.refcount[0] == 1
    backend.infer(np.zeros((1, 3, 8, 8), np.float32))  # still usable
    backend.close()
    assert core.errors == [] and core.refcount[0] == 0 and core.stack() == []


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_backend_waits_asleep_not_spinning(fakes: tuple, tmp_path: Path, runtime: str) -> None:
    """Issue 21.2: each inference waits for the GPU on a blocking-sync event (the thread
    sleeps), never with cuStreamSynchronize (which spins a core under the default context
    flags); the event lives and dies inside the context."""
    from darknet53_ros.inference.backends.tensorrt_backend import TensorRTBackend

    core = fakes[0].core
    with TensorRTBackend(_fake_engine(tmp_path), cuda_runtime=runtime) as backend:
        before = len(core.waits)
        for count in (1, 6):  # 6: two chunks, one wait each
            backend.infer(np.zeros((count, 3, 8, 8), np.float32))
        assert core.waits[before:] == ['block'] * 3
        flags = [e['flags'] for e in core.event_objects.values()]
        assert flags and all(f == core.BLOCKING_SYNC | core.DISABLE_TIMING for f in flags)
    assert core.errors == [] and not any(e['alive'] for e in core.event_objects.values())


def _close(backend: Any) -> list[Exception]:
    try:
        backend.close()
    except BackendError as exc:
        return [exc]
    return []


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
    if not tensorrt_available():
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

    from ..toy import smooth_images, toy_model

    model = tmp_path / 'toy.onnx'
    onnx.save(toy_model(), str(model))
    qdq = tmp_path / 'toy_int8.onnx'
    quantize_model(model, smooth_images(8), qdq, progress=False)
    x = np.random.default_rng(0).random((5, 3, 32, 32), np.float32)
    sess = ort.InferenceSession(str(model), providers=['CPUExecutionProvider'])
    ref = dict(zip(['boxes', 'scores'], sess.run(['boxes', 'scores'], {'images': x})))
    for source, precision, tol in ((model, 'fp32', 1e-3), (qdq, 'int8', 0.1)):
        engine = tmp_path / f'toy_{precision}.engine'
        build_engine(source, engine, precision=precision, batch=(1, 2, 4),
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


def test_find_nvcc_looks_beyond_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack installs nvcc in /usr/local/cuda/bin without adding it to PATH."""
    from darknet53_ros.inference.backends import cuda_pycuda

    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'nvcc').write_text('')
    monkeypatch.setattr(cuda_pycuda.shutil, 'which', lambda name: None)
    monkeypatch.setenv('CUDA_HOME', str(tmp_path))
    assert cuda_pycuda.find_nvcc() == str(tmp_path / 'bin' / 'nvcc')
    monkeypatch.setattr(cuda_pycuda.shutil, 'which', lambda name: '/opt/cuda/bin/nvcc')
    assert cuda_pycuda.find_nvcc() == '/opt/cuda/bin/nvcc'
