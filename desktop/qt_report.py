"""PDF report: the study drawn with its overlay as a document, the scores as an aligned table, who
computed them and how, the disclaimer; the patient header on every page."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPageLayout, QPageSize, QPainter, QPdfWriter, QPen

from medexport.engine.atomic import write_new

from .imaging import legend, page_header
from .result_table import result_table

RESOLUTION = 150  # dots per inch of the page: the study image is embedded at this resolution
IMAGE_SHARE = 0.62  # the image's box: the page's width, and this share of it in height


def report_font(size: float, bold: bool = False) -> QFont:
    """The report's font (``size`` in points) with ligatures off: a hash copied from the PDF must
    be the hash ("ff" set as one glyph copied as one character)."""
    font = QFont("Sans", 10, QFont.Weight.Bold if bold else QFont.Weight.Normal)
    font.setPointSizeF(size)
    for tag in ("liga", "clig", "dlig"):
        font.setFeature(QFont.Tag(tag), 0)
    return font


def save_pdf(path: Path, study, result, intended_use: str, window: tuple | None = None) -> Path:
    """Write the report as a new, complete file (``name (2).pdf`` if ``path`` exists). ``window``:
    the (level, width, invert) the user looked at the image with (default: the study's own)."""
    return write_new(Path(path), lambda tmp: _draw(tmp, study, result, intended_use, window))


class _Page:
    """A cursor down the pages that writes wrapped lines of text; a line that does not fit starts a
    new page, which begins with the patient header."""

    def __init__(self, p: QPainter, writer: QPdfWriter, header: str):
        self.p, self.writer, self.header = p, writer, header
        self.w, self.number, self.y = writer.width(), 0, 0.0
        self.new_page()

    def new_page(self) -> None:
        if self.number:
            self.writer.newPage()
        self.number, self.y = self.number + 1, 0.0
        self.text(f"{self.header}   page {self.number}", 8, True, QColor(60, 60, 60))

    def room(self, height: float) -> None:
        """Start a new page unless ``height`` more dots fit on this one."""
        if self.y + height > self.writer.height():
            self.new_page()

    def text(self, line: str, size: float = 10, bold: bool = False, colour=QColor(0, 0, 0), gap: float = 1.6,
             x: float = 0.0, width: float | None = None, advance: bool = True) -> float:
        self.p.setFont(report_font(size, bold))
        self.p.setPen(colour)
        rect = QRectF(x, self.y, width or self.w - x, 10000)
        bound = self.p.boundingRect(rect, Qt.TextFlag.TextWordWrap, line)
        if advance and self.number and self.y + bound.height() > self.writer.height():
            self.new_page()
            rect.moveTop(self.y)
            self.p.setFont(report_font(size, bold))
            self.p.setPen(colour)
        self.p.drawText(rect, Qt.TextFlag.TextWordWrap, line)
        height = bound.height() + size * 0.4 * gap
        if advance:
            self.y += height
        return height


def _draw(tmp: Path, study, result, intended_use: str, window) -> None:
    from .qt_ecg_print import PAGE, draw_ecg_page, draw_strip_page, strip_pages

    ecg = study.kind == "ecg"
    record = study.load() if ecg else None
    header = page_header(study)
    writer = QPdfWriter(str(tmp))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter))
    writer.setResolution(RESOLUTION)
    writer.setTitle(f"medexport report {Path(study.path).name}")
    p = QPainter(writer)
    page = _Page(p, writer, header)
    _summary(page, study, result)
    if not ecg:
        _picture(page, study, result, window)
    _scores(page, result)
    _provenance(page, result, intended_use)
    if ecg:  # the tracing itself, as vectors at the stated scale, on pages of its own
        writer.setPageLayout(PAGE)
        dots_per_mm = writer.resolution() / 25.4
        font = lambda mm, bold=False: report_font(mm * 72.0 / writer.resolution(), bold)  # noqa: E731 (mm tall)
        title = f"{Path(study.path).name}: {result.headline()}"
        writer.newPage()
        draw_ecg_page(p, dots_per_mm, record, result, title, font, f"{header}   page {page.number + 1}")
        for i, start in enumerate(strip_pages(record), start=page.number + 2):
            writer.newPage()
            draw_strip_page(p, dots_per_mm, record, result, start, title, f"{header}   page {i}", font)
    if not p.end():
        raise OSError(f"the PDF report could not be written to {tmp.parent}")


