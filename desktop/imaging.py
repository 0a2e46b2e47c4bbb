"""Pixel maths for display (Qt-free): modality values, window/level, colour maps for overlays."""
from __future__ import annotations

import numpy as np

# the overlay painters, their colours and legend: shared with the secondary capture sent to the PACS
from medexport.engine.overlay_paint import (BOX_COLOURS, COLORMAP, ELLIPSE_COLOUR, IMAGE_PAINTERS,  # noqa: F401
                                           MASK_COLOUR, boxes_rgba, ellipse_rgba, heatmap_rgba, mask_rgba)
from medexport.engine.overlay_paint import legend as image_legend

# W/L presets in modality units (CT Hounsfield units): offered for CT only
CT_PRESETS = {"Lung": (-600.0, 1500.0), "Mediastinum": (40.0, 400.0), "Bone": (400.0, 1800.0), "Brain": (40.0, 80.0)}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


CT_GUESSED = "CT?"  # the presets' tag where the file states no modality and its values look like HU


def window_presets(header: dict, looks_like_ct: bool = False) -> list[tuple[str, float, float]]:
    """(name, level, width) that fit this study: the file's own windows first ((0028,1050/1051),
    named by (0028,1055) where it explains them), then the CT presets, for CT only (a lung window
    turns a radiograph white). A file without (0008,0060) Modality (NIfTI) gets them, tagged
    "CT?", when ``looks_like_ct`` (desktop/volume_view.looks_like_ct: air at -1000 HU)."""
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
    modality = str(header.get("Modality", "")).upper()
    tag = "CT" if modality == "CT" else CT_GUESSED if not modality and looks_like_ct else None
    if tag:
        presets += [(f"{name} ({tag})", level, width) for name, (level, width) in CT_PRESETS.items()]
    return presets


def legend(overlay) -> list[tuple[str, tuple]]:
    """(label, RGB) for each colour an overlay draws: a volume's labels in the colours of its three
    views (desktop/volume_view.label_colour), the image painters' own otherwise."""
    if overlay is not None and overlay.kind == "labels":
        from .volume_view import label_colour

        return [(name, label_colour(int(k))) for k, name in sorted(overlay.data[1].items())]
    return image_legend(overlay)


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


def page_header(study) -> str:
    """Who and what a printed page is about: patient, ID, study date and the file, on one line."""
    h = study.header
    parts = [person_name(h.get("PatientName", "")), f"ID {h['PatientID']}" if h.get("PatientID") else "",
             f"study date {dicom_date(h['StudyDate'])}" if h.get("StudyDate") else "", study.title]
    return "   ".join(p for p in parts if p)


def display_values(study) -> tuple[np.ndarray, tuple[float, float], str]:
    """Values to window (modality units for DICOM), the default (level, width), and the unit.

    Falls back to the engine's display pixels when the file is not a windowed DICOM: a colour
    picture or colour DICOM (the engine's study is its luma) as (H, W, 3) RGB in [0, 1].
    """
    image = study.load()
    if "colour" in image.meta:  # read as colour, shown to the engine's greyscale models as luma
        from medexport.engine.io.image import read_image

        rgb = read_image(study.path, frame=study.frame if study.frames > 1 else None, colour=True)
        return rgb.pixels, (0.5, 1.0), ""
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
