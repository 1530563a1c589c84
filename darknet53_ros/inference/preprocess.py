"""Image preprocessing for the ONNX contract: letterbox (or plain resize) to NCHW float32 RGB.

Images come in as OpenCV does them: ``uint8`` BGR ``HxWx3``, grey ``HxW`` (or ``HxWx1``) or
BGRA ``HxWx4`` (alpha dropped). They leave as one ``[B, 3, H, W]`` float32 batch, RGB, values
in ``[0, 1]``, written in place into a reusable buffer.

Letterboxing follows Darknet's ``letterbox_image``: the image is scaled to fit the network
input keeping its aspect ratio (``new_w = src_w * net_h // src_h`` or the other way round,
integer division as in Darknet), centred (``pad = (net - new) // 2``) and the rest filled with
grey ``0.5``, the value Darknet uses after dividing by 255 (127.5 on the 8-bit scale).
Resizing is ``cv2.resize`` with ``INTER_LINEAR``.

The mapping between source pixels and network pixels is kept in a :class:`LetterboxTransform`
per image; boxes use continuous pixel coordinates (``x1, y1, x2, y2``, the right/bottom edge of
a ``W`` wide image is ``x = W``).
"""
from __future__ import annotations

from dataclasses import dataclass
import typing

import numpy as np

from darknet53_ros.errors import ConfigError, ImageError

#: Padding value of letterboxed images on the [0, 1] scale (Darknet's grey, 127.5 / 255).
PAD_VALUE = 0.5

_SCALE = np.float32(1.0 / 255.0)

# typing's forms: the alias is evaluated at run time (Python 3.8 has no `X | Y`).
ImageBatch = typing.Union[np.ndarray, typing.Sequence[np.ndarray]]


@dataclass(frozen=True)
class LetterboxTransform:
    """Affine map between one source image and the network input: ``net = src * scale + pad``.

    ``scale_x``/``scale_y`` are the resized size over the source size (equal up to Darknet's
    integer rounding when letterboxing), ``pad_x``/``pad_y`` the left/top padding in network
    pixels, ``src_w``/``src_h`` the source image size used to clip mapped-back boxes.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    src_w: int
    src_h: int

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[..., 4]`` boxes ``(x1, y1, x2, y2)`` from source to network pixels."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out *= np.array([self.scale_x, self.scale_y] * 2, np.float32)
        out += np.array([self.pad_x, self.pad_y] * 2, np.float32)
        return out

    def to_source(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map ``[..., 4]`` boxes from network to source pixels, clipped to the image."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out -= np.array([self.pad_x, self.pad_y] * 2, np.float32)
        out *= np.array([1.0 / self.scale_x, 1.0 / self.scale_y] * 2, np.float32)
        if clip:
            np.maximum(out, 0.0, out=out)
            np.minimum(out, np.array([self.src_w, self.src_h] * 2, np.float32), out=out)
        return out


def letterbox_transform(src_w: int, src_h: int, net_w: int, net_h: int,
                        letterbox: bool = True) -> LetterboxTransform:
    """Return the transform for a ``src_w x src_h`` image fed to a ``net_w x net_h`` network.

    With ``letterbox=False`` the image is stretched to the network size (no padding).
    """
    if src_w <= 0 or src_h <= 0:
        raise ImageError(f'image size {src_w}x{src_h}: must be positive')
    if net_w <= 0 or net_h <= 0:
        raise ConfigError(f'network input size {net_w}x{net_h}: must be positive')
    if not letterbox:
        return LetterboxTransform(net_w / src_w, net_h / src_h, 0.0, 0.0, src_w, src_h)
    new_w, new_h = _letterbox_size(src_w, src_h, net_w, net_h)
    return LetterboxTransform(new_w / src_w, new_h / src_h, float((net_w - new_w) // 2),
                              float((net_h - new_h) // 2), src_w, src_h)


def _letterbox_size(src_w: int, src_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """Darknet's resized size: fit inside the network keeping the aspect ratio."""
    if net_w * src_h < net_h * src_w:  # net_w / src_w < net_h / src_h
        new_w, new_h = net_w, src_h * net_w // src_w
    else:
        new_w, new_h = src_w * net_h // src_h, net_h
    return max(new_w, 1), max(new_h, 1)


