"""The PDF report of a volume result, Qt-free: the listener's document (engine/pacs/textpdf.py's lines,
disclaimer first) with three orthogonal slices through the mask's centroid between the result line
and the details, the labels painted in their colours at the planes' true aspect, and the volume
table (colour, label, voxels, mL).
"""
from __future__ import annotations

import textwrap
import zlib

import numpy as np

from .pacs.textpdf import WIDTH, _escape, pdf_file, report_lines
from .volume_planes import (AXIS, EDGES, VIEWS, blend, centroid, default_window, label_colour, patient_axes,
                            patient_spacing, pixel_mm, plane, windowed)

PAGE_W, PAGE_H, MARGIN = 595, 842, 50  # A4 in points
LEADING, FONT = 13, 10  # the text report's line height and font size (textpdf.text_pdf)
VIEW_GAP, VIEW_MAX_H = 26, 200  # points between the three views (room for their side letters); tallest height
MAX_IMAGE_PX = 1200  # a view is upsampled (nearest) to at most this many pixels a side: crisp voxels


class _Document:
    """Pages of Helvetica text, filled rectangles and RGB images; ``pdf()`` gives the bytes."""

    def __init__(self, title: str):
        self.title, self.pages, self.images = title, [[]], []
        self.y = PAGE_H - MARGIN

    def room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.pages.append([])
            self.y = PAGE_H - MARGIN

    def text_at(self, x: float, y: float, text: str, size: float = FONT, bold: bool = False) -> None:
        font = "/F2" if bold else "/F1"
        self.pages[-1].append(f"BT {font} {size:g} Tf {x:.2f} {y:.2f} Td ({_escape(text)}) Tj ET")

    def line(self, text: str, size: float = FONT, bold: bool = False) -> None:
        for part in textwrap.wrap(text, WIDTH) or [""]:
            self.room(LEADING)
            self.y -= LEADING
            self.text_at(MARGIN, self.y, part, size, bold)

    def rect(self, x: float, y: float, w: float, h: float, rgb: tuple) -> None:
        r, g, b = (c / 255 for c in rgb)
        self.pages[-1].append(f"q {r:.3f} {g:.3f} {b:.3f} rg {x:.2f} {y:.2f} {w:.2f} {h:.2f} re f Q")

    def image(self, rgb: np.ndarray, x: float, y: float, w: float, h: float) -> None:
        """``rgb`` (H, W, 3) uint8 drawn into the box with its lower left corner at (x, y)."""
        self.images.append(rgb)
        self.pages[-1].append(f"q {w:.2f} 0 0 {h:.2f} {x:.2f} {y:.2f} cm /Im{len(self.images)} Do Q")

    def pdf(self) -> bytes:
        fonts = 3 + len(self.images)  # objects: catalog, pages, info, images..., fonts, then the pages
        objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
                   b"<< /Title (" + _escape(self.title).encode("latin-1") + b") /Producer (medexport) >>"]
        for rgb in self.images:
            data = zlib.compress(np.ascontiguousarray(rgb).tobytes(), 6)
            objects.append(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                           b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (rgb.shape[1], rgb.shape[0], len(data))
                           + data + b"\nendstream")
        objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
        objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
        xobjects = b" ".join(b"/Im%d %d 0 R" % (i + 1, 4 + i) for i in range(len(self.images)))
        kids = []
        for page in self.pages:
            stream = "\n".join(page).encode("latin-1")
            number = len(objects) + 1
            kids.append(number)
            objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 %d 0 R "
                           b"/F2 %d 0 R >> /XObject << %s >> >> /Contents %d 0 R >>"
                           % (PAGE_W, PAGE_H, fonts + 1, fonts + 2, xobjects, number + 1))
            objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        objects[1] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                      + b"] /Count %d >>" % len(kids))
        return pdf_file(objects, info=3)


def views(result, voxels: np.ndarray) -> list[tuple[str, np.ndarray, tuple, int, int]]:
    """(view, RGB plane, (height, width) in mm, slice index, slices) through the mask's centroid."""
    zyx, labels = patient_axes(voxels, result.affine), patient_axes(result.mask, result.affine)
    spacing = patient_spacing(result.affine, result.spacing_mm)
    point = centroid(labels)
    level, width = default_window(zyx)
    out = []
    for view in VIEWS:
        index = point[AXIS[view]]
        rgb = blend(windowed(plane(zyx, view, index), level, width), plane(labels, view, index))
        h_mm, w_mm = pixel_mm(spacing, view)
        out.append((view, rgb, (rgb.shape[0] * h_mm, rgb.shape[1] * w_mm), index, zyx.shape[AXIS[view]]))
    return out


