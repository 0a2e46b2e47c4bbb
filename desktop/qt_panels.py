"""The right-hand panels: model choice and run controls, and the results."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QSlider, QTableWidget, QTableWidgetItem, QVBoxLayout, QHeaderView)

from medexport.engine.results import DISCLAIMER



class ModelPanel(QGroupBox):
    modelChosen = Signal(object)
    leadChosen = Signal(str)
    runClicked = Signal()
    cancelClicked = Signal()
    cardClicked = Signal()

    def __init__(self, parent=None):
        super().__init__("Model", parent)
        self.combo = QComboBox()
        self.combo.currentIndexChanged.connect(self._chosen)
        self.runtime = QLabel("-")
        self.runtime.setWordWrap(True)
        self.notice = QLabel(f"<b>{DISCLAIMER}</b>")
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
        self.lead.setToolTip("ECG lead to analyse (default: the model's, lead II)")
        self.lead.textActivated.connect(self.leadChosen)
        self.lead_label = QLabel("Lead")
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

    def set_runtime(self, text: str, medical_device: bool) -> None:
        self.runtime.setText(text)
        self.notice.setVisible(not medical_device)

    def set_leads(self, leads: list[str], current: str | None) -> None:
        """Show the lead choice for multi-lead ECGs only."""
        show = len(leads) > 1
        self.lead.setVisible(show)
        self.lead_label.setVisible(show)
        self.lead.clear()
        self.lead.addItems(["default (II)", *leads] if show else [])
        if current in leads:
            self.lead.setCurrentText(current)

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
        layout.addWidget(self.details)

    def show_result(self, result) -> None:
        self.banner.setText("\n".join(f"\u26a0 {w.message}" for w in result.warnings) if result is not None else "")
        self.banner.setToolTip(", ".join(w.code for w in result.warnings) if result is not None else "")
        self.banner.setVisible(result is not None and bool(result.warnings))
        if result is None:
            self.decision.setText("Not run yet")
            self.table.setRowCount(0)
            self.details.setText("")
            return
        self.decision.setText(result.headline() + (f"\nModel's answer, not vouched for: {result.decision()}"
                                                   if result.not_assessed else ""))
        self.decision.setStyleSheet("font-size: 15px; font-weight: bold;"
                                    + (" color: #6b4b00;" if result.not_assessed else ""))
        overlay = result.overlay()
        self.overlay.setToolTip(overlay.note if overlay is not None else "This result draws nothing over the study")
        rows = result.score_rows()
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            cells = [row.label, f"{row.score:.3f}", "-" if row.threshold is None else f"{row.threshold:.3f}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if row.hit:  # a flagged study's hits are not findings: grey, not red
                    item.setForeground(Qt.GlobalColor.darkGray if result.not_assessed else Qt.GlobalColor.darkRed)
                self.table.setItem(i, j, item)
        t = result.timings_ms
        lines = [f"{result.model_id} {result.model_version} on {result.backend} {result.precision}",
                 f"bundle {result.bundle_sha256[:16]}...", f"{t['total']:.0f} ms (inference {t['infer']:.1f} ms)"]
        lines += result.detail_lines()
        if overlay is not None:
            lines.append(overlay.note)
        self.details.setText("\n".join(lines))
