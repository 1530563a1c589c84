"""Tests for the GPU letterbox kernel: nvcc compiles it for Xavier/Orin, and a NumPy model of
its arithmetic matches the CPU pre-processing within 1/255 (no GPU needed)."""
from __future__ import annotations

from pathlib import Path
import subprocess

import numpy as np
import pytest

from darknet53_ros.errors import ConfigError, ImageError
from darknet53_ros.inference.backends.cuda_runtime import KERNEL_OPTIONS
from darknet53_ros.inference.backends.gpu_preprocess import (
    BLOCK,
    KERNEL_NAME,
    GpuLetterbox,
    encoding_of,
    kernel_source,
    launch_args,
    model_letterbox,
    resolve_preprocess,
)
from darknet53_ros.inference.preprocess import preprocess

from ..conftest import optional_module, requires

pytestmark = requires('cv2')
cv2 = optional_module('cv2')
NVCC = Path('/usr/local/cuda/bin/nvcc')


def image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    smooth = cv2.resize(np.random.default_rng(seed).integers(0, 256, (9, 13, max(channels, 3)),
                                                            np.uint8), (width, height))
    noise = np.random.default_rng(seed + 1).integers(0, 256, (height, width, max(channels, 3)),
                                                     np.uint8)
    mixed = np.where(np.random.default_rng(seed).random(noise.shape[:2])[..., None] < 0.2,
                     noise, smooth)
    return np.ascontiguousarray(mixed[..., :channels].reshape(shape))


def _archs() -> str:
    if not NVCC.exists():
        return ''
    return subprocess.run([str(NVCC), '--list-gpu-arch'], capture_output=True, text=True,
                          check=False).stdout