def _upsampled(rgb: np.ndarray, box: tuple) -> np.ndarray:
    """``rgb`` repeated (nearest) to about 2 pixels per point of its box, at most MAX_IMAGE_PX a side."""
    h, w = rgb.shape[:2]
    ky = int(np.clip(np.ceil(2 * box[0] / h), 1, max(1, MAX_IMAGE_PX // h)))
    kx = int(np.clip(np.ceil(2 * box[1] / w), 1, max(1, MAX_IMAGE_PX // w)))
    return np.repeat(np.repeat(rgb, ky, axis=0), kx, axis=1)


def _figure(doc: _Document, result, voxels: np.ndarray) -> None:
    """The three views side by side at one scale (mm to points) and their true aspect, each with
    the patient's sides at its edges and its slice under it."""
    planes = views(result, voxels)
    usable = PAGE_W - 2 * MARGIN - 2 * VIEW_GAP
    scale = min(usable / sum(mm[1] for _, _, mm, _, _ in planes), VIEW_MAX_H / max(mm[0] for _, _, mm, _, _ in planes))
    height = max(mm[0] for _, _, mm, _, _ in planes) * scale
    doc.room(height + 3 * LEADING + 10)
    doc.y -= LEADING + 4
    top, x = doc.y, MARGIN
    for view, rgb, mm, index, count in planes:
        h, w = mm[0] * scale, mm[1] * scale
        doc.image(_upsampled(rgb, (h, w)), x, top - h, w, h)
        up, down, left, right = EDGES[view]
        doc.text_at(x + w / 2 - 3, top + 2, up, 7)
        doc.text_at(x + w / 2 - 3, top - h - 8, down, 7)
        doc.text_at(x - 7, top - h / 2 - 3, left, 7)
        doc.text_at(x + w + 2, top - h / 2 - 3, right, 7)
        doc.text_at(x, top - height - 20, f"{view.capitalize()} {index + 1} of {count}", 8)
        x += w + VIEW_GAP
    doc.y = top - height - 24
    doc.text_at(MARGIN, doc.y - 8, "Three orthogonal slices through the centroid of the labelled voxels; labels in "
                                   "their colours; true aspect from the voxel spacing.", 7)
    doc.y -= 14


def _volume_table(doc: _Document, result) -> None:
    """Colour, label, voxels and mL per label, then the total."""
    doc.line("")
    caveat = "; the model's answer, not vouched for" if result.not_assessed else ""
    doc.line(f"Volumes (voxel count x voxel volume from the affine{caveat}):", bold=True)
    counts = np.bincount(result.mask.ravel(), minlength=len(result.labels) + 1)
    rows = [(label_colour(i + 1), label, int(counts[i + 1]), result.measurements[f"{label}_volume_ml"])
            for i, label in enumerate(result.labels)]
    rows.append((None, "total", int(counts[1:].sum()), result.measurements["total_volume_ml"]))
    for colour, label, voxels, ml in rows:
        doc.line(f"          {label:<14}{voxels:>10} voxels   {ml:8.3f} mL", bold=colour is None)
        if colour is not None:
            doc.rect(MARGIN + 4, doc.y - 1, 20, 9, colour)


def report_pdf(result, voxels: np.ndarray, header, intended_use: str = "", by: str = "command line",
               source_lines: tuple = ()) -> bytes:
    """The report as PDF bytes. ``voxels``: the volume the result was computed on (its grid);
    ``header``: the first slice's pydicom dataset or a dict of safe values (NIfTI: ``{}``);
    ``source_lines``: what the volume was (series UID and slices, or the file); ``intended_use``:
    the bundle's statement, by default the one the result was computed under (its provenance)."""
    lines = report_lines(result, header, intended_use or result.intended_use, by=by)
    at = next(i for i, line in enumerate(lines) if line.startswith("Result:"))
    doc = _Document("medexport volume report")
    for i, line in enumerate(lines[:at] + list(source_lines) + [""]):
        doc.line(line, bold=i == 0)
    doc.line(lines[at], bold=True)
    _figure(doc, result, voxels)
    _volume_table(doc, result)
    if result.warnings:
        doc.line("")
    for w in result.warnings:
        doc.line(f"WARNING [{w.code}] {w.message}")
    doc.line("")
    for line in lines[at + 2 + len(result.score_rows()):]:
        doc.line(line)
    return doc.pdf()