def _summary(page: _Page, study, result) -> None:
    page.text("medexport result report", 18, True)
    if result.disclaimer:
        page.p.fillRect(QRectF(0, page.y, page.w, 70), QColor(255, 235, 235))
        page.y += 12
        page.text(result.disclaimer, 11, True, QColor(170, 0, 20))
        page.y += 10
    page.text(f"Input SHA-256: {result.input_sha256}", 8, colour=QColor(80, 80, 80))
    for warning in result.warnings:
        page.text(f"Warning: {warning.message} [{warning.code}]", 10, True, QColor(140, 90, 0), gap=1.0)
    page.text(f"Result: {result.headline()}", 14, True)
    if result.not_assessed:
        page.text(f"The model's answer, not vouched for: {result.decision()}", 10, colour=QColor(110, 80, 0))


def _picture(page: _Page, study, result, window) -> None:
    """The study with its overlay, at the page's resolution, in a box of its own shape (no bars)."""
    from .qt_image import render_study

    picture = render_study(study, result, window)
    scale = min(page.w / picture.width(), page.w * IMAGE_SHARE / picture.height())
    w, h = picture.width() * scale, picture.height() * scale
    page.room(h + 60)
    if scale < 1:  # more pixels than the page has dots: resample once, smoothly
        picture = picture.scaled(round(w), round(h), Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
    target = QRectF((page.w - w) / 2, page.y, w, h)
    page.p.drawImage(target, picture)
    page.p.setPen(QPen(QColor(120, 120, 120), 1))
    page.p.drawRect(target)
    page.y += h + 12
    overlay = result.overlay()
    shown = "" if window is None or not study.header else f"window W {window[1]:.4g} L {window[0]:.4g}" + (" inverted" if window[2] else "")
    notes = [n for n in (overlay.note if overlay is not None else "", shown) if n]
    if notes:
        page.text("   ".join(notes), 8, colour=QColor(90, 90, 90), gap=1.0)
    x = 0.0
    for label, rgb in legend(overlay):
        page.p.fillRect(QRectF(x, page.y + 4, 18, 18), QColor(*rgb))
        page.p.setPen(QColor(40, 40, 40))
        page.p.setFont(report_font(9))
        page.p.drawText(QPointF(x + 24, page.y + 20), label)
        x += 40 + page.p.fontMetrics().horizontalAdvance(label)
    if legend(overlay):
        page.y += 36


def _scores(page: _Page, result) -> None:
    """The result's table (result_table: the headers that fit it) with aligned columns."""
    table = result_table(result)
    columns = (0.0, page.w * 0.55, page.w * 0.75)
    widths = (page.w * 0.55, page.w * 0.2, page.w * 0.25)
    page.y += 6
    page.room(80)
    heights = [page.text(h, 9, True, QColor(60, 60, 60), gap=0.6, x=x, width=cw, advance=False)
               for h, x, cw in zip(table.headers, columns, widths)]
    page.y += max(heights)
    page.p.setPen(QPen(QColor(150, 150, 150), 1))
    page.p.drawLine(QPointF(0, page.y), QPointF(page.w, page.y))
    page.y += 4
    for cells, hit in zip(table.rows, table.hits):
        page.room(40)
        colour = QColor(110, 110, 110) if hit and result.not_assessed else QColor(150, 0, 0) if hit else QColor(0, 0, 0)
        heights = [page.text(c, 10, hit, colour, gap=0.6, x=x, width=cw, advance=False)
                   for c, x, cw in zip(cells, columns, widths)]
        page.y += max(heights)
    page.y += 8
    for line in result.detail_lines():
        page.text(line, 9, gap=1.0)


def _provenance(page: _Page, result, intended_use: str) -> None:
    page.y += 10
    grey = QColor(80, 80, 80)
    page.text(f"Model: {result.model_id} {result.model_version}   Runtime: {result.backend} {result.precision} "
              f"({result.provenance.device})", 9)
    page.text(f"Bundle SHA-256: {result.bundle_sha256}", 8, colour=grey)
    page.text(f"Intended use: {intended_use}", 8, colour=grey)
    page.text(f"Computed {result.created} UTC; report written {datetime.now().isoformat(timespec='seconds')} by the "
              "medexport viewer, offline on this computer.", 8, colour=grey)