def check_image(image: object, name: str = 'image') -> tuple[int, int, int]:
    """Validate one input image; return ``(height, width, channels)``.

    Raises:
        ImageError: naming ``name`` when the image is not a non-empty ``uint8`` array of
            shape ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4``.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f'{name}: expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ImageError(f'{name}: dtype {image.dtype}, expected uint8')
    if image.ndim == 2:
        channels = 1
    elif image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    else:
        raise ImageError(f'{name}: shape {image.shape}, expected HxW, HxWx1, HxWx3 or HxWx4')
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f'{name}: zero-sized image {image.shape}')
    return height, width, channels


def _as_list(images: ImageBatch) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


class Preprocessor:
    """Letterbox/resize images into one reusable ``[B, 3, H, W]`` float32 buffer.

    Each image is resized (``cv2.resize`` into a reused ``uint8`` scratch image), split into
    reused ``uint8`` planes in RGB order, cast straight into its slot of the batch in one call
    and scaled there in place, so ``N`` cameras land in one NCHW buffer without intermediate
    float copies. The grey padding of a slot is written only when its letterbox
    geometry changes. The returned batch is a view of the internal buffer: it is overwritten
    by the next call, must be treated as read-only (the padding is not rewritten), and one
    instance must not be shared between threads.
    """

    def __init__(self, width: int, height: int, letterbox: bool = True,
                 pad_value: float = PAD_VALUE) -> None:
        if width <= 0 or height <= 0:
            raise ConfigError(f'input size {width}x{height}: width and height must be positive')
        self.width = int(width)
        self.height = int(height)
        self.letterbox = bool(letterbox)
        self.pad_value = float(pad_value)
        self._buffer = np.empty((0, 3, self.height, self.width), np.float32)
        self._geometry: list[tuple[int, int, int, int] | None] = []
        self._scratch: dict[tuple[int, int, int],
                            tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = {}
        self._transforms: dict[tuple[int, int],
                               tuple[LetterboxTransform, tuple[int, int, int, int]]] = {}

    def buffer(self, batch: int) -> np.ndarray:
        """Return the first ``batch`` slots of the internal buffer (grown when needed)."""
        if self._buffer.shape[0] < batch:
            self._buffer = np.full((batch, 3, self.height, self.width), self.pad_value,
                                   np.float32)
            self._geometry = [None] * batch
        return self._buffer[:batch]

    def __call__(self, images: ImageBatch, batch_size: int | None = None, start: int = 0,
                 ) -> tuple[np.ndarray, list[LetterboxTransform]]:
        """Preprocess ``images`` (one image, a sequence, or a ``[B, H, W, C]`` stack).

        Returns ``(batch, transforms)``; ``batch`` has ``max(len(images), batch_size)`` slots
        (slots past the images keep stale data: pass ``batch_size`` for fixed-batch engines).
        Errors name the image as ``images[start + i]``.
        """
        items = _as_list(images)
        total = max(len(items), batch_size or 0)
        out = self.buffer(total)
        transforms = [self._write(image, out[i], f'images[{start + i}]', i)
                      for i, image in enumerate(items)]
        return out, transforms

    def _planes(self, new_w: int, new_h: int, channels: int,
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Reused ``uint8`` scratch for one resized size: the resize target, the ``[C, h, w]``
        planes in RGB(A) order, and the plane views ``cv2.split`` writes B, G, R(, A) into."""
        key = (new_w, new_h, channels)
        scratch = self._scratch.get(key)
        if scratch is None:
            if len(self._scratch) > 16:  # many camera resolutions: do not grow without bound
                self._scratch.clear()
            shape = (new_h, new_w) if channels == 1 else (new_h, new_w, channels)
            planes = np.empty((channels, new_h, new_w), np.uint8)
            split = [planes[i] for i in (2, 1, 0, 3)[:channels]] if channels > 1 else []
            scratch = (np.empty(shape, np.uint8), planes, split)
            self._scratch[key] = scratch
        return scratch

    def write(self, image: np.ndarray, out: np.ndarray, name: str = 'image',
              ) -> LetterboxTransform:
        """Write one preprocessed image into ``out`` (a ``[3, H, W]`` float32 array)."""
        return self._write(image, out, name, None)

    def _geometry_of(self, width: int, height: int,
                     ) -> tuple[LetterboxTransform, tuple[int, int, int, int]]:
        """The transform and ``(x0, y0, new_w, new_h)`` of a source size (cached)."""
        cached = self._transforms.get((width, height))
        if cached is None:
            transform = letterbox_transform(width, height, self.width, self.height,
                                            self.letterbox)
            cached = transform, (int(transform.pad_x), int(transform.pad_y),
                                 round(transform.scale_x * width),
                                 round(transform.scale_y * height))
            if len(self._transforms) > 64:
                self._transforms.clear()
            self._transforms[(width, height)] = cached
        return cached

    def _write(self, image: np.ndarray, out: np.ndarray, name: str, slot: int | None,
               ) -> LetterboxTransform:
        import cv2

        height, width, channels = check_image(image, name)
        transform, geometry = self._geometry_of(width, height)
        x0, y0, new_w, new_h = geometry
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        if channels == 1:
            image = image.reshape(height, width)
        resized, planes, split = self._planes(new_w, new_h, channels)
        if (new_w, new_h) != (width, height):
            cv2.resize(image, (new_w, new_h), dst=resized, interpolation=cv2.INTER_LINEAR)
            image = resized
        region = out[:, y0:y0 + new_h, x0:x0 + new_w]
        # uint8 planes in RGB order (one cv2.split), then one uint8 -> float32 cast into the
        # slot and one in-place scale: measured faster than a fused multiply per plane, float
        # copies, a LUT, blobFromImage or a strided transpose (benchmarks/bench_peers.py).
        if channels == 1:
            np.copyto(region, image)  # broadcast to the three planes
        else:
            cv2.split(image, split)
            np.copyto(region, planes[:3])
        np.multiply(region, _SCALE, out=region)
        self._pad(out, geometry, slot)
        return transform

    def _pad(self, out: np.ndarray, geometry: tuple[int, int, int, int], slot: int | None,
             ) -> None:
        x0, y0, new_w, new_h = geometry
        if slot is not None and self._geometry[slot] == geometry:
            return  # padding of this slot is already in place
        value = self.pad_value
        if y0 > 0:
            out[:, :y0, :] = value
        if y0 + new_h < self.height:
            out[:, y0 + new_h:, :] = value
        if x0 > 0:
            out[:, y0:y0 + new_h, :x0] = value
        if x0 + new_w < self.width:
            out[:, y0:y0 + new_h, x0 + new_w:] = value
        if slot is not None:
            self._geometry[slot] = geometry


def preprocess(images: ImageBatch, width: int, height: int, letterbox: bool = True,
               ) -> tuple[np.ndarray, list[LetterboxTransform]]:
    """One-shot :class:`Preprocessor` call: ``images`` -> ``([B, 3, H, W] float32, transforms)``.

    Allocates a new batch; use a :class:`Preprocessor` to reuse the buffer across frames.
    """
    return Preprocessor(width, height, letterbox)(images)
