"""Model > Compare with...: pick a candidate bundle, run it beside the chosen model on the open
studies (a worker thread, with progress and cancel), list every study whose decision would change
with both scores and decisions, the agreement, and export the changes as CSV (desktop/compare.py)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from . import qt_dialogs
from .compare import compare, write_changes
from .paths import reports_dir
from .qt_worker import RunWorker

COLUMNS = (("file", "study"), ("current_decision", "current decision"), ("candidate_decision", "candidate decision"),
           ("current_scores", "current scores"), ("candidate_scores", "candidate scores"))


class CompareDialog(QDialog):
    def __init__(self, state, kind: str, parent=None):
        super().__init__(parent)
        self.state, self.kind = state, kind
        self.worker = self.comparison = None
        self.scripted = getattr(parent, "scripted", False)
        current = state.chosen.get(kind)
        self.setWindowTitle("Compare with a candidate bundle")
        self.resize(980, 560)
        self.current = QLabel(f"Current model: {current.title if current else 'none'} on the "
                              f"{sum(s.kind == kind for s in state.studies)} open {kind} studies")
        self.candidate = QComboBox()
        for b in state.models_for(kind):
            if current is None or b.path != current.path:
                self.candidate.addItem(f"{b.title} ({b.path})", str(b.path))
        browse = QPushButton("Other bundle...")
        browse.clicked.connect(self.browse)
        self.run, self.cancel, self.progress = qt_dialogs.run_controls(self, "Compare")
        self.summary = QLabel("Pick the candidate (the bundle that would replace the current one), then Compare.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title in COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.export = QPushButton("Export CSV...")
        self.export.setEnabled(False)
        self.export.clicked.connect(lambda: self.export_csv())
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Candidate"))
        pick.addWidget(self.candidate, 1)
        pick.addWidget(browse)
        buttons = QHBoxLayout()
        for w in (self.run, self.cancel, self.progress, self.export):
            buttons.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addWidget(self.current)
        layout.addLayout(pick)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("Studies whose decision would change"))
        layout.addWidget(self.table, 1)

    def set_candidate(self, path) -> None:
        """Choose a bundle folder or .zip as the candidate (also ones the viewer does not offer)."""
        path = str(path)
        index = self.candidate.findData(path)
        if index < 0:
            self.candidate.addItem(path, path)
            index = self.candidate.count() - 1
        self.candidate.setCurrentIndex(index)

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Candidate bundle folder")
        if folder:
            self.set_candidate(folder)

    def start(self) -> None:
        path = self.candidate.currentData()
        if not path:
            qt_dialogs.show_error(self, "No candidate", "Pick the candidate bundle first (Other bundle...).")
            return
        if self.worker is not None and self.worker.isRunning():
            return
        self.worker = RunWorker(lambda cancel, progress: compare(self.state, path, self.kind, cancel, progress), self)
        self.worker.done.connect(self.show_comparison)
        self.worker.failed.connect(lambda msg: (self._idle(), qt_dialogs.show_error(self, "Cannot compare", msg)))
        self.worker.cancelled.connect(lambda: (self._idle(), self.summary.setText("Cancelled: nothing compared.")))
        self.worker.progress.connect(self._progress)
        self.run.setEnabled(False)
        self.cancel.setEnabled(True)
        self.progress.setRange(0, 0)
        self.summary.setText("Running both bundles on the open studies...")
        self.worker.start()

    def _progress(self, i: int, n: int) -> None:
        self.progress.setRange(0, n)
        self.progress.setValue(i)

    def _idle(self) -> None:
        self.run.setEnabled(True)
        self.cancel.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def show_comparison(self, comparison) -> None:
        self._idle()
        self.comparison = comparison
        self.summary.setText("\n".join(comparison.summary_lines()))
        changes = comparison.changes
        self.table.setRowCount(len(changes))
        for i, row in enumerate(changes):
            for j, (key, _) in enumerate(COLUMNS):
                text = Path(row[key]).name if key == "file" else row[key]
                item = QTableWidgetItem(text)
                item.setToolTip(row[key] if key == "file" else
                                row[key.replace("decision", "warnings").replace("scores", "warnings")] or text)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.export.setEnabled(True)

    def export_csv(self, path: str | None = None) -> Path | None:
        """The changed studies as ``medexport shadow``'s changes.csv (a new file, never over one)."""
        if self.comparison is None:
            return None
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export the changes", str(reports_dir() / "changes.csv"),
                                                  "CSV (*.csv)")
        if not path:
            return None
        try:
            return write_changes(self.comparison, path)
        except OSError as exc:
            qt_dialogs.show_error(self, "Cannot write the CSV", str(exc))
            return None

    def done(self, code: int) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait(10000)
        super().done(code)
