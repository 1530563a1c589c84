"""The TensorRT backend's GPU input path: decoded camera images -> the engine's input binding.

:class:`GpuInput` does, per batch chunk and on the backend's stream: copy every ``uint8``
image into one reused pinned staging buffer (images back to back, each in its own rows), one
asynchronous copy of it to a reused device buffer, then one launch of the letterbox kernel
(:mod:`~darknet53_ros.inference.backends.gpu_preprocess`) per camera writing the letterboxed,
normalised float32 NCHW slot of the input binding. Staging buffers grow only when a batch needs
more bytes than any before (bounded by the largest batch seen); the kernel is compiled on the
first batch, once per backend. Slots past the images (a batch below the engine profile's
minimum) get the chunk's first image again, so every slot holds a valid input.

Images are what the CPU path takes (``uint8`` ``HxW``/``HxWx1`` grey, ``HxWx3`` BGR, ``HxWx4``
BGRA, any strides); anything else raises the same :class:`ImageError`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from darknet53_ros.inference.backends.cuda_runtime import (
    CudaContext,
    CudaStream,
    IOBuffers,
    Kernel,
)
from darknet53_ros.inference.backends.gpu_preprocess import GpuLetterbox, encoding_of
from darknet53_ros.inference.preprocess import LetterboxTransform

STAGING = 'images_uint8'


class GpuInput:
    """Letterboxes decoded images on the GPU into a float32 NCHW device buffer.

    Args:
        cuda: the backend's CUDA context (owns the buffers and the kernel's module).
        stream: the backend's stream; everything is queued on it.
        width, height: the engine's input size.

    Calls must be serialised by the caller and run inside ``cuda.scope()``; the staging
    buffer is reused, so the caller synchronises the stream before the next call.
    """

    def __init__(self, cuda: CudaContext, stream: CudaStream, width: int, height: int) -> None:
        self._cuda = cuda
        self._stream = stream
        self.width, self.height = int(width), int(height)
        self.staging = IOBuffers(cuda)
        self._kernel: Kernel | None = None
        self.compilations = 0
        self._letterbox = {flag: GpuLetterbox(self._compile, self.width, self.height, flag)
                           for flag in (True, False)}

    def _compile(self, source: str, name: str) -> Kernel:
        if self._kernel is None:
            self._kernel = self._cuda.compile(source, name)
            self.compilations += 1
        return self._kernel

    def write(self, images: Sequence[np.ndarray], encodings: Sequence[str], device_input: int,
              run: int, letterbox: bool = True) -> list[LetterboxTransform]:
        """Queue the upload and letterboxing of ``images`` into slots ``0..run-1`` of the
        float32 ``[run, 3, height, width]`` buffer at ``device_input``; returns the images'
        transforms."""
        sizes = [int(image.nbytes) for image in images]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        host = self.staging.host(STAGING, (int(offsets[-1]),), np.uint8)
        for image, start, size in zip(images, offsets, sizes):
            np.copyto(host[start:start + size].reshape(image.shape), image)
        device = int(self.staging.device(STAGING))
        self._cuda.memcpy_htod_async(device, host, self._stream)
        kernel = self._letterbox[bool(letterbox)]
        transforms = []
        for slot in range(run):
            index = slot if slot < len(images) else 0
            image = images[index]
            pitch = image.shape[1] * (image.shape[2] if image.ndim == 3 else 1)
            transform = kernel.write(device + int(offsets[index]), image.shape, pitch,
                                     encodings[index], device_input, slot, self._stream)
            if slot < len(images):
                transforms.append(transform)
        return transforms


def encodings_of(images: Sequence[Any], start: int = 0) -> list[str]:
    """Each image's kernel encoding (``mono8``/``bgr8``/``bgra8``), validated like the CPU path
    (errors name ``images[start + i]``)."""
    return [encoding_of(image, f'images[{start + i}]') for i, image in enumerate(images)]