@pytest.mark.parametrize('arch', ['72', '87'])
def test_kernel_compiles_for_jetson(arch: str, tmp_path: Path) -> None:
    if not NVCC.exists():
        pytest.skip(f'{NVCC} not present')
    if f'compute_{arch}' not in _archs():
        pytest.skip(f'this nvcc no longer targets sm_{arch} (CUDA 13 dropped Xavier; the '
                    'CUDA 12 NVRTC + ptxas test in test_gpu_input.py covers it)')
    source = tmp_path / 'letterbox.cu'
    source.write_text(kernel_source())
    done = subprocess.run([str(NVCC), f'-arch=sm_{arch}', *KERNEL_OPTIONS, '--ptx', str(source),
                           '-o', str(tmp_path / 'letterbox.ptx')], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f'.entry {KERNEL_NAME}' in (tmp_path / 'letterbox.ptx').read_text()


@pytest.mark.parametrize('size', [(480, 640), (1080, 1920), (640, 480), (416, 416), (208, 208),
                                  (100, 37), (1, 1), (200, 1000)])
@pytest.mark.parametrize('net', [(416, 416), (608, 352)])
def test_model_matches_cpu_path(size: tuple[int, int], net: tuple[int, int]) -> None:
    bgr = image(*size)
    cpu = preprocess(bgr, *net)[0][0]
    for encoding, img in (('bgr8', bgr), ('rgb8', bgr[..., ::-1].copy()),
                          ('bgra8', np.dstack([bgr, np.full(size, 9, np.uint8)]))):
        gpu = model_letterbox(img, encoding, *net)
        assert gpu.shape == cpu.shape
        assert np.abs(gpu - cpu).max() <= 1 / 255 + 1e-6, encoding
    grey = image(*size, channels=1)
    diff = np.abs(model_letterbox(grey, 'mono8', *net) - preprocess(grey, *net)[0][0])
    assert diff.max() <= 1 / 255 + 1e-6
    stretched = model_letterbox(bgr, 'bgr8', *net, letterbox=False)
    assert np.abs(stretched - preprocess(bgr, *net, letterbox=False)[0][0]).max() \
        <= 1 / 255 + 1e-6


def test_launch_arguments_and_slots() -> None:
    launches = []

    def compile(source: str, name: str):
        assert name == KERNEL_NAME and '__global__' in source
        return lambda grid, block, args, stream: launches.append((grid, block, args, stream))

    gpu = GpuLetterbox(compile, 416, 416)
    transform = gpu.write(1000, (480, 640, 3), 640 * 3, 'bgr8', 2**20, slot=2, stream='s')
    assert (transform.pad_x, transform.pad_y) == (0, 52)
    grid, block, args, stream = launches[0]
    assert grid == (13, 52, 1) and block == BLOCK and stream == 's'
    assert int(args[0]) == 1000 and int(args[8]) == 2**20 + 2 * 3 * 416 * 416 * 4
    assert [int(a) for a in args[4:8]] == [3, 2, 1, 0]  # channels, red/green/blue index
    assert [int(a) for a in args[11:15]] == [416, 312, 0, 52]
    with pytest.raises(ImageError, match='encoding'):
        launch_args(0, 4, 4, 12, 'yuv422', 0, 0, 416, 416)
    with pytest.raises(ImageError, match='pitch'):
        launch_args(0, 4, 4, 8, 'bgr8', 0, 0, 416, 416)
    assert encoding_of(np.zeros((2, 2), np.uint8)) == 'mono8'
    assert encoding_of(np.zeros((2, 2, 4), np.uint8)) == 'bgra8'


class _OnDevice:
    name = 'tensorrt'

    def infer_images(self, images, width, height, letterbox):  # pragma: no cover - shape only
        raise NotImplementedError


def test_resolve_preprocess() -> None:
    cpu_backend = type('B', (), {'name': 'onnxruntime'})()
    assert resolve_preprocess('auto', cpu_backend) == 'cpu'
    assert resolve_preprocess('cpu', _OnDevice()) == 'cpu'
    assert resolve_preprocess('auto', _OnDevice()) == 'gpu'
    assert resolve_preprocess('gpu', _OnDevice()) == 'gpu'
    with pytest.raises(ConfigError, match='preprocess: gpu, but the onnxruntime backend'):
        resolve_preprocess('gpu', cpu_backend)
    with pytest.raises(ConfigError, match="preprocess: 'fast'"):
        resolve_preprocess('fast', cpu_backend)


# The kernel's own source, compiled for and run on the host (test/fakes/host_cuda.py): the
# arithmetic a GPU performs under --fmad=false, where no GPU is present.


@pytest.fixture(scope='module')
def host_kernel(tmp_path_factory: pytest.TempPathFactory):
    from ..fakes.host_cuda import compile_on_host, host_compiler

    if host_compiler() is None:
        pytest.skip('no host C++ compiler (g++ or clang++)')
    return compile_on_host(kernel_source(), KERNEL_NAME, tmp_path_factory.mktemp('kernel'))


def _on_host(launch, image: np.ndarray, encoding: str, net: tuple[int, int], slot: int = 1,
             pitch_pad: int = 0, letterbox: bool = True) -> np.ndarray:
    """Launch on ``image`` (rows padded by ``pitch_pad`` bytes) into ``slot`` of a NaN-filled
    3-slot buffer; return that buffer (slots other than ``slot`` must stay NaN)."""
    height, width = image.shape[:2]
    flat = image.reshape(height, -1)
    rows = np.full((height, flat.shape[1] + pitch_pad), 201, np.uint8)  # junk in the padding
    rows[:, :flat.shape[1]] = flat
    out = np.full((3, 3, net[1], net[0]), np.nan, np.float32)
    _, grid, args = launch_args(rows.ctypes.data, width, height, rows.shape[1], encoding,
                                out.ctypes.data, slot, *net, letterbox)
    launch(grid, BLOCK, args, None)
    return out


@pytest.mark.parametrize('size', [(480, 640), (1080, 1920), (640, 480), (416, 416), (100, 37),
                                  (1, 1), (2, 3), (200, 1000)])
@pytest.mark.parametrize('net', [(416, 416), (608, 352)])
def test_kernel_source_on_host_matches_cpu_path(host_kernel, size: tuple[int, int],
                                                net: tuple[int, int]) -> None:
    bgr = image(*size)
    cpu = preprocess(bgr, *net)[0][0]
    cases = [('bgr8', bgr, cpu), ('rgb8', bgr[..., ::-1].copy(), cpu),
             ('bgra8', np.dstack([bgr, np.full(size, 9, np.uint8)]), cpu)]
    grey = image(*size, channels=1)
    cases.append(('mono8', grey, preprocess(grey, *net)[0][0]))
    for encoding, img, expected in cases:
        out = _on_host(host_kernel, img, encoding, net, pitch_pad=5)
        assert np.isnan(out[0]).all() and np.isnan(out[2]).all(), 'wrote outside its slot'
        assert not np.isnan(out[1]).any(), 'left pixels of its slot unwritten'
        assert np.abs(out[1] - expected).max() <= 1 / 255 + 1e-6, encoding
        # the NumPy model of the kernel is the kernel's arithmetic, bit for bit
        np.testing.assert_array_equal(out[1], model_letterbox(img, encoding, *net))
    stretched = _on_host(host_kernel, bgr, 'bgr8', net, slot=0, letterbox=False)[0]
    assert np.abs(stretched - preprocess(bgr, *net, letterbox=False)[0][0]).max() \
        <= 1 / 255 + 1e-6


def test_gpu_letterbox_launcher_on_host_kernel(host_kernel) -> None:
    """GpuLetterbox compiles once and fills every slot of a batch of cameras."""
    compiled = []

    def compile(source: str, name: str):
        compiled.append(name)
        return host_kernel

    gpu = GpuLetterbox(compile, 416, 416)
    images = [image(480, 640, seed=1), image(720, 1280, seed=2), image(300, 300, seed=3)]
    out = np.full((3, 3, 416, 416), np.nan, np.float32)
    for slot, img in enumerate(images):
        gpu.write(img.ctypes.data, img.shape, img.strides[0], 'bgr8', out.ctypes.data, slot)
    assert compiled == [KERNEL_NAME]
    expected = preprocess(images, 416, 416)[0]
    assert np.abs(out - expected).max() <= 1 / 255 + 1e-6
