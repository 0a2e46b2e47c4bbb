"""Pixel maths for display (Qt-free): modality values, window/level, colour maps for overlays."""
from __future__ import annotations

import numpy as np

# W/L presets in modality units (CT Hounsfield units): offered for CT only
CT_PRESETS = {"Lung": (-600.0, 1500.0), "Mediastinum": (40.0, 400.0), "Bone": (400.0, 1800.0), "Brain": (40.0, 80.0)}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def window_presets(header: dict) -> list[tuple[str, float, float]]:
    """(name, level, width) that fit this study: the file's own windows first ((0028,1050/1051),
    named by (0028,1055) where it explains them), then the CT presets, for CT only (a lung window
    turns a radiograph white)."""
    def numbers(text: str) -> list[float]:
        out = []
        for part in str(text or "").split("\\"):
            try:
                out.append(float(part))
            except ValueError:
                return []
        return out

    centres, widths = numbers(header.get("WindowCenter")), numbers(header.get("WindowWidth"))
    names = [n.strip() for n in str(header.get("WindowCenterWidthExplanation") or "").split("\\")]
    presets = [(names[i] if i < len(names) and names[i] else f"From the file {i + 1}", c, w)
               for i, (c, w) in enumerate(zip(centres, widths)) if w > 0]
    if str(header.get("Modality", "")).upper() == "CT":
        presets += [(f"{name} (CT)", level, width) for name, (level, width) in CT_PRESETS.items()]
    return presets


def person_name(value: str) -> str:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) the way clinicians read it:
    'FAMILY, Given Middle'; anything without components is shown as it is."""
    parts = [p.strip() for p in str(value or "").split("=")[0].split("^")]
    if len(parts) < 2:
        return parts[0] if parts else ""
    family, given = parts[0], " ".join(p for p in (parts[1:3] if len(parts) > 1 else []) if p)
    prefix, suffix = (parts[3] if len(parts) > 3 else ""), (parts[4] if len(parts) > 4 else "")
    name = f"{family.upper()}, {given}" if given else family.upper()
    return " ".join(p for p in (prefix, name, suffix) if p)


def dicom_date(value: str) -> str:
    """A DICOM date (YYYYMMDD) as '26 Aug 2004' (no day/month order to misread); other text as it is."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit() and 1 <= int(text[4:6]) <= 12:
        return f"{int(text[6:]):d} {MONTHS[int(text[4:6]) - 1]} {text[:4]}"
    return text


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


# box outline colour per label index (RBC red, WBC blue, platelets green, then more)
BOX_COLOURS = ((230, 40, 40), (40, 110, 255), (30, 190, 60), (240, 180, 0), (200, 60, 220), (0, 200, 200))


def boxes_rgba(data: tuple, opacity: float) -> np.ndarray:
    """(detections, (H, W), labels) -> RGBA uint8 with each box's outline (2 px, 1 px on tiny
    images), coloured by its label's place in the model's labels."""
    detections, (h, w), labels = data
    rgba = np.zeros((h, w, 4), np.uint8)
    t = 2 if min(h, w) >= 64 else 1
    for d in detections:
        colour = BOX_COLOURS[labels.index(d.label) % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1, w))
        y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1, h))
        if x1 <= x0 or y1 <= y0:
            continue
        for region in (rgba[y0:y0 + t, x0:x1], rgba[max(y0, y1 - t):y1, x0:x1],
                       rgba[y0:y1, x0:x0 + t], rgba[y0:y1, max(x0, x1 - t):x1]):
            region[..., :3] = colour
            region[..., 3] = int(round(max(opacity, 0.5) * 255))
    return rgba


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


# One painter per overlay kind a result can draw over an image (engine.results.Overlay.kind):
# ``painter(data, opacity) -> (H, W, 4) uint8`` on the study's pixel grid. A new result kind
# that draws over images adds its painter here. (ECG beats are painted by the ECG paper view.)
IMAGE_PAINTERS = {"heatmap": heatmap_rgba, "mask": mask_rgba, "boxes": boxes_rgba, "ellipse": ellipse_rgba}
