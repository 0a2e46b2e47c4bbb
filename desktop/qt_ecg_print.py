"""The ECG as it is printed: vectors at exactly 25 mm/s and 10 mm/mV on a true 1 mm / 5 mm grid,
the standard 3 x 4 layout (2.5 s per lead) plus a 10-s rhythm strip, with 1 mV calibration pulses,
on A4 landscape. A ruler on the paper gives the right intervals (the old report embedded a
screenshot at about 18 mm/s). A record longer than 10 s that is not a 12-lead goes on in 10-s
strips of the analysed lead, four to a page (at most ``MAX_STRIP_PAGES`` pages; the page says
what was left out). Every page carries the patient header."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF
from PySide6.QtGui import QColor, QPageLayout, QPageSize, QPainter, QPen, QPolygonF

from medexport.engine.io.ecg import LEAD_ORDER, normalise_lead

SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
ROW_MM = 36.0
STRIPS_PER_PAGE = 4
MAX_STRIP_PAGES = 7  # continuation pages: 280 s more of a long record
PAGE = QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Landscape,
                   QMarginsF(0, 0, 0, 0),
                   QPageLayout.Unit.Millimeter)


def strip_pages(record) -> list[float]:
    """Start times (s) of the continuation pages of strips after the first page's 10 s."""
    names = {normalise_lead(n) for n in record.leads}
    if set(LEAD_ORDER) <= names or record.duration <= 10.0:
        return []
    span = STRIPS_PER_PAGE * 10.0
    return [10.0 + i * span for i in range(MAX_STRIP_PAGES) if 10.0 + i * span < record.duration]


def draw_strip_page(p: QPainter, dots_per_mm: float, record, result, start: float, title: str, header: str,
                    font) -> None:
    """A continuation page: 10-s strips of the analysed lead from ``start`` s, four to a page."""
    p.save()
    p.scale(dots_per_mm, dots_per_mm)
    left, top = 15.0, 28.0
    lead = result.lead if result is not None else list(record.leads)[0]
    _grid(p, QRectF(left, top, 10.0 * SPEED_MM_S + 10.0, STRIPS_PER_PAGE * ROW_MM))
    for r in range(STRIPS_PER_PAGE):
        t0 = start + 10.0 * r
        if t0 >= record.duration:
            break
        y0 = top + (r + 0.5) * ROW_MM
        _calibration(p, left, y0, font, label=False)
        _trace(p, record, lead, t0, t0 + 10.0, left + 10.0, y0, font)
        p.setFont(font(1.8))
        p.setPen(QColor(60, 60, 60))
        p.drawText(QPointF(left + 10.0, y0 + ROW_MM / 2 - 1.0), f"from {t0:.0f} s")
    end = min(start + STRIPS_PER_PAGE * 10.0, record.duration)
    last = strip_pages(record)[-1] + STRIPS_PER_PAGE * 10.0
    note = f"   (the printout stops at {last:.0f} s of {record.duration:.0f} s)" if last < record.duration else ""
    _titles(p, left, title, f"{SPEED_MM_S:g} mm/s   {GAIN_MM_MV:g} mm/mV   lead {lead}, {start:.0f}-{end:.0f} s{note}",
            header, result, font)
    p.restore()


def _titles(p: QPainter, left: float, title: str, scale: str, header: str, result, font) -> None:
    """The patient header, the title, the scale line and the disclaimer above the paper."""
    p.setFont(font(2.6, True))
    p.setPen(QColor(20, 20, 20))
    p.drawText(QPointF(left, 7.0), header)
    p.setFont(font(3.2, True))
    p.drawText(QPointF(left, 12.5), title)
    p.setFont(font(2.6))
    p.drawText(QPointF(left, 18.0), scale)
    if result is not None and result.disclaimer:
        p.setPen(QColor(170, 0, 20))
        p.drawText(QPointF(left, 23.0), result.disclaimer)


