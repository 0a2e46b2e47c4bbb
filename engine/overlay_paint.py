"""Overlay painters (numpy only): what a result draws over its image, as RGBA on the source grid.

One painter per ``results.Overlay.kind`` that draws over an image: ``painter(data, opacity) ->
(H, W, 4) uint8``. The viewer paints these over its picture; the secondary capture
(engine/overlay_capture.py) burns them into a copy of the source. ECG beats are drawn by the
ECG paper view, not here.
"""
from __future__ import annotations

import numpy as np


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


MASK_COLOUR, ELLIPSE_COLOUR = (0, 200, 255), (255, 220, 0)


def mask_rgba(mask: np.ndarray, opacity: float, colour=MASK_COLOUR) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask > 0, :3] = colour
    rgba[mask > 0, 3] = int(opacity * 255)
    return rgba


# box outline colour per label index (RBC red, WBC blue, platelets green, then more)
BOX_COLOURS = ((230, 40, 40), (40, 110, 255), (30, 190, 60), (240, 180, 0), (200, 60, 220), (0, 200, 200))


def legend(overlay) -> list[tuple[str, tuple]]:
    """(label, RGB) for each colour an overlay draws: one per label the detection model knows,
    the mask and ellipse of a measurement; empty for a heatmap (its ramp explains itself)."""
    if overlay is None:
        return []
    if overlay.kind == "boxes":
        return [(label, BOX_COLOURS[i % len(BOX_COLOURS)]) for i, label in enumerate(overlay.data[2])]
    if overlay.kind == "ellipse":
        return [("mask", MASK_COLOUR), ("fitted ellipse", ELLIPSE_COLOUR)]
    if overlay.kind == "mask":
        return [("mask", MASK_COLOUR)]
    return []


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


def ellipse_rgba(data: tuple, opacity: float, colour=ELLIPSE_COLOUR) -> np.ndarray:
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


IMAGE_PAINTERS = {"heatmap": heatmap_rgba, "mask": mask_rgba, "boxes": boxes_rgba, "ellipse": ellipse_rgba}


def burn(rgb: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """``rgba`` composited over ``rgb`` ((H, W, 3) uint8): a new (H, W, 3) uint8 image."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * (1 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
