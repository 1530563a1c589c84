"""GPU pre-processing for the TensorRT backend: the CUDA kernel ``letterbox.cu`` and its launcher.

One kernel (``letterbox_nchw``, source in ``letterbox.cu`` beside this module) turns one
decoded ``uint8`` image (``bgr8``, ``rgb8``, ``bgra8`` or ``mono8``, any row pitch) into its
letterboxed, normalised RGB slot of the engine's NCHW float32 input binding: bilinear like
``cv2.resize(..., INTER_LINEAR)`` (same pixel-centre convention and border clamping),
Darknet's geometry and grey ``0.5`` padding (:mod:`darknet53_ros.inference.preprocess`). A
batch is one launch per camera on the backend's stream, each writing its own slot.

The launcher is runtime-neutral: :class:`GpuLetterbox` takes a ``compile(source, name)``
callable returning ``launch(grid, block, args, stream)``, so it plugs into any CUDA runtime
(arguments are NumPy scalars, device pointers ``np.uintp``). With pycuda::

    def compile(source, name):
        function = SourceModule(source, no_extern_c=True).get_function(name)
        return lambda grid, block, args, stream: function(*args, block=block, grid=grid[:2],
                                                          stream=stream)

with CuPy / NVRTC: ``kernel = cupy.RawKernel(source, name)``, ``kernel(grid, block, args)``.
:func:`model_letterbox` is the kernel's arithmetic in NumPy (float32, same operation
order), checked against the CPU path in the tests where no GPU is present.

Backends that pre-process on the device implement :class:`DevicePreprocessing`
(``infer_images``); :func:`resolve_preprocess` turns the ``preprocess`` setting
(``auto``/``cpu``/``gpu``) into what a backend can do.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from darknet53_ros.errors import ConfigError, ImageError
from darknet53_ros.inference.preprocess import (
    PAD_VALUE,
    LetterboxTransform,
    check_image,
    letterbox_transform,
)

KERNEL_FILE = Path(__file__).with_name('letterbox.cu')
KERNEL_NAME = 'letterbox_nchw'
BLOCK = (32, 8, 1)
PREPROCESS_MODES = ('auto', 'cpu', 'gpu')

#: encoding -> (channels, index of red, green, blue in a pixel).
ENCODINGS: dict[str, tuple[int, int, int, int]] = {
    'bgr8': (3, 2, 1, 0), 'rgb8': (3, 0, 1, 2), 'bgra8': (4, 2, 1, 0), 'mono8': (1, 0, 0, 0),
}


class Launch(Protocol):
    """Runs the compiled kernel: ``launch(grid, block, args, stream)``."""

    def __call__(self, grid: tuple[int, int, int], block: tuple[int, int, int],
                 args: Sequence[Any], stream: Any) -> None:
        """Launch on ``stream`` (``None``: the default stream)."""


class DevicePreprocessing(Protocol):
    """A backend that letterboxes on the device straight into its input binding."""

    def infer_images(self, images: Sequence[np.ndarray], width: int, height: int,
                     letterbox: bool) -> tuple[dict[str, np.ndarray], list[LetterboxTransform]]:
        """Upload decoded ``uint8`` images, pre-process them on the GPU, run; return the
        outputs by name and each image's transform."""


def kernel_source() -> str:
    """The CUDA C source of the letterbox kernel."""
    return KERNEL_FILE.read_text()


def encoding_of(image: np.ndarray, name: str = 'image') -> str:
    """The encoding of an OpenCV-style decoded image: mono8, bgr8 or bgra8."""
    channels = check_image(image, name)[2]
    return {1: 'mono8', 3: 'bgr8', 4: 'bgra8'}[channels]


def _geometry(src_w: int, src_h: int, net_w: int, net_h: int, letterbox: bool,
              ) -> tuple[LetterboxTransform, int, int, int, int]:
    transform = letterbox_transform(src_w, src_h, net_w, net_h, letterbox)
    return (transform, round(transform.scale_x * src_w), round(transform.scale_y * src_h),
            int(transform.pad_x), int(transform.pad_y))


