"""Image view: window/level (left drag), zoom (wheel), pan (middle or Shift+drag), invert,
overlays (heatmap, mask) and corner text. Pixels come from desktop.imaging."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from .imaging import IMAGE_PAINTERS, display_values, window_to_uint8


FORMATS = {1: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888, 4: QImage.Format.Format_RGBA8888}


def to_qimage(arr: np.ndarray) -> QImage:
    """uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA as a QImage that owns its pixels."""
    arr = np.ascontiguousarray(arr)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return QImage(arr.data, arr.shape[1], arr.shape[0], arr.strides[0], FORMATS[channels]).copy()


def render_study(study, result, window: tuple | None = None, opacity: float = 0.5) -> QImage:
    """The study as a document shows it: its pixels at their own resolution, windowed (``window``:
    level, width, invert; default: the study's own window), with the result's overlay painted on."""
    values, default, _ = display_values(study)
    level, width, invert = window if window is not None else (*default, False)
    picture = to_qimage(window_to_uint8(values, level, width, invert)).convertToFormat(QImage.Format.Format_RGB32)
    overlay = result.overlay() if result is not None else None
    if overlay is not None and overlay.kind in IMAGE_PAINTERS:
        p = QPainter(picture)
        p.drawImage(0, 0, to_qimage(IMAGE_PAINTERS[overlay.kind](overlay.data, opacity)))
        p.end()
    return picture


class ImageView(QWidget):
    windowChanged = Signal()
    lineMeasured = Signal(float)  # a line drawn in measuring mode: its length in image pixels

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(320, 320)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.values = None
        self.unit = ""
        self.default_window = (0.5, 1.0)
        self.level, self.width_ = 0.5, 1.0
        self.invert = False
        self.zoom, self.pan = 1.0, QPointF(0, 0)
        self.overlay_spec = None  # engine.results.Overlay of the shown result
        self.show_overlay, self.opacity = True, 0.5
        self.corners = {}
        self._base = self._overlay = None
        self._drag = None
        self.measuring = False  # True: a left drag draws a line of known length (see start_measuring)
        self.line = None  # (start, end) in image pixels, while and after it is drawn

    # -- content ---------------------------------------------------------------------------------
    def set_study(self, study) -> None:
        self.line = None
        self.values, self.default_window, self.unit = display_values(study)
        self.level, self.width_ = self.default_window
        self.overlay_spec = None
        self._overlay = None
        self.fit()
        self._render()

    def start_measuring(self) -> None:
        """The next left drag draws a line on the image; its length in pixels is emitted on release."""
        self.measuring, self.line = True, None
        self.setCursor(Qt.CursorShape.CrossCursor)

    def to_image(self, pos: QPointF) -> QPointF:
        """A widget position in image pixel coordinates."""
        r = self.image_rect()
        return QPointF((pos.x() - r.x()) / self.zoom, (pos.y() - r.y()) / self.zoom)

    def set_result_overlay(self, overlay) -> None:
        """What the shown result draws (an ``engine.results.Overlay``, or None), painted by
        ``imaging.IMAGE_PAINTERS`` for its kind."""
        self.overlay_spec = overlay if overlay is not None and overlay.kind in IMAGE_PAINTERS else None
        self._overlay = None
        self.update()

    def set_overlay(self, visible: bool | None = None, opacity: float | None = None) -> None:
        if visible is not None:
            self.show_overlay = visible
        if opacity is not None:
            self.opacity = opacity
            self._overlay = None
        self.update()

    # -- window / zoom ----------------------------------------------------------------------------
    def set_window(self, level: float, width: float) -> None:
        self.level, self.width_ = level, max(width, 1e-6)
        self._render()
        self.windowChanged.emit()

    def reset(self) -> None:
        self.invert = False
        self.set_window(*self.default_window)
        self.fit()

    def toggle_invert(self) -> None:
        self.invert = not self.invert
        self._render()

    def fit(self) -> None:
        if self.values is None:
            return
        h, w = self.values.shape[:2]
        self.zoom = min(self.width() / w, self.height() / h) if self.width() > 10 else 1.0
        self.pan = QPointF(0, 0)
        self.update()

    def _render(self) -> None:
        if self.values is not None:
            self._base = to_qimage(window_to_uint8(self.values, self.level, self.width_, self.invert))
        self.update()

    def _overlay_image(self) -> QImage | None:
        if self._overlay is None:
            if self.overlay_spec is not None:
                paint = IMAGE_PAINTERS[self.overlay_spec.kind]
                self._overlay = to_qimage(paint(self.overlay_spec.data, self.opacity))
        return self._overlay

    def image_rect(self) -> QRectF:
        h, w = self.values.shape[:2]
        cw, ch = w * self.zoom, h * self.zoom
        return QRectF((self.width() - cw) / 2 + self.pan.x(), (self.height() - ch) / 2 + self.pan.y(), cw, ch)

    # -- painting ---------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self._base is None:
            p.setPen(QColor(150, 150, 150))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Open a study: File > Open, or drop files here")
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        target = self.image_rect()
        p.drawImage(target, self._base)
        overlay = self._overlay_image() if self.show_overlay else None
        if overlay is not None:
            p.drawImage(target, overlay)
        if self.line is not None:
            a, b = (QPointF(target.x() + q.x() * self.zoom, target.y() + q.y() * self.zoom) for q in self.line)
            p.setPen(QPen(QColor(0, 255, 120), 2))
            p.drawLine(a, b)
        self._corners(p)

    def _corners(self, p: QPainter) -> None:
        p.setFont(QFont("Sans", 9))
        wl = f"W {self.width_:.0f} L {self.level:.0f}{' ' + self.unit if self.unit else ''}" \
            if self.width_ > 2 else f"W {self.width_:.2f} L {self.level:.2f}"
        text = dict(self.corners)
        text["bottom_left"] = "\n".join(filter(None, [text.get("bottom_left", ""), f"{wl}  zoom {self.zoom:.2f}x"
                                                      + ("  inverted" if self.invert else "")]))
        m = 8
        r = self.rect().adjusted(m, m, -m, -m)
        flags = {"top_left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                 "top_right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
                 "bottom_left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom,
                 "bottom_right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom}
        for key, flag in flags.items():
            if text.get(key):  # a dark outline first: readable over bright lungs and white bone too
                p.setPen(QColor(0, 0, 0))
                for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 1), (1, 0), (0, -1), (-1, 0)):
                    p.drawText(r.translated(dx, dy), flag, text[key])
                p.setPen(QColor(255, 240, 120))
                p.drawText(r, flag, text[key])

    # -- interaction ------------------------------------------------------------------------------
    def mousePressEvent(self, e) -> None:
        if self.measuring and self.values is not None and e.button() == Qt.MouseButton.LeftButton:
            start = self.to_image(e.position())
            self.line, self._drag = (start, start), ("line",)
            return
        pan = e.button() == Qt.MouseButton.MiddleButton or e.modifiers() & Qt.KeyboardModifier.ShiftModifier
        self._drag = ("pan" if pan else "wl", e.position(), self.level, self.width_, QPointF(self.pan))

    def mouseMoveEvent(self, e) -> None:
        if not self._drag or self.values is None:
            return
        if self._drag[0] == "line":
            self.line = (self.line[0], self.to_image(e.position()))
            self.update()
            return
        mode, start, level, width, pan = self._drag
        d = e.position() - start
        if mode == "pan":
            self.pan = pan + d
            self.update()
        else:  # horizontal: width, vertical: level; scaled to the value range
            span = float(self.values.max() - self.values.min()) or 1.0
            self.set_window(level - d.y() * span / 500.0, max(width + d.x() * span / 500.0, span / 1000.0))

    def mouseReleaseEvent(self, e) -> None:
        if self._drag and self._drag[0] == "line":
            self.measuring = False
            self.unsetCursor()
            a, b = self.line
            length = float(np.hypot(b.x() - a.x(), b.y() - a.y()))
            if length >= 2:  # a click is not a line
                self.lineMeasured.emit(length)
        self._drag = None

    def mouseDoubleClickEvent(self, e) -> None:
        self.fit()

    def wheelEvent(self, e) -> None:
        if self.values is None:
            return
        factor = 1.15 if e.angleDelta().y() > 0 else 1 / 1.15
        before = self.image_rect()
        pos = e.position()
        rel = QPointF((pos.x() - before.x()) / before.width(), (pos.y() - before.y()) / before.height())
        self.zoom = float(np.clip(self.zoom * factor, 0.05, 40))
        after = self.image_rect()
        self.pan += QPointF(pos.x() - (after.x() + rel.x() * after.width()), pos.y() - (after.y() + rel.y() * after.height()))
        self.update()

    def resizeEvent(self, e) -> None:
        if self.values is not None and self.pan == QPointF(0, 0):
            self.fit()
