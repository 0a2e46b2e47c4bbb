"""Pixel maths for display (Qt-free): modality values, window/level, colour maps for overlays."""
from __future__ import annotations

import numpy as np

# W/L presets in modality units (CT Hounsfield units); others use the header's window
CT_PRESETS = {"Lung": (-600.0, 1500.0), "Mediastinum": (40.0, 400.0), "Bone": (400.0, 1800.0), "Brain": (40.0, 80.0)}


def display_values(study) -> tuple[np.ndarray, tuple[float, float], str]:
    """Values to window (modality units for DICOM), the default (level, width), and the unit.

    Falls back to the engine's display greyscale when the file is not DICOM.
    """
    image = study.load()
    grey = image.meta.get("greyscale", {}) if image.kind == "dicom" else {}
    if image.kind == "dicom" and grey.get("voi") == "window":
        import pydicom
        from pydicom.pixels import apply_modality_lut

        ds = pydicom.dcmread(study.path)
        arr = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            arr = arr[study.frame]
        values = apply_modality_lut(arr, ds).astype(np.float32)
        if grey.get("photometric") == "MONOCHROME1":
            values = values.max() + values.min() - values  # show white as white, keep units readable
            level = float(values.max() + values.min() - grey["center"])
        else:
            level = float(grey["center"])
        unit = "HU" if str(ds.get("Modality", "")) == "CT" else ""
        return values, (level, float(grey["width"])), unit
    return image.pixels, (0.5, 1.0), ""


def window_to_uint8(values: np.ndarray, level: float, width: float, invert: bool = False) -> np.ndarray:
    width = max(width, 1e-6)
    scale = 255.0 / width
    out = np.clip((values - (level - width / 2)) * scale, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def _colormap() -> np.ndarray:
    """A perceptual 'inferno'-like ramp (dark purple -> red -> yellow), 256 x 3 uint8."""
    anchors = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
    x = np.linspace(0, 1, 256)
    pos = np.linspace(0, 1, len(anchors))
    return np.stack([np.interp(x, pos, anchors[:, c]) for c in range(3)], 1).astype(np.uint8)


COLORMAP = _colormap()


def heatmap_rgba(heat: np.ndarray, opacity: float) -> np.ndarray:
    """(H, W) in [0, 1] -> RGBA uint8; low values transparent so the anatomy stays visible."""
    idx = np.clip(heat * 255, 0, 255).astype(np.uint8)
    rgba = np.empty((*heat.shape, 4), np.uint8)
    rgba[..., :3] = COLORMAP[idx]
    rgba[..., 3] = (np.clip((heat - 0.15) / 0.85, 0, 1) * opacity * 255).astype(np.uint8)
    return rgba


def mask_rgba(mask: np.ndarray, opacity: float, colour=(0, 200, 255)) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask > 0, :3] = colour
    rgba[mask > 0, 3] = int(opacity * 255)
    return rgba


# One painter per overlay kind a result can draw over an image (engine.results.Overlay.kind):
# ``painter(data, opacity) -> (H, W, 4) uint8`` on the study's pixel grid. A new result kind
# that draws over images adds its painter here. (ECG beats are painted by the ECG paper view.)
IMAGE_PAINTERS = {"heatmap": heatmap_rgba, "mask": mask_rgba}


def ellipse_rgba(data: tuple, opacity: float, colour=(255, 220, 0)) -> np.ndarray:
    """(mask, ellipse or None) -> the mask tinted and the fitted ellipse drawn 3 px wide, opaque."""
    mask, ellipse = data
    rgba = mask_rgba(mask, opacity * 0.5)
    if ellipse is not None:
        h, w = mask.shape
        pts = ellipse.points(max(360, int(ellipse.perimeter() * 2)))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                x, y = np.rint(pts[:, 0]).astype(int) + dx, np.rint(pts[:, 1]).astype(int) + dy
                keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                rgba[y[keep], x[keep], :3] = colour
                rgba[y[keep], x[keep], 3] = 255
    return rgba


IMAGE_PAINTERS["ellipse"] = ellipse_rgba
