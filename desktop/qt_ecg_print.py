"""The ECG as it is printed: vectors at exactly 25 mm/s and 10 mm/mV on a true 1 mm / 5 mm grid,
the standard 3 x 4 layout (2.5 s per lead) plus a 10-s rhythm strip, with 1 mV calibration pulses,
on A4 landscape. A ruler on the paper gives the right intervals (the old report embedded a
screenshot at about 18 mm/s)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF
from PySide6.QtGui import QColor, QPageLayout, QPageSize, QPainter, QPen, QPolygonF

from medexport.engine.io.ecg import LEAD_ORDER, normalise_lead

SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
ROW_MM = 36.0
PAGE = QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Landscape,
                   QMarginsF(0, 0, 0, 0),
                   QPageLayout.Unit.Millimeter)


def draw_ecg_page(p: QPainter, dots_per_mm: float, record, result, title: str, font) -> None:
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
    p.setFont(font(3.2, True))
    p.setPen(QColor(20, 20, 20))
    p.drawText(QPointF(left, 12.0), title)
    p.setFont(font(2.6))
    p.drawText(QPointF(left, 18.0), f"{SPEED_MM_S:g} mm/s   {GAIN_MM_MV:g} mm/mV   grid 1 mm / 5 mm   "
                                   f"{record.fs:g} Hz   rhythm strip: lead {rhythm}")
    if result is not None and result.disclaimer:
        p.setPen(QColor(170, 0, 20))
        p.drawText(QPointF(left, 23.0), result.disclaimer)
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