def draw_ecg_page(p: QPainter, dots_per_mm: float, record, result, title: str, font, header: str = "") -> None:
    """Draw one A4 landscape page in millimetres (the painter is scaled so 1 unit = 1 mm)."""
    p.save()
    p.scale(dots_per_mm, dots_per_mm)
    left, top, width = 15.0, 28.0, 10.0 * SPEED_MM_S + 10.0  # 10 s of paper + the calibration pulse
    rows = 4
    _grid(p, QRectF(left, top, width, rows * ROW_MM))
    names = {normalise_lead(n): n for n in record.leads}
    twelve = set(LEAD_ORDER) <= set(names)
    lines = LAYOUT if twelve else tuple((n,) for n in list(record.leads)[:3])
    for r, row in enumerate(lines):
        y0 = top + (r + 0.5) * ROW_MM
        _calibration(p, left, y0, font, label=(r == 0))
        span = 10.0 / len(row)
        for c, name in enumerate(row):
            _trace(p, record, name, c * span, (c + 1) * span, left + 10.0 + c * span * SPEED_MM_S, y0, font)
    rhythm = result.lead if result is not None else list(record.leads)[0]
    y0 = top + 3.5 * ROW_MM
    _calibration(p, left, y0, font, label=False)
    _trace(p, record, rhythm, 0.0, 10.0, left + 10.0, y0, font)
    _seconds(p, left + 10.0, top + 3 * ROW_MM + 2.0, font)
    _titles(p, left, title, f"{SPEED_MM_S:g} mm/s   {GAIN_MM_MV:g} mm/mV   grid 1 mm / 5 mm   {record.fs:g} Hz   "
            f"rhythm strip: lead {rhythm}", header, result, font)
    p.restore()


def _grid(p: QPainter, area: QRectF) -> None:
    minor, major = QPen(QColor(250, 200, 200), 0.08), QPen(QColor(230, 120, 120), 0.18)
    for i in range(int(area.width()) + 1):
        p.setPen(major if i % 5 == 0 else minor)
        p.drawLine(QPointF(area.left() + i, area.top()), QPointF(area.left() + i, area.bottom()))
    for j in range(int(area.height()) + 1):
        p.setPen(major if j % 5 == 0 else minor)
        p.drawLine(QPointF(area.left(), area.top() + j), QPointF(area.right(), area.top() + j))


def _calibration(p: QPainter, x: float, y0: float, font, label: bool) -> None:
    """1 mV for 0.2 s: 10 mm high, 5 mm wide."""
    p.setPen(QPen(QColor(0, 0, 0), 0.25))
    h, w = GAIN_MM_MV, 0.2 * SPEED_MM_S
    p.drawPolyline(QPolygonF([QPointF(x + 1, y0), QPointF(x + 2.5, y0), QPointF(x + 2.5, y0 - h),
                              QPointF(x + 2.5 + w, y0 - h), QPointF(x + 2.5 + w, y0), QPointF(x + 9, y0)]))
    if label:  # anchors whose PDF coordinates the tests measure: 0 mV and 1 mV
        p.setFont(font(1.6))
        p.drawText(QPointF(x + 2.5, y0 + 2.2), "0mV")
        p.drawText(QPointF(x + 2.5, y0 - h - 0.6), "1mV")


def _trace(p: QPainter, record, name: str, t0: float, t1: float, x0: float, y0: float, font) -> None:
    try:
        signal, label = record.lead(name)
    except Exception:  # a lead the record lacks stays blank, as on paper
        return
    fs = record.fs
    a, b = int(t0 * fs), min(int(t1 * fs), len(signal))
    if b - a < 2:
        return
    seg = np.asarray(signal[a:b], np.float64)
    t = np.arange(len(seg)) / fs
    x = (x0 + t * SPEED_MM_S).tolist()
    y = (y0 - (seg - np.median(seg)) * GAIN_MM_MV).tolist()
    p.setPen(QPen(QColor(0, 0, 0), 0.22))
    p.drawPolyline(QPolygonF([QPointF(xi, yi) for xi, yi in zip(x, y)]))
    p.setFont(font(2.4, True))
    p.drawText(QPointF(x0 + 1.0, y0 - 12.0), label)


def _seconds(p: QPainter, x0: float, y: float, font) -> None:
    p.setFont(font(1.8))
    p.setPen(QColor(60, 60, 60))
    for s in range(11):
        p.drawText(QPointF(x0 + s * SPEED_MM_S, y), f"{s}s")
