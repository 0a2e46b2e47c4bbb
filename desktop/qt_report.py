"""PDF report: the study with its overlay, the scores, who computed them and how, the disclaimer."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QMarginsF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter

from medexport.engine.atomic import write_new
from medexport.engine.results import DISCLAIMER

from .imaging import dicom_date, person_name


def report_font(size: float, bold: bool = False) -> QFont:
    """The report's font (``size`` in points) with ligatures off: a hash copied from the PDF must
    be the hash ("ff" set as one glyph copied as one character)."""
    font = QFont("Sans", 10, QFont.Weight.Bold if bold else QFont.Weight.Normal)
    font.setPointSizeF(size)
    for tag in ("liga", "clig", "dlig"):
        font.setFeature(QFont.Tag(tag), 0)
    return font


def save_pdf(path: Path, study, result, picture: QImage, intended_use: str) -> Path:
    """Write the report as a new, complete file (``name (2).pdf`` if ``path`` exists)."""
    return write_new(Path(path), lambda tmp: _draw(tmp, study, result, picture, intended_use))


def _draw(tmp: Path, study, result, picture: QImage, intended_use: str) -> None:
    writer = QPdfWriter(str(tmp))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter))
    writer.setResolution(150)
    writer.setTitle(f"medexport report {Path(study.path).name}")
    p = QPainter(writer)
    w = writer.width()
    y = 0.0

    def text(line: str, size: int = 10, bold: bool = False, colour=QColor(0, 0, 0), height: float = 1.6):
        nonlocal y
        p.setFont(report_font(size, bold))
        p.setPen(colour)
        rect = QRectF(0, y, w, 10000)
        bound = p.boundingRect(rect, Qt.TextFlag.TextWordWrap, line)
        p.drawText(rect, Qt.TextFlag.TextWordWrap, line)
        y += bound.height() + size * 0.4 * height

    text("medexport result report", 18, True)
    p.fillRect(QRectF(0, y, w, 70), QColor(255, 235, 235))
    y += 12
    text(DISCLAIMER, 11, True, QColor(170, 0, 20))
    y += 10
    header = study.header
    who = " ".join(filter(None, [person_name(header.get("PatientName", "")), header.get("PatientID", "")]))
    text(f"Study: {Path(study.path).name}" + (f"   Patient: {who}" if who else "")
         + (f"   Date: {dicom_date(header.get('StudyDate'))}" if header.get("StudyDate") else ""), 10)
    text(f"Input SHA-256: {result.input_sha256}", 8, colour=QColor(80, 80, 80))
    for warning in result.warnings:
        text(f"Warning: {warning.message} [{warning.code}]", 10, True, QColor(140, 90, 0), height=1.0)
    text(f"Result: {result.headline()}", 14, True)
    if result.not_assessed:
        text(f"The model's answer, not vouched for: {result.decision()}", 10, colour=QColor(110, 80, 0))
    if not picture.isNull():
        box_h = w * 0.62
        scaled = picture.scaled(int(w), int(box_h), Qt.AspectRatioMode.KeepAspectRatio,
                                Qt.TransformationMode.SmoothTransformation)
        p.drawImage(QRectF((w - scaled.width()) / 2, y, scaled.width(), scaled.height()), scaled)
        y += scaled.height() + 20
        overlay = result.overlay()
        if overlay is not None:
            text(overlay.note, 8, colour=QColor(90, 90, 90))
    for row in result.score_rows():
        text(f"{row.label:<24} {row.score:.3f}" + (f"   threshold {row.threshold:.3f}" if row.threshold is not None
                                                   else ""), 10, height=1.0)
    for line in result.detail_lines():
        text(line, 9, height=1.0)
    y += 10
    text(f"Model: {result.model_id} {result.model_version}   Runtime: {result.backend} {result.precision} "
         f"({result.provenance.device})", 9)
    text(f"Bundle SHA-256: {result.bundle_sha256}", 8, colour=QColor(80, 80, 80))
    text(f"Intended use: {intended_use}", 8, colour=QColor(80, 80, 80))
    text(f"Computed {result.created} UTC; report written {datetime.now().isoformat(timespec='seconds')} by the "
         "medexport viewer, offline on this computer.", 8, colour=QColor(80, 80, 80))
    if study.kind == "ecg":  # the tracing itself, as vectors at the stated scale, on its own page
        from .qt_ecg_print import PAGE, draw_ecg_page

        writer.setPageLayout(PAGE)
        writer.newPage()
        dots_per_mm = writer.resolution() / 25.4
        draw_ecg_page(p, dots_per_mm, study.load(), result, f"{Path(study.path).name}: {result.headline()}",
                      lambda mm, bold=False: report_font(mm * 72.0 / writer.resolution(), bold))  # mm tall
    if not p.end():
        raise OSError(f"the PDF report could not be written to {tmp.parent}")
