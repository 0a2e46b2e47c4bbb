"""Image preprocessing driven by the manifest: the same code at build time and on target."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io.dicom import pixels
from .manifest import ImagePreprocess


@dataclass(frozen=True)
class Geometry:
    """Where the model's input grid lies on the source image, to map maps back."""

    source_shape: tuple  # (H, W) of the source image
    crop: tuple  # (top, left, height, width) taken from the source


def decode_size(spec: ImagePreprocess, checked_margin: int = 0) -> tuple[int, int] | None:
    """The least (H, W) a source may be decoded at (io/dicom/pixels.py), or None for a full decode:
    its crop must cover ``pixels.margin(checked_margin)`` times the model's input (a centre
    square: on its shorter side). ``checked_margin``: the artifact's ``decode_margin``."""
    margin = pixels.margin(checked_margin)
    if margin <= 0:
        return None
    h, w = margin * int(spec.size[0]), margin * int(spec.size[1])
    return (max(h, w),) * 2 if spec.crop == "center_square" else (h, w)


def crop_box(shape: tuple, spec: ImagePreprocess) -> tuple:
    """(top, left, height, width) the model sees, on an image of ``shape`` (H, W)."""
    h, w = shape[:2]
    if spec.crop == "center_square":
        side = min(h, w)
        return ((h - side) // 2, (w - side) // 2, side, side)
    return (0, 0, h, w)


def image_to_tensor(pixels: np.ndarray, spec: ImagePreprocess, reduction=None) -> tuple[np.ndarray, Geometry]:
    """Crop, resize and normalise a [0, 1] greyscale image into a (1, C, H, W) float32 tensor.

    Crop and resize run in Pillow (C), with no numpy pass over the full image. ``reduction``
    (io/dicom/pixels.Reduction) when ``pixels`` is a reduced decode: the crop is chosen on the full
    image and mapped onto the decoded one, so the geometry (and any map drawn from it) stays on
    the full image."""
    shape = tuple(reduction.full_shape if reduction else pixels.shape)
    crop = crop_box(shape, spec)
    top, left, ch, cw = crop
    box = (left, top, left + cw, top + ch)
    box = reduction.box(box) if reduction else box
    resized = resize(pixels, spec.size, spec.resample, box)
    tensor = np.empty((1, spec.channels, *resized.shape), np.float32)
    for c in range(spec.channels):
        mean, std = spec.mean[c % len(spec.mean)], spec.std[c % len(spec.std)]
        np.subtract(resized, np.float32(mean), out=tensor[0, c])
        tensor[0, c] /= np.float32(std)
    return tensor, Geometry(shape, crop)


def resize(image: np.ndarray, size: tuple, resample: str = "box", box: tuple | None = None) -> np.ndarray:
    """Resize a float image (or its ``box`` region: left, top, right, bottom) to (height, width)
    with Pillow's antialiasing filters."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    full = box is None or tuple(box) == (0, 0, image.shape[1], image.shape[0])
    if image.shape == (height, width) and full:
        return image.astype(np.float32, copy=False)
    method = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}[resample]
    src = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    if not full:
        # Pillow 13 resizes a box at an offset of more than a pixel wrongly (from the middle row on):
        # crop to whole pixels in C first, leaving it only the fractional offset
        x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x1, y1 = min(image.shape[1], int(np.ceil(box[2]))), min(image.shape[0], int(np.ceil(box[3])))
        src = src.crop((x0, y0, x1, y1))
        box = (max(0.0, box[0] - x0), max(0.0, box[1] - y0), min(x1 - x0, box[2] - x0), min(y1 - y0, box[3] - y0))
        box = None if box == (0, 0, x1 - x0, y1 - y0) else box
    out = src.resize((width, height), method, box=box)
    return np.asarray(out, dtype=np.float32)


def map_to_source(grid: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Map a (h, w) map on the model's input grid back onto the source image's pixel grid."""
    top, left, ch, cw = geometry.crop
    out = np.zeros(geometry.source_shape, np.float32)
    out[top:top + ch, left:left + cw] = resize(grid.astype(np.float32), (ch, cw), "bilinear")
    return out


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``size`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    step = tile - 2 * overlap if overlap else tile
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def image_to_tiles(pixels: np.ndarray, spec) -> tuple[np.ndarray, list]:
    """Normalised (T, C, tile, tile) tiles of a [0, 1] image (padded by reflection when smaller)."""
    h, w = pixels.shape
    t = spec.tile
    padded = np.pad(pixels, ((0, max(0, t - h)), (0, max(0, t - w))), mode="reflect")
    mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    origins = [(y, x) for y in tile_origins(max(h, t), t, spec.overlap) for x in tile_origins(max(w, t), t, spec.overlap)]
    tiles = np.empty((len(origins), spec.channels, t, t), np.float32)  # filled in place: no full-size temporaries
    for tile, (y, x) in zip(tiles, origins):
        np.subtract(padded[y:y + t, x:x + t], mean, out=tile)
        tile /= std
    return tiles, origins


def blend_tiles(maps, origins: list, shape: tuple, overlap: int, tile: int | None = None) -> np.ndarray:
    """Average (tile, tile) maps back onto an (H, W) grid, down-weighting tile borders.

    ``maps`` is an (N, tile, tile) array or any iterable of tiles (a generator keeps only one
    chunk of probabilities alive at a time)."""
    t = tile or maps.shape[-1]
    ramp = np.ones(t, np.float32)
    if overlap:
        edge = np.linspace(0.05, 1.0, overlap, dtype=np.float32)
        ramp[:overlap], ramp[-overlap:] = edge, edge[::-1]
    weight = np.outer(ramp, ramp)
    h, w = max(shape[0], t), max(shape[1], t)
    acc, norm = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for m, (y, x) in zip(maps, origins):
        acc[y:y + t, x:x + t] += m * weight
        norm[y:y + t, x:x + t] += weight
    np.maximum(norm, 1e-6, out=norm)
    acc /= norm
    return acc[:shape[0], :shape[1]]


def check_image(pixels: np.ndarray, spec) -> None:
    """Refuse an image this model cannot judge, before inference (engine/limits.py has the bounds).

    A constant image carries nothing to judge. A whole-image model (``image``) needs each side of
    its crop at least as large as its input and an aspect ratio within ``MAX_ASPECT_RATIO``; a tiled
    model (``tiles``) needs each side at least ``MIN_TILE_FRACTION`` of a tile (the rest is
    reflected) and at most ``MAX_TILE_PIXELS`` pixels in all.
    """
    from . import limits
    from .errors import InvalidInputError

    h, w = pixels.shape
    if not np.isfinite(pixels).all():
        raise InvalidInputError("the image holds NaN or infinite values", expected="finite pixel values")
    if float(pixels.max()) - float(pixels.min()) <= 1e-6:
        raise InvalidInputError(f"the image is constant (every pixel is {float(pixels.flat[0]):.3g})",
                                expected="an image with content", fix="check the window, the rescale tags or the file")
    if getattr(spec, "kind", "image") == "tiles":
        least = int(np.ceil(spec.tile * limits.MIN_TILE_FRACTION))
        if min(h, w) < least:
            raise InvalidInputError(f"the image is {w} x {h} pixels", expected=f"at least {least} x {least} "
                                    f"(half of this model's {spec.tile}-pixel tile)", fix="use the full-size image")
        if h * w > limits.MAX_TILE_PIXELS:
            raise InvalidInputError(f"the image is {w} x {h} = {h * w:,} pixels",
                                    expected=f"at most {limits.MAX_TILE_PIXELS:,} pixels for a tiled model "
                                             "(engine/limits.py)", fix="analyse a region of the image")
        return
    need_h, need_w = int(spec.size[0]), int(spec.size[1])
    side_h, side_w = (min(h, w),) * 2 if spec.crop == "center_square" else (h, w)
    if side_h < need_h or side_w < need_w:
        raise InvalidInputError(f"the image is {w} x {h} pixels", expected=f"at least {need_w} x {need_h}, "
                                "this model's input (it would be upscaled from too little)",
                                fix="use the full-resolution image")
    check_aspect(h, w)


@dataclass(frozen=True)
class Letterbox:
    """Where a letterboxed input lies on the source: input = source * scale + (left, top)."""

    source_shape: tuple  # (H, W) of the source image
    scale: tuple  # (sy, sx); equal when the aspect ratio is kept
    offset: tuple  # (top, left) padding in input pixels

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 boxes on the input grid -> source pixels, clipped to the image."""
        (sy, sx), (top, left) = self.scale, self.offset
        h, w = self.source_shape
        out = (np.asarray(boxes, np.float64) - [left, top, left, top]) / [sx, sy, sx, sy]
        return np.clip(out, 0, [w, h, w, h])


def letterbox(rgb: np.ndarray, spec) -> tuple[np.ndarray, Letterbox]:
    """An (H, W, 3) [0, 1] colour image -> (1, 3, h, w) normalised tensor, bilinear-resized with its
    aspect ratio kept (``spec.letterbox``) and centred; the padding is the mean (0 once normalised)."""
    h, w = rgb.shape[:2]
    out_h, out_w = spec.size
    if spec.letterbox:
        s = min(out_h / h, out_w / w)
        new_h, new_w = min(out_h, max(1, int(round(h * s)))), min(out_w, max(1, int(round(w * s))))
    else:
        new_h, new_w = out_h, out_w
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    tensor = np.zeros((1, 3, out_h, out_w), np.float32)
    for c in range(3):
        channel = resize(rgb[..., c], (new_h, new_w), "bilinear")
        tensor[0, c, top:top + new_h, left:left + new_w] = (channel - mean[c % len(mean)]) / std[c % len(std)]
    return tensor, Letterbox((h, w), (new_h / h, new_w / w), (top, left))


def check_colour_image(rgb: np.ndarray, spec) -> None:
    """Refuse a colour image a detector cannot judge: non-finite, constant, smaller than the
    model's input on the side the letterbox fits, or beyond ``MAX_ASPECT_RATIO``."""
    from . import limits
    from .errors import InvalidInputError

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidInputError(f"the image has shape {rgb.shape}", expected="(H, W, 3) colour pixels")
    if not np.isfinite(rgb).all():
        raise InvalidInputError("the image holds NaN or infinite values", expected="finite pixel values")
    if float(rgb.max()) - float(rgb.min()) <= 1e-6:
        raise InvalidInputError(f"the image is constant (every value is {float(rgb.flat[0]):.3g})",
                                expected="an image with content", fix="check the file")
    h, w = rgb.shape[:2]
    scale = min(spec.size[0] / h, spec.size[1] / w) if spec.letterbox else max(spec.size[0] / h, spec.size[1] / w)
    if scale > 1.0:
        raise InvalidInputError(f"the image is {w} x {h} pixels", expected=f"at least {spec.size[1]} x {spec.size[0]} "
                                "once fitted into this model's input (it would be upscaled from too little)",
                                fix="use the full-resolution image")
    check_aspect(h, w)


def check_aspect(h: int, w: int) -> None:
    """Refuse an image far from square (a strip, a line): beyond engine/limits.py's aspect ratio."""
    from . import limits
    from .errors import InvalidInputError

    if max(h, w) / min(h, w) > limits.MAX_ASPECT_RATIO:
        raise InvalidInputError(f"the image is {w} x {h} pixels (aspect ratio {max(h, w) / min(h, w):.1f})",
                                expected=f"an aspect ratio up to {limits.MAX_ASPECT_RATIO:g}:1 (engine/limits.py)",
                                fix="crop the region of interest first")


# -- volumes (VolumePreprocess): reorientation, z-score, sliding windows with Gaussian blending ---------
_RAS_OF_LPS = np.diag([-1.0, -1.0, 1.0])


def reorientation(affine: np.ndarray, code: str) -> tuple[tuple, tuple]:
    """(perm, flips) that turn an array with voxel-to-LPS ``affine`` to nibabel axis ``code`` (e.g.
    'RAS'): ``np.flip(voxels.transpose(perm), flips)``. Each array axis goes to the world axis it
    lies closest to (the largest direction cosine first, as nibabel's io_orientation)."""
    ras = np.abs(_RAS_OF_LPS @ np.asarray(affine, np.float64)[:3, :3])
    signs = np.sign(_RAS_OF_LPS @ np.asarray(affine, np.float64)[:3, :3])
    world_of = {}
    free = ras.copy()
    for _ in range(3):
        w, j = np.unravel_index(np.argmax(free), free.shape)
        world_of[int(j)] = int(w)
        free[w, :], free[:, j] = -1.0, -1.0
    axis_of_world = {w: j for j, w in world_of.items()}
    perm, flips = [], []
    for k, letter in enumerate(code):
        w = "RAS".index(letter.translate(str.maketrans("LPI", "RAS")))
        j = axis_of_world[w]
        perm.append(j)
        if (signs[w, j] > 0) != (letter in "RAS"):
            flips.append(k)
    return tuple(perm), tuple(flips)


def to_model_axes(voxels: np.ndarray, turn: tuple) -> np.ndarray:
    perm, flips = turn
    return np.flip(np.transpose(voxels, perm), flips) if flips else np.transpose(voxels, perm)


def from_model_axes(array: np.ndarray, turn: tuple) -> np.ndarray:
    """Undo ``to_model_axes`` on the last three axes of ``array``."""
    perm, flips = turn
    lead = array.ndim - 3
    out = np.flip(array, tuple(lead + k for k in flips)) if flips else array
    return np.transpose(out, tuple(range(lead)) + tuple(lead + int(i) for i in np.argsort(perm)))


def zscore(voxels: np.ndarray) -> np.ndarray:
    """float32 (x - mean) / std over the whole volume (std at least 1e-6)."""
    v = np.asarray(voxels, np.float32)
    mean, std = float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))
    return (v - np.float32(mean)) / np.float32(max(std, 1e-6))


def pad_to_patch(volume: np.ndarray, patch: tuple) -> tuple[np.ndarray, tuple]:
    """Pad (centred, constant 0, as MONAI's sliding window) to at least ``patch``; return the array
    and each axis's slice of the original inside it."""
    before = [max(0, p - s) // 2 for s, p in zip(volume.shape, patch)]
    widths = [(b, max(0, p - s) - b) for s, p, b in zip(volume.shape, patch, before)]
    inner = tuple(slice(b, b + s) for b, s in zip(before, volume.shape))
    return (np.pad(volume, widths) if any(sum(w) for w in widths) else volume), inner


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """MONAI's scan: a step of patch x (1 - overlap) (whole patch when it fills the axis), the last
    window flush with the end."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = int(np.ceil((size - patch) / step)) + 1
    return sorted({min(i * step, size - patch) for i in range(count)})


def volume_windows(shape: tuple, spec) -> list[tuple]:
    """Every window's origin (z, y, x) on a padded volume of ``shape``."""
    starts = [window_starts(s, p, spec.overlap) for s, p in zip(shape, spec.patch)]
    return [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]


def gaussian_importance(patch: tuple, sigma_scale: float) -> np.ndarray:
    """Separable Gaussian centred on each window (index patch // 2, sigma = sigma_scale x patch),
    peak 1, floored at 1e-3 so every voxel has weight."""
    weight = np.ones((1, 1, 1), np.float32)
    for axis, p in enumerate(patch):
        x = np.arange(p, dtype=np.float64) - p // 2
        g = np.exp(-0.5 * (x / (sigma_scale * p)) ** 2).astype(np.float32)
        weight = weight * g.reshape([-1 if a == axis else 1 for a in range(3)])
    return np.maximum(weight / weight.max(), np.float32(1e-3))


def blend_windows(maps, origins: list, shape: tuple, spec) -> np.ndarray:
    """Gaussian-weighted average of (C, *patch) window maps (any iterable) onto a (C, *shape) grid;
    holds one accumulator and one weight volume, not every window."""
    weight = gaussian_importance(spec.patch, spec.sigma_scale)
    acc, norm = None, np.zeros(shape, np.float32)
    for m, (z, y, x) in zip(maps, origins):
        d, h, w = spec.patch
        if acc is None:
            acc = np.zeros((m.shape[0], *shape), np.float32)
        acc[:, z:z + d, y:y + h, x:x + w] += m * weight
        norm[z:z + d, y:y + h, x:x + w] += weight
    acc /= np.maximum(norm, 1e-6)
    return acc
