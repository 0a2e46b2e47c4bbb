"""ECG paper view: 25 mm/s and 10 mm/mV on the standard 1 mm / 5 mm grid.

12-lead records: the 3 x 4 layout (2.5 s per lead) plus a 10-s rhythm strip of lead II, fitted
to the window's width (no scrolling to reach V4-V6). Other records wrap like a printed rhythm
strip: rows of about 10 s (as many seconds as the window's width holds), every lead in each row,
scrolled down, never sideways (a 30-min Holter record is 181 rows). Beat marks come from the result's R peaks, shaded by the
model's per-beat saliency (on the analysed lead's row).
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QScrollArea, QWidget

from medexport.engine.io.ecg import LEAD_ORDER, normalise_lead

LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
ROW_MM = 30.0  # height of one trace row in mm (3 mV)


class EcgPaper(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.record, self.result = None, None
        self.px_per_mm = 4.0
        self.speed = 25.0  # mm/s
        self.gain = 10.0  # mm/mV
        self.mode = "auto"
        self.lead = None
        self.fit_width = None  # pixels available: a 12-lead page is scaled to fit them
        self.view_width = 0  # the viewer's width: rows of other records wrap at it
        self._exposed = None  # the rectangle being painted
        self.setMinimumHeight(300)

    # -- content -----------------------------------------------------------------------------------
    def set_record(self, record, result=None) -> None:
        self.record, self.result = record, result
        self._resize()

    def set_result(self, result) -> None:
        self.result = result
        self.update()

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        self._resize()

    def set_zoom(self, px_per_mm: float) -> None:
        self.px_per_mm = px_per_mm
        self.fit_width = None  # the user's zoom wins over fitting
        self._resize()

    def fit_to(self, width: int) -> None:
        """Scale to ``width`` pixels (the viewer's width): 10 s across, within readable limits."""
        self.fit_width = width
        self._resize()

    def set_view_width(self, width: int) -> None:
        """The viewer's width: fitted to it unless the user zoomed; rows wrap at it."""
        self.view_width = width
        if self.fit_width is not None:
            self.fit_width = width
        self._resize()

    @property
    def row_seconds(self) -> float:
        """Seconds of signal per wrapped row (records that are not 12-lead)."""
        if not self.view_width:
            return 10.0
        return max(1.0, math.floor((self.view_width - 44) / (self.speed * self.px_per_mm) + 1e-6))

    @property
    def rows(self) -> int:
        """Wrapped rows (each holding every lead) of a record that is not 12-lead."""
        return max(1, math.ceil(self.record.duration / self.row_seconds)) if self.record is not None else 0

    def leads_shown(self) -> list[str]:
        """The rows of a record that is not a full 12-lead: every lead it has."""
        return list(self.record.leads) if self.record is not None else []

    def twelve_lead(self) -> bool:
        if self.record is None or self.mode == "single":
            return False
        names = {normalise_lead(n) for n in self.record.leads}
        return set(LEAD_ORDER) <= names

    def _resize(self) -> None:
        if self.record is None:
            return
        if self.fit_width:
            self.px_per_mm = float(np.clip((self.fit_width - 44) / (10.0 * self.speed), 1.0, 8.0))
        mm = self.px_per_mm
        if self.twelve_lead():
            width = 10.0 * self.speed * mm + 40
            height = (4 * ROW_MM + 12) * mm
        else:
            width = min(self.record.duration, self.row_seconds) * self.speed * mm + 40
            height = (self.rows * len(self.leads_shown()) * ROW_MM + 16) * mm
        self.setFixedSize(int(width), int(height))
        self.update()

    # -- painting -------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(255, 252, 250))
        if self.record is None:
            return
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self._exposed = event.rect()
        self._grid(p, event.rect())
        top = 8 * self.px_per_mm
        if self.twelve_lead():
            for r, row in enumerate(LAYOUT):
                for c, name in enumerate(row):
                    self._trace(p, name, 2.5 * c, 2.5 * (c + 1), 2.5 * c, top + (r + 0.5) * ROW_MM * self.px_per_mm)
            self._trace(p, self.result.lead if self.result else "II", 0, 10, 0,
                        top + 3.5 * ROW_MM * self.px_per_mm, beats=True)
        else:
            self._wrapped(p, top, event.rect())
        self._header(p)

    def _wrapped(self, p: QPainter, top: float, exposed) -> None:
        """Rows of ``row_seconds``, every lead in each; only the rows in ``exposed`` are drawn."""
        analysed = normalise_lead(self.result.lead if self.result else self.record.lead(self.lead)[1])
        names, span, row_px = self.leads_shown(), self.row_seconds, ROW_MM * self.px_per_mm
        for k in range(self.rows):
            for j, name in enumerate(names):
                y0 = top + (k * len(names) + j + 0.5) * row_px
                if y0 + row_px < exposed.top() or y0 - row_px > exposed.bottom():
                    continue
                self._trace(p, name, k * span, (k + 1) * span, 0, y0, beats=normalise_lead(name) == analysed)
                if j == 0 and k:
                    p.setFont(QFont("Sans", 8))
                    p.setPen(QColor(90, 90, 90))
                    p.drawText(QPointF(20, y0 + 0.45 * row_px), f"{k * span:.0f} s")

    def _grid(self, p: QPainter, area) -> None:
        mm = self.px_per_mm
        minor, major = QPen(QColor(250, 205, 205), 0.6), QPen(QColor(235, 140, 140), 1.1)
        x0, x1 = int(area.left() / mm) - 1, int(area.right() / mm) + 2
        for i in range(max(x0, 0), x1):
            p.setPen(major if i % 5 == 0 else minor)
            p.drawLine(QPointF(i * mm, 0), QPointF(i * mm, self.height()))
        for j in range(int(self.height() / mm) + 1):
            p.setPen(major if j % 5 == 0 else minor)
            p.drawLine(QPointF(max(x0, 0) * mm, j * mm), QPointF(x1 * mm, j * mm))

    def _trace(self, p: QPainter, name: str, t0: float, t1: float, x_at: float, y0: float, beats=False) -> None:
        try:
            signal, label = self.record.lead(name)
        except Exception:
            return
        fs, mm, px_per_s = self.record.fs, self.px_per_mm, self.speed * self.px_per_mm
        a, b = int(t0 * fs), min(int(t1 * fs), len(signal))
        if b <= a:
            return
        baseline = float(np.median(signal[a:b]))
        if self._exposed is not None:  # draw only what is exposed (a 30-min record is metres of paper)
            a = max(a, int((t0 - x_at + (self._exposed.left() - 20) / px_per_s) * fs) - 1)
            b = min(b, int((t0 - x_at + (self._exposed.right() - 20) / px_per_s) * fs) + 2)
        if beats and self.result is not None:
            self._beats(p, t0, t1, x_at, y0)
        step = max(1, int(fs / (px_per_s * 2)))  # about two points per pixel
        if b - a >= 2:
            t = np.arange(a, b, step) / fs
            x = (20 + (x_at + t - t0) * px_per_s).tolist()  # Python floats: numpy scalars into Qt leak refs
            y = (y0 - (signal[a:b:step] - baseline) * self.gain * mm).tolist()
            p.setPen(QPen(QColor(20, 20, 20), 1.1))
            p.setBrush(Qt.BrushStyle.NoBrush)  # a trace is a line, never a filled shape
            p.drawPolyline(QPolygonF([QPointF(xi, yi) for xi, yi in zip(x, y)]))
        p.setFont(QFont("Sans", 9, QFont.Weight.Bold))
        p.drawText(QPointF(20 + x_at * self.speed * mm + 4, y0 - 10 * mm), label)
        # 1 mV calibration pulse at the row start
        if x_at == 0:
            p.setPen(QPen(QColor(20, 20, 20), 1.2))
            cal = QPolygonF([QPointF(4, y0), QPointF(8, y0), QPointF(8, y0 - 10 * mm), QPointF(14, y0 - 10 * mm),
                             QPointF(14, y0), QPointF(18, y0)])
            p.drawPolyline(cal)

    def _beats(self, p: QPainter, t0: float, t1: float, x_at: float, y0: float) -> None:
        r, mm = self.result, self.px_per_mm
        times = (np.asarray(r.beats) / r.fs).tolist()
        saliency = np.asarray(r.saliency, float).tolist()
        for k, tb in enumerate(times):
            if not t0 <= tb < t1:
                continue
            x = 20 + (x_at + tb - t0) * self.speed * mm
            s = saliency[k] if k < len(saliency) else 0.0
            p.fillRect(QRectF(x - 2 * mm, y0 - 13 * mm, 4 * mm, 26 * mm), QColor(255, 140, 0, int(110 * s)))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 90, 200))
            p.drawPolygon(QPolygonF([QPointF(x - 4, y0 - 14 * mm), QPointF(x + 4, y0 - 14 * mm), QPointF(x, y0 - 12 * mm)]))
        if len(times) > 1:  # RR intervals in ms between consecutive marks
            p.setPen(QColor(0, 70, 160))
            p.setFont(QFont("Sans", 7))
            for ta, tb in zip(times[:-1], times[1:]):
                if t0 <= ta and tb < t1:
                    x = 20 + (x_at + (ta + tb) / 2 - t0) * self.speed * mm
                    p.drawText(QPointF(x - 10, y0 - 14.5 * mm), f"{(tb - ta) * 1000:.0f}")

    def _header(self, p: QPainter) -> None:
        mm = self.px_per_mm
        p.setFont(QFont("Sans", 10, QFont.Weight.Bold))
        p.setPen(QColor(30, 30, 30))
        text = f"{self.speed:g} mm/s   {self.gain:g} mm/mV   {self.record.fs:g} Hz   {self.record.duration:.1f} s"
        if not self.twelve_lead() and self.rows > 1:
            text += f" in {self.rows} rows of {self.row_seconds:.0f} s"
        if self.result is not None:
            st = self.result.stats
            hr = f"   HR {st['heart_rate_bpm']:.0f} bpm" if st.get("heart_rate_bpm") else ""
            text += f"   rhythm: {self.result.label.upper()} (lead {self.result.lead}){hr}"
        p.drawText(QPointF(20, 5 * mm), text)


class EcgView(QScrollArea):
    """The paper inside a scroller (sideways only when the user zooms a 12-lead page past the window)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.paper = EcgPaper()
        self.setWidget(self.paper)
        self.setWidgetResizable(False)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

    def set_study(self, study) -> None:
        self.paper.fit_width = self.paper.view_width = self.viewport().width()
        self.paper.set_record(study.load())
        self.horizontalScrollBar().setValue(0)
        self.verticalScrollBar().setValue(0)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.paper.set_view_width(self.viewport().width())
