"""Help > Commissioning report...: which bundles have a current, passing report; commission the ticked
ones here (``medexport commission`` in its own process, on a worker thread, with progress and
cancel: desktop/commission_run.py), the verdict and every check, the PDF and JSON in a folder the
user picks. With ``require_commissioning=true`` a bundle without a report is not offered, and its
status here says why."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from . import qt_dialogs
from .catalog import bundle_paths, default_folders
from .commission_run import bundle_status, read_report, report_rows, run_commission, unavailable
from .paths import data_dir
from .qt_worker import RunWorker
from .trust import commissioning_folder

PASS, FAIL = QColor(0, 120, 40), QColor(170, 0, 20)


class CommissionDialog(QDialog):
    def __init__(self, state, parent=None, on_written=None):
        super().__init__(parent)
        self.state, self.on_written = state, on_written
        self.worker, self.report, self.written = None, None, None
        self.scripted = getattr(parent, "scripted", False)
        self.required = commissioning_folder()  # None: not required
        self.paths = bundle_paths(default_folders(state.bundle_folders))
        self.setWindowTitle("Commissioning report")
        self.resize(1000, 640)
        required = (f"Required: this viewer runs only bundles with a current, passing report in {self.required} "
                    "(require_commissioning=true in viewer.ini)." if self.required is not None else
                    "Not required by this viewer's settings (require_commissioning=false): the reports are for the "
                    "clinic's QA folder.")
        self.policy = QLabel(required)
        self.policy.setWordWrap(True)
        self.bundles = QTableWidget(0, 2)
        self.bundles.setHorizontalHeaderLabels(["bundle", "commissioning here"])
        self.bundles.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.bundles.horizontalHeader().setStretchLastSection(True)
        self.bundles.verticalHeader().hide()
        self.bundles.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.bundles.setWordWrap(True)
        self.folder = QLineEdit(str(self.required or data_dir() / "commissioning"))
        self.folder.editingFinished.connect(self.refresh)
        browse = QPushButton("Folder...")
        browse.clicked.connect(self.browse)
        self.run, self.cancel, self.progress = qt_dialogs.run_controls(self, "Commission the ticked bundles")
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.checks = QTableWidget(0, 4)
        self.checks.setHorizontalHeaderLabels(["bundle", "check", "result", "detail"])
        self.checks.horizontalHeader().setStretchLastSection(True)
        self.checks.verticalHeader().hide()
        self.checks.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        where = QHBoxLayout()
        where.addWidget(QLabel("Reports folder"))
        where.addWidget(self.folder, 1)
        where.addWidget(browse)
        buttons = QHBoxLayout()
        for w in (self.run, self.cancel, self.progress):
            buttons.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addWidget(self.policy)
        layout.addWidget(self.bundles, 1)
        layout.addLayout(where)
        layout.addLayout(buttons)
        layout.addWidget(self.verdict)
        layout.addWidget(self.checks, 2)
        why = unavailable()
        if why:
            self.run.setEnabled(False)
            self.verdict.setText(f"Commissioning cannot run from here: {why}. Run 'medexport commission BUNDLE... -o "
                                 f"{self.folder.text()}' on this machine; this window then shows each bundle's standing.")
        self.refresh()

    # -- the bundles and their standing ----------------------------------------------------------------
    def refresh(self) -> None:
        """Each bundle's standing against the reports in the chosen folder; ticks kept where possible."""
        ticked = {str(p) for p in self.ticked()} if self.bundles.rowCount() else None
        self.status = bundle_status(self.paths, Path(self.folder.text()))
        self.bundles.setRowCount(len(self.status))
        for i, s in enumerate(self.status):
            name = QTableWidgetItem(s.title)
            name.setToolTip(str(s.path))
            name.setFlags(name.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            tick = str(s.path) in ticked if ticked is not None else not s.commissioned
            name.setCheckState(Qt.CheckState.Checked if tick else Qt.CheckState.Unchecked)
            offered = "" if s.commissioned or self.required is None else "Not offered: "
            status = QTableWidgetItem(offered + s.status)
            status.setForeground(PASS if s.commissioned else FAIL)
            self.bundles.setItem(i, 0, name)
            self.bundles.setItem(i, 1, status)
        self.bundles.resizeRowsToContents()

    def ticked(self) -> list[Path]:
        return [s.path for i, s in enumerate(getattr(self, "status", []))
                if self.bundles.item(i, 0) is not None and self.bundles.item(i, 0).checkState() == Qt.CheckState.Checked]

    def set_ticked(self, paths) -> None:
        wanted = {str(Path(p)) for p in paths}
        for i, s in enumerate(self.status):
            self.bundles.item(i, 0).setCheckState(Qt.CheckState.Checked if str(s.path) in wanted else Qt.CheckState.Unchecked)

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the commissioning reports", self.folder.text())
        if folder:
            self.folder.setText(folder)
            self.refresh()

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            return
        bundles, out = self.ticked(), Path(self.folder.text())
        if not bundles:
            qt_dialogs.show_error(self, "No bundle ticked", "Tick the bundles to commission on this machine.")
            return
        self.worker = RunWorker(lambda cancel, progress: run_commission(bundles, out, cancel, progress), self)
        self.worker.done.connect(self.show_report)
        self.worker.failed.connect(lambda msg: (self._idle(), self.verdict.setText(f"Not commissioned: {msg}"),
                                                qt_dialogs.show_error(self, "Commissioning did not finish", msg)))
        self.worker.cancelled.connect(lambda: (self._idle(), self.verdict.setText("Cancelled: no report was written.")))
        self.worker.progress.connect(lambda i, n: (self.progress.setRange(0, n), self.progress.setValue(i - 1),
                                                   self.verdict.setText(f"Commissioning bundle {i} of {n} on this "
                                                                        "machine: golden replay, threads, speed...")))
        self.run.setEnabled(False)
        self.cancel.setEnabled(True)
        self.progress.setRange(0, 0)
        self.verdict.setText(f"Commissioning {len(bundles)} bundle(s) on this machine...")
        self.worker.start()

    def _idle(self) -> None:
        self.run.setEnabled(unavailable() is None)
        self.cancel.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def show_report(self, json_path) -> None:
        self._idle()
        self.written = Path(json_path)
        self.report = read_report(json_path)
        r = self.report
        pdf = self.written.parent / r["pdf"]["file"]
        lines = [f"<b style='color: {'#007828' if r['verdict'] == 'pass' else '#aa0014'}; font-size: 16px;'>"
                 f"Verdict: {r['verdict'].upper()}</b> in {r['seconds']} s"]
        lines += [f"{b.get('model_id', Path(b['path']).name)} {b.get('version', '')}: {b['verdict'].upper()}"
                  for b in r["bundles"]]
        if r.get("changes"):
            lines.append("Changed since the previous report: " + "; ".join(r["changes"]))
        lines.append(f"Written: {pdf} and {self.written}")
        if self.required is not None and self.written.parent.resolve() != self.required.resolve():
            lines.append(f"This viewer reads reports from {self.required} only: copy both files there to use them.")
        self.verdict.setText("<br>".join(lines))
        rows = report_rows(r)
        self.checks.setRowCount(len(rows))
        for i, (bundle, check, passed, detail) in enumerate(rows):
            for j, text in enumerate((bundle, check, "pass" if passed else "FAIL", detail)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if j == 2:
                    item.setForeground(PASS if passed else FAIL)
                self.checks.setItem(i, j, item)
        self.checks.resizeColumnsToContents()
        self.refresh()
        if self.on_written is not None:
            self.on_written(self.written)

    def done(self, code: int) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait(15000)
        super().done(code)
