"""Image preprocessing driven by the manifest: the same code at build time and on target."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .manifest import ImagePreprocess


@dataclass(frozen=True)
class Geometry:
    """Where the model's input grid lies on the source image, to map maps back."""

    source_shape: tuple  # (H, W) of the source image
    crop: tuple  # (top, left, height, width) taken from the source


def image_to_tensor(pixels: np.ndarray, spec: ImagePreprocess) -> tuple[np.ndarray, Geometry]:
    """Crop, resize and normalise a [0, 1] greyscale image into a (1, C, H, W) float32 tensor."""
    h, w = pixels.shape
    if spec.crop == "center_square":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = (top, left, side, side)
    else:
        crop = (0, 0, h, w)
    top, left, ch, cw = crop
    region = pixels[top:top + ch, left:left + cw]
    resized = resize(region, spec.size, spec.resample)
    mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    tensor = (np.broadcast_to(resized, (spec.channels, *resized.shape)) - mean) / std
    return tensor[None].astype(np.float32, copy=False), Geometry((h, w), crop)


def resize(image: np.ndarray, size: tuple, resample: str = "box") -> np.ndarray:
    """Resize a float image to (height, width) with Pillow's antialiasing filters."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    if image.shape == (height, width):
        return image.astype(np.float32, copy=False)
    method = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}[resample]
    out = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").resize((width, height), method)
    return np.asarray(out, dtype=np.float32)


def map_to_source(grid: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Map a (h, w) map on the model's input grid back onto the source image's pixel grid."""
    top, left, ch, cw = geometry.crop
    out = np.zeros(geometry.source_shape, np.float32)
    out[top:top + ch, left:left + cw] = resize(grid.astype(np.float32), (ch, cw), "bilinear")
    return out
