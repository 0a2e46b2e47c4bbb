"""The right-hand panels: model choice and run controls, and the results."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSlider, QTableWidget, QTableWidgetItem, QVBoxLayout, QHeaderView, QWidget)

from .imaging import legend
from .result_table import result_table

AUTO_LEAD = "automatic (best signal quality)"


def auto_lead_text(result) -> str:
    """The lead box's first entry: which leads decide when the user picks none (after a run: the
    result's ``leads`` and ``lead_choice``; before: how they will be chosen)."""
    if result is None or not getattr(result, "leads", ()) or result.lead_choice == "requested":
        return AUTO_LEAD
    n = len(result.leads)
    return f"automatic: {', '.join(result.leads)} decide{'s' if n == 1 else ''} ({result.lead_choice})"



class ModelPanel(QGroupBox):
    modelChosen = Signal(object)
    leadChosen = Signal(str)
    runClicked = Signal()
    cancelClicked = Signal()
    cardClicked = Signal()
    pixelSizeChosen = Signal(float)  # 0: not given
    measureClicked = Signal()

    def __init__(self, parent=None):
        super().__init__("Model", parent)
        self.combo = QComboBox()
        self.combo.currentIndexChanged.connect(self._chosen)
        self.runtime = QLabel("-")
        self.runtime.setWordWrap(True)
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #b00020; background: #fff0f0; border: 1px solid #e0a0a0; padding: 4px;")
        self.run = QPushButton("Run  (Ctrl+R)")
        self.run.clicked.connect(self.runClicked)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self.cancelClicked)
        self.card = QPushButton("Model card")
        self.card.clicked.connect(self.cardClicked)
        self.lead = QComboBox()
        self.lead.setToolTip("ECG lead to analyse (automatic: the leads with the best signal quality decide)")
        self.lead.textActivated.connect(lambda text: self.leadChosen.emit("" if text == self.lead.itemText(0) else text))
        self.lead_label = QLabel("Lead")
        self.pixel_size = QDoubleSpinBox()  # pictures (PNG/JPEG) state no pixel size: the user gives it
        self.pixel_size.setRange(0.0, 10.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSingleStep(0.01)
        self.pixel_size.setSpecialValueText("not given")
        self.pixel_size.setSuffix(" mm/pixel")
        self.pixel_size.setToolTip("Pixel size of this picture, for lengths in mm (a DICOM states its own)")
        self.pixel_size.editingFinished.connect(lambda: self.pixelSizeChosen.emit(self.pixel_size.value()))
        self.measure = QPushButton("Draw a line...")
        self.measure.setToolTip("Draw a line of known length on the image (e.g. along the ruler) to set the pixel size")
        self.measure.clicked.connect(self.measureClicked)
        self.pixel_row = QWidget()
        pixel_layout = QHBoxLayout(self.pixel_row)
        pixel_layout.setContentsMargins(0, 0, 0, 0)
        pixel_layout.addWidget(QLabel("Pixel size"))
        pixel_layout.addWidget(self.pixel_size, 1)
        pixel_layout.addWidget(self.measure)
        self.pixel_row.setVisible(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        buttons = QHBoxLayout()
        for b in (self.run, self.cancel, self.card):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.combo)
        lead_row = QHBoxLayout()
        lead_row.addWidget(self.lead_label)
        lead_row.addWidget(self.lead, 1)
        layout.addLayout(lead_row)
        layout.addWidget(self.pixel_row)
        layout.addWidget(self.runtime)
        layout.addWidget(self.notice)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        self._entries = []

    def set_entries(self, entries, chosen) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        self._entries = list(entries)
        for e in self._entries:
            self.combo.addItem(e.title, e)
        if chosen in self._entries:
            self.combo.setCurrentIndex(self._entries.index(chosen))
        self.combo.blockSignals(False)
        self.run.setEnabled(bool(self._entries))
        if not self._entries:
            self.runtime.setText("No installed model fits this study.")

    def set_runtime(self, text: str, disclaimer: str) -> None:
        """What the chosen model runs on, and the stamp its results carry (none: a medical device)."""
        self.runtime.setText(text)
        self.notice.setText(f"<b>{disclaimer}</b>")
        self.notice.setVisible(bool(disclaimer))

    def set_leads(self, leads: list[str], current: str | None, result=None) -> None:
        """Show the lead choice for multi-lead ECGs only; the first entry says which leads decide."""
        show = len(leads) > 1
        self.lead.setVisible(show)
        self.lead_label.setVisible(show)
        self.lead.clear()
        self.lead.addItems([auto_lead_text(result), *leads] if show else [])
        if current in leads:
            self.lead.setCurrentText(current)

    def set_pixel_size(self, shown: bool, value: float | None) -> None:
        """Offer the pixel size for a picture the chosen model measures; ``value`` in mm or None."""
        self.pixel_row.setVisible(shown)
        self.pixel_size.blockSignals(True)
        self.pixel_size.setValue(value or 0.0)
        self.pixel_size.blockSignals(False)

    def busy(self, on: bool) -> None:
        self.run.setEnabled(not on and bool(self._entries))
        self.cancel.setEnabled(on)
        self.progress.setRange(0, 0 if on else 1)  # indeterminate while running

    def _chosen(self, index: int) -> None:
        if 0 <= index < len(self._entries):
            self.modelChosen.emit(self._entries[index])


class ResultPanel(QGroupBox):
    overlayToggled = Signal(bool)
    opacityChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__("Result", parent)
        self.banner = QLabel("")  # the result's warnings, above the answer, whenever there are any
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background: #fff3cd; color: #6b4b00; border: 1px solid #e0b84c; padding: 4px;")
        self.banner.setVisible(False)
        self.decision = QLabel("Not run yet")
        self.decision.setWordWrap(True)
        self.decision.setStyleSheet("font-size: 15px; font-weight: bold;")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["finding", "score", "threshold"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.overlay = QCheckBox("Show overlay (H)")
        self.overlay.setChecked(True)
        self.overlay.toggled.connect(self.overlayToggled)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100))
        self.legend = QLabel("")  # one coloured swatch per label the overlay draws
        self.legend.setVisible(False)
        self.legend_entries = []  # (label, RGB) shown in it
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setStyleSheet("color: #555;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.decision)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(self.overlay)
        row.addWidget(QLabel("opacity"))
        row.addWidget(self.opacity)
        layout.addLayout(row)
        layout.addWidget(self.legend)
        layout.addWidget(self.details)

    def show_result(self, result) -> None:
        self.banner.setText("\n".join(f"\u26a0 {w.message}" for w in result.warnings) if result is not None else "")
        self.banner.setToolTip(", ".join(w.code for w in result.warnings) if result is not None else "")
        self.banner.setVisible(result is not None and bool(result.warnings))
        if result is None:
            self.decision.setText("Not run yet")
            self.table.setRowCount(0)
            self.details.setText("")
            self.legend_entries = []
            self.legend.setVisible(False)
            return
        self.decision.setText(result.headline() + (f"\nModel's answer, not vouched for: {result.decision()}"
                                                   if result.not_assessed else ""))
        self.decision.setStyleSheet("font-size: 15px; font-weight: bold;"
                                    + (" color: #6b4b00;" if result.not_assessed else ""))
        overlay = result.overlay()
        self.overlay.setToolTip(overlay.note if overlay is not None else "This result draws nothing over the study")
        table = result_table(result)
        self.table.setHorizontalHeaderLabels(list(table.headers))
        self.table.setRowCount(len(table.rows))
        for i, (cells, hit) in enumerate(zip(table.rows, table.hits)):
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if hit:  # a flagged study's hits are not findings: grey, not red
                    item.setForeground(Qt.GlobalColor.darkGray if result.not_assessed else Qt.GlobalColor.darkRed)
                self.table.setItem(i, j, item)
        self.legend_entries = legend(overlay)
        self.legend.setText("&nbsp;&nbsp;".join(f'<span style="color: rgb{tuple(rgb)}; font-size: 16px;">&#9632;</span> '
                                                f"{label}" for label, rgb in self.legend_entries))
        self.legend.setVisible(bool(self.legend_entries))
        t = result.timings_ms
        lines = [f"{result.model_id} {result.model_version} on {result.backend} {result.precision}",
                 f"bundle {result.bundle_sha256[:16]}...", f"{t['total']:.0f} ms (inference {t['infer']:.1f} ms)"]
        lines += result.detail_lines()
        if overlay is not None:
            lines.append(overlay.note)
        self.details.setText("\n".join(lines))
