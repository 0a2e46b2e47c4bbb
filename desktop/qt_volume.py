"""A volume in three linked orthogonal views (axial, coronal, sagittal) and a table of label volumes.

Left click or drag: move the crosshair (the other two views follow); wheel: step through slices;
right drag: window / level. Planes keep their true aspect from the voxel spacing. The maths
(reslicing, aspect, crosshair, colours) is Qt-free in desktop/volume_view.py.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (QGridLayout, QLabel, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from .imaging import window_to_uint8
from .qt_image import to_qimage
from .volume_view import (AXIS, EDGES, VIEWS, Crosshair, Reslicer, default_window, label_colour, label_lut, label_volumes,
                          looks_like_ct, pixel_mm, plane, plane_shape)

LINE_COLOURS = {"axial": QColor(230, 70, 70), "coronal": QColor(80, 200, 90), "sagittal": QColor(240, 210, 60)}
LABELS_OVERLAY = "labels"  # results.Overlay kind of a volume result: data = (labels on the voxel grid, {label: name})


def study_windows(study, zyx: np.ndarray) -> tuple[list, tuple[float, float]]:
    """The presets that fit a volume (desktop/imaging.window_presets; the CT ones for a NIfTI whose
    values look like HU) and its default (level, width): the file's own window, else the voxels'
    0.5-99.5th percentiles."""
    from .imaging import CT_GUESSED, window_presets

    ct = looks_like_ct(zyx) if not study.header.get("Modality") else False  # NIfTI: no (0008,0060)
    presets = window_presets(study.header, looks_like_ct=ct)
    own = [(level, width) for name, level, width in presets if not name.endswith(("(CT)", f"({CT_GUESSED})"))]
    return presets, own[0] if own else default_window(zyx)


class SliceView(QWidget):
    """One plane of the volume, drawn at its true aspect, with the crosshair and orientation letters."""

    picked = Signal(str, float, float)  # view, row, column in the plane's pixels
    stepped = Signal(str, int)  # view, slices to move
    windowDragged = Signal(float, float)  # dx, dy in widget pixels since the press

    def __init__(self, view: str, parent=None):
        super().__init__(parent)
        self.view = view
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.base = self.overlay = None
        self.pixel = (1.0, 1.0)  # (height, width) mm of a pixel
        self.cross = (0, 0)
        self.text = ""
        self._press = None

    def set_plane(self, base, overlay, pixel: tuple, cross: tuple, text: str) -> None:
        self.base, self.overlay, self.pixel, self.cross, self.text = base, overlay, pixel, cross, text
        self.update()

    def image_rect(self) -> QRectF:
        """Where the plane is drawn: as large as fits, rows and columns scaled by their spacing."""
        rows, cols = self.base.height(), self.base.width()
        height_mm, width_mm = rows * self.pixel[0], cols * self.pixel[1]
        scale = min(self.width() / width_mm, self.height() / height_mm)
        w, h = width_mm * scale, height_mm * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_plane(self, pos: QPointF) -> tuple[float, float]:
        r = self.image_rect()
        return ((pos.y() - r.y()) * self.base.height() / r.height(), (pos.x() - r.x()) * self.base.width() / r.width())

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self.base is None:
            return
        r = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(r, self.base)
        if self.overlay is not None:  # labels without smoothing: each colour stays its label's
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(r, self.overlay)
        sy, sx = r.height() / self.base.height(), r.width() / self.base.width()
        row, col = self.cross
        others = [v for v in VIEWS if v != self.view]  # the horizontal line is the first other plane
        p.setPen(QPen(LINE_COLOURS[others[0]], 1))
        p.drawLine(QPointF(r.left(), r.top() + (row + 0.5) * sy), QPointF(r.right(), r.top() + (row + 0.5) * sy))
        p.setPen(QPen(LINE_COLOURS[others[1]], 1))
        p.drawLine(QPointF(r.left() + (col + 0.5) * sx, r.top()), QPointF(r.left() + (col + 0.5) * sx, r.bottom()))
        p.setFont(QFont("Sans", 9))
        p.setPen(QColor(255, 240, 120))
        top, bottom, left, right = EDGES[self.view]
        box = self.rect().adjusted(6, 6, -6, -6)
        p.drawText(box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, top)
        p.drawText(box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, bottom)
        p.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, left)
        p.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, right)
        p.setPen(LINE_COLOURS[self.view])
        p.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, self.text)

    def mousePressEvent(self, e) -> None:
        if self.base is None:
            return
        if e.button() == Qt.MouseButton.RightButton:
            self._press = e.position()
            self.windowDragged.emit(0.0, 0.0)  # the drag starts from the window shown now
        else:
            self.picked.emit(self.view, *self.to_plane(e.position()))

    def mouseMoveEvent(self, e) -> None:
        if self.base is None:
            return
        if self._press is not None:
            d = e.position() - self._press
            self.windowDragged.emit(d.x(), d.y())
        elif e.buttons() & Qt.MouseButton.LeftButton:
            self.picked.emit(self.view, *self.to_plane(e.position()))

    def mouseReleaseEvent(self, e) -> None:
        self._press = None

    def wheelEvent(self, e) -> None:
        notches = e.angleDelta().y() // 120 or (1 if e.angleDelta().y() > 0 else -1 if e.angleDelta().y() < 0 else 0)
        if notches and self.base is not None:
            self.stepped.emit(self.view, int(notches))


class VolumeView(QWidget):
    """Axial, coronal and sagittal views linked by one crosshair, one window, and the label volumes."""

    windowChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.views = {v: SliceView(v) for v in VIEWS}
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["label", "voxels", "volume (mL)"])
        self.table.verticalHeader().hide()
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        side = QWidget()
        col = QVBoxLayout(side)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.caption)
        col.addWidget(self.table)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for (row, column), v in zip(((0, 0), (0, 1), (1, 0)), VIEWS):
            grid.addWidget(self.views[v], row, column)
            self.views[v].picked.connect(self.pick)
            self.views[v].stepped.connect(self.step)
            self.views[v].windowDragged.connect(self._drag_window)
        grid.addWidget(side, 1, 1)
        for i in (0, 1):  # four equal cells, whatever the table holds
            grid.setRowStretch(i, 1)
            grid.setColumnStretch(i, 1)
        side.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.study = self.zyx = self.reslicer = self.cursor = None
        self.labels = self.names = None
        self.presets = []  # (name, level, width) that fit the study (desktop/imaging.window_presets)
        self.default_window = (0.0, 1.0)
        self.level, self.width_ = self.default_window
        self.show_overlay, self.opacity = True, 0.5
        self._drag_from = None

    # -- content ---------------------------------------------------------------------------------
    def set_study(self, study) -> None:
        """Show ``study`` (kind "volume"): its window from the file ((0028,1050/1051), NIfTI cal_min /
        cal_max), else over the voxels' 0.5-99.5th percentiles; the crosshair at the centre."""
        volume = study.load()
        self.study = study
        self.reslicer = Reslicer(volume.shape, volume.affine, volume.spacing)
        self.zyx = self.reslicer.apply(volume.voxels)
        self.cursor = Crosshair(self.zyx.shape)
        self.presets, self.default_window = study_windows(study, self.zyx)
        self.level, self.width_ = self.default_window
        self.set_labels(None)

    def set_result_overlay(self, overlay) -> None:
        """A volume result's overlay (kind "labels": labels on the voxel grid and their names), or None."""
        if overlay is not None and overlay.kind == LABELS_OVERLAY:
            self.set_labels(*overlay.data)
        else:
            self.set_labels(None)

    def set_labels(self, labels: np.ndarray | None, names: dict | None = None) -> None:
        """Labels (integers on the volume's voxel grid; 0 background) drawn in every view, with their
        volumes in the table; None clears them."""
        self.labels = None if labels is None else self.reslicer.apply(np.asarray(labels))
        self.names = dict(names or {})
        self._lut = None if labels is None else label_lut(int(self.labels.max()), self.opacity)
        self._fill_table(labels)
        self.render()

    def set_overlay(self, visible: bool | None = None, opacity: float | None = None) -> None:
        if visible is not None:
            self.show_overlay = visible
        if opacity is not None:
            self.opacity = opacity
            if self.labels is not None:
                self._lut = label_lut(int(self.labels.max()), opacity)
        self.render()

    def _fill_table(self, labels) -> None:
        rows = [] if labels is None else label_volumes(labels, self.study.load().voxel_volume_ml)
        total = (sum(n for _, n, _ in rows), sum(ml for _, _, ml in rows))
        self.table.setRowCount(len(rows) + (1 if rows else 0))
        for i, (label, n, ml) in enumerate(rows):
            item = QTableWidgetItem(self.names.get(label, f"label {label}"))
            item.setBackground(QColor(*label_colour(label)))
            for j, cell in enumerate((item, QTableWidgetItem(f"{n:,}"), QTableWidgetItem(f"{ml:.2f}"))):
                self.table.setItem(i, j, cell)
        if rows:
            for j, text in enumerate(("total", f"{total[0]:,}", f"{total[1]:.2f}")):
                self.table.setItem(len(rows), j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        from .imaging import page_header

        shape, spacing = self.zyx.shape, self.reslicer.spacing
        modality = " ".join(filter(None, [self.study.header.get("Modality"), self.study.series]))
        self.caption.setText(f"{page_header(self.study)}\n{modality}\n"
                             f"{shape[2]} x {shape[1]} x {shape[0]} voxels (x, y, z) of "
                             f"{spacing[2]:.3g} x {spacing[1]:.3g} x {spacing[0]:.3g} mm"
                             + ("" if rows else "\nNo labels: run a volume model, or File > Open label map"))

    # -- window, crosshair, slices -----------------------------------------------------------------
    def set_window(self, level: float, width: float) -> None:
        self.level, self.width_ = float(level), max(float(width), 1e-6)
        self.render()
        self.windowChanged.emit()

    def _drag_window(self, dx: float, dy: float) -> None:
        if dx == 0 and dy == 0:
            self._drag_from = (self.level, self.width_)
            return
        level, width = self._drag_from or (self.level, self.width_)
        span = self.default_window[1] * 2
        self.set_window(level - dy * span / 500.0, max(width + dx * span / 500.0, span / 1000.0))

    def pick(self, view: str, row: float, col: float) -> None:
        """A click in ``view``: the crosshair moves there, and the other two views to its slices."""
        self.cursor.pick(view, row, col)
        self.render()

    def step(self, view: str, delta: int) -> None:
        self.cursor.step(view, delta)
        self.render()

    def index(self, view: str) -> int:
        return self.cursor.index(view)

    def plane_values(self, view: str) -> np.ndarray:
        return plane(self.zyx, view, self.cursor.index(view))

    def render(self) -> None:
        if self.zyx is None:
            return
        for v, widget in self.views.items():
            k = self.cursor.index(v)
            base = to_qimage(window_to_uint8(plane(self.zyx, v, k), self.level, self.width_))
            overlay = None
            if self.labels is not None and self.show_overlay:
                overlay = to_qimage(self._lut[plane(self.labels, v, k)])
            text = f"{v} {k + 1}/{self.zyx.shape[AXIS[v]]}"
            widget.set_plane(base, overlay, pixel_mm(self.reslicer.spacing, v), self.cursor.in_plane(v),
                             text + f"\nW {self.width_:.0f} L {self.level:.0f}")

    def shape_of(self, view: str) -> tuple[int, int]:
        """(rows, columns) of ``view``'s planes."""
        return plane_shape(self.zyx.shape, view)