def launch_args(src_ptr: int, src_w: int, src_h: int, src_pitch: int, encoding: str,
                dst_ptr: int, slot: int, net_w: int, net_h: int, letterbox: bool = True,
                pad_value: float = PAD_VALUE,
                ) -> tuple[LetterboxTransform, tuple[int, int, int], tuple[Any, ...]]:
    """``(transform, grid, kernel arguments)`` for one image into batch slot ``slot`` of the
    float32 NCHW buffer at device address ``dst_ptr``."""
    if encoding not in ENCODINGS:
        raise ImageError(f'encoding {encoding!r}: GPU pre-processing takes '
                         f'{", ".join(ENCODINGS)}')
    channels, red, green, blue = ENCODINGS[encoding]
    if src_pitch < src_w * channels:
        raise ImageError(f'row pitch {src_pitch} < {src_w} pixels x {channels} channels')
    transform, new_w, new_h, pad_x, pad_y = _geometry(src_w, src_h, net_w, net_h, letterbox)
    dst = int(dst_ptr) + slot * 3 * net_w * net_h * 4
    i32, f32 = np.int32, np.float32
    args = (np.uintp(src_ptr), i32(src_w), i32(src_h), i32(src_pitch), i32(channels),
            i32(red), i32(green), i32(blue), np.uintp(dst), i32(net_w), i32(net_h),
            i32(new_w), i32(new_h), i32(pad_x), i32(pad_y), f32(src_w / new_w),
            f32(src_h / new_h), f32(pad_value))
    grid = (-(-net_w // BLOCK[0]), -(-net_h // BLOCK[1]), 1)
    return transform, grid, args


class GpuLetterbox:
    """Compiles the kernel once (through ``compile``) and launches it per image."""

    def __init__(self, compile: Callable[[str, str], Launch], width: int, height: int,
                 letterbox: bool = True, pad_value: float = PAD_VALUE) -> None:
        self._compile = compile
        self._launch: Launch | None = None
        self.width, self.height = int(width), int(height)
        self.letterbox = bool(letterbox)
        self.pad_value = float(pad_value)

    def write(self, src_ptr: int, shape: tuple[int, ...], src_pitch: int, encoding: str,
              dst_ptr: int, slot: int, stream: Any = None) -> LetterboxTransform:
        """Launch the kernel for one device image of ``shape`` (``H, W[, C]``) into ``slot``
        of the input binding at ``dst_ptr``, on ``stream``; returns its transform."""
        if self._launch is None:
            self._launch = self._compile(kernel_source(), KERNEL_NAME)
        transform, grid, args = launch_args(src_ptr, int(shape[1]), int(shape[0]), src_pitch,
                                            encoding, dst_ptr, slot, self.width, self.height,
                                            self.letterbox, self.pad_value)
        self._launch(grid, BLOCK, args, stream)
        return transform


def model_letterbox(image: np.ndarray, encoding: str, width: int, height: int,
                    letterbox: bool = True, pad_value: float = PAD_VALUE) -> np.ndarray:
    """The kernel's output ``[3, height, width]`` for one image, computed in NumPy with its
    exact float32 arithmetic (:func:`model_kernel` on the arguments :func:`launch_args`
    gives)."""
    rows = np.ascontiguousarray(image).reshape(image.shape[0], -1)
    _, _, args = launch_args(0, image.shape[1], image.shape[0], rows.shape[1], encoding, 0, 0,
                             width, height, letterbox, pad_value)
    return model_kernel(rows, args)


def model_kernel(rows: np.ndarray, args: Sequence[Any]) -> np.ndarray:
    """What one launch of the kernel writes into its slot, ``[3, net_h, net_w]`` float32, in
    NumPy with the kernel's float32 arithmetic (same index clamping, interpolation order and
    scaling): ``rows`` is the source image as ``[src_h, src_pitch]`` bytes, ``args`` the
    kernel's arguments in the order of ``letterbox.cu`` (the two pointers are not read)."""
    (_, src_w, src_h, _, channels, red, green, blue, _, net_w, net_h, new_w, new_h, pad_x,
     pad_y, scale_x, scale_y, pad_value) = (a.item() if hasattr(a, 'item') else a for a in args)
    src = rows[:src_h, :src_w * channels].reshape(src_h, src_w, channels)
    f32 = np.float32
    out = np.full((3, net_h, net_w), f32(pad_value), f32)

    def axis(count: int, scale: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(count, dtype=f32) + f32(0.5)) * f32(scale) - f32(0.5)
        low = np.floor(pos).astype(np.int64)
        frac = (pos - low.astype(f32)).astype(f32)
        frac[low < 0] = 0
        low = np.maximum(low, 0)
        frac[low >= size - 1] = 0
        low = np.minimum(low, size - 1)
        return low, np.minimum(low + 1, size - 1), frac

    x0, x1, ax = axis(new_w, scale_x, src_w)
    y0, y1, ay = axis(new_h, scale_y, src_h)
    ax, ay = ax[None, :], ay[:, None]
    # the kernel's threads that fall inside the network input: pixels past its edge are not
    # written (a slot never spills into the next)
    rows_out, cols_out = min(new_h, net_h - pad_y), min(new_w, net_w - pad_x)
    for c, k in enumerate((red, green, blue)):
        plane = src[:, :, k].astype(f32)
        p00, p01 = plane[y0][:, x0], plane[y0][:, x1]
        p10, p11 = plane[y1][:, x0], plane[y1][:, x1]
        top = p00 + ax * (p01 - p00)
        bottom = p10 + ax * (p11 - p10)
        value = (top + ay * (bottom - top)) * f32(1.0 / 255.0)
        out[c, pad_y:pad_y + rows_out, pad_x:pad_x + cols_out] = value[:rows_out, :cols_out]
    return out


def resolve_preprocess(mode: str, backend: object) -> str:
    """``'cpu'`` or ``'gpu'`` for the ``preprocess`` setting and a backend: ``gpu`` needs a
    backend with :class:`DevicePreprocessing` (and, where it has the attribute, a true
    ``device_preprocessing``); ``auto`` takes it when there is one.

    Raises:
        ConfigError: an unknown mode, or ``gpu`` with a backend that pre-processes on the CPU.
    """
    if mode not in PREPROCESS_MODES:
        raise ConfigError(f'preprocess: {mode!r}, expected one of {", ".join(PREPROCESS_MODES)}')
    hook = callable(getattr(backend, 'infer_images', None))
    on_device = hook and bool(getattr(backend, 'device_preprocessing', True))
    if mode == 'gpu' and not on_device:
        name = getattr(backend, 'name', type(backend).__name__)
        if hook:
            raise ConfigError(f'preprocess: gpu, but this {name} engine does not take a float32 '
                              '3-channel input the GPU letterbox can write; use auto or cpu')
        raise ConfigError(f'preprocess: gpu, but the {name} backend pre-processes on the CPU '
                          '(GPU pre-processing needs the TensorRT backend); use auto or cpu')
    return 'gpu' if on_device and mode != 'cpu' else 'cpu'
