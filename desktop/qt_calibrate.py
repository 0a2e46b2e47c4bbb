"""Model > Calibrate for this site...: fit the chosen image model's threshold and temperature to
the clinic's own labelled studies (engine/calibrate.py), show before/after, install the result.

The new bundle is written into ``<data folder>/calibrations/`` and installed through
``catalog.install_bundle``, so the clinic's signing policy applies to it as to any bundle: it is
unsigned unless a signing key is given here.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLineEdit, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget)

from medexport.engine import MedError, open_bundle

from .paths import data_dir, installed_bundles_dir
from .qt_worker import RunWorker
from .state import Cancelled
from .trust import open_options

GOALS = ("Sensitivity target", "Youden (balance sensitivity and specificity)")


def _path_row(edit: QLineEdit, choose) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("Choose...")
    button.clicked.connect(choose)
    layout.addWidget(edit)
    layout.addWidget(button)
    return row


class CalibrateDialog(QDialog):
    """Choose a folder (studies + labels.csv) and a goal; runs on a worker thread."""

    def __init__(self, entry, parent=None, *, on_installed=None):
        super().__init__(parent)
        self.entry, self.on_installed = entry, on_installed
        self.worker, self.result, self.written, self.installed = None, None, None, None
        self.setWindowTitle(f"Calibrate {entry.title} for this site")
        self.resize(760, 560)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder of this site's studies with labels.csv (file,label), >= 20 per class")
        self.goal = QComboBox()
        self.goal.addItems(GOALS)
        self.target = QDoubleSpinBox()
        self.target.setRange(0.5, 0.995)
        self.target.setSingleStep(0.01)
        self.target.setDecimals(3)
        self.target.setValue(0.95)
        self.goal.currentIndexChanged.connect(lambda i: self.target.setEnabled(i == 0))
        self.key = QLineEdit()
        self.key.setPlaceholderText("optional: ECDSA private key (PEM); without it the new bundle is unsigned")
        form = QFormLayout()
        form.addRow("Studies", _path_row(self.folder, self._choose_folder))
        form.addRow("Goal", self.goal)
        form.addRow("Sensitivity", self.target)
        form.addRow("Sign with", _path_row(self.key, self._choose_key))
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.run_button = QPushButton("Calibrate")
        self.run_button.clicked.connect(self.run)
        self.install_button = QPushButton("Install the calibrated model")
        self.install_button.setEnabled(False)
        self.install_button.clicked.connect(self.install)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.install_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.output)
        layout.addWidget(buttons)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of labelled studies from this site")
        if folder:
            self.folder.setText(folder)

    def _choose_key(self) -> None:
        key, _ = QFileDialog.getOpenFileName(self, "Signing key", "", "PEM (*.pem)")
        if key:
            self.key.setText(key)

    def goal_value(self):
        from medexport.engine.calibrate import Goal

        return Goal(self.target.value() if self.goal.currentIndex() == 0 else None)

    def run(self) -> None:
        """Measure, fit and write the new bundle off the UI thread."""
        from medexport.engine.calibrate import calibrate, write_calibrated

        if self.worker is not None and self.worker.isRunning():
            return
        folder, key, goal = Path(self.folder.text().strip()), self.key.text().strip() or None, self.goal_value()
        out = data_dir() / "calibrations" / f"{self.entry.model_id}-{datetime.now():%Y%m%d-%H%M%S}"

        def job(cancel, progress):
            def step(i, n):
                if cancel.is_set():
                    raise Cancelled()
                progress(i, n)

            with open_bundle(self.entry.path, **open_options()) as model:
                result = calibrate(model, folder, goal, progress=step)
            return result, write_calibrated(self.entry.path, result, out, sign_key=key)

        self.worker = RunWorker(job, self)
        self.worker.done.connect(self._done)
        self.worker.failed.connect(lambda msg: self._show(f"Calibration refused:\n{msg}"))
        self.worker.cancelled.connect(lambda: self._show("Cancelled"))
        self.worker.progress.connect(lambda i, n: self.output.setPlainText(f"Running the model on study {i}/{n}..."))
        self.run_button.setEnabled(False)
        self.install_button.setEnabled(False)
        self.output.setPlainText(f"Goal: {goal.describe()}\nReading {folder}...")
        self.worker.start()

    def _show(self, text: str) -> None:
        self.run_button.setEnabled(True)
        self.output.setPlainText(text)

    def _done(self, out) -> None:
        self.result, self.written = out
        signed = "signed" if self.key.text().strip() else "UNSIGNED (this clinic's settings decide whether it may be installed)"
        self._show("\n".join(self.result.summary_lines() + ["", f"Written: {self.written} ({signed})",
                                                             "The 'after' figures are measured on the same studies "
                                                             "(optimistic); check on other studies before relying on it."]))
        self.install_button.setEnabled(True)

    def install(self) -> Path | None:
        from .catalog import install_bundle
        from .qt_dialogs import show_error

        try:
            self.installed = install_bundle(self.written, installed_bundles_dir())
        except MedError as exc:
            show_error(self, "Cannot install the calibrated model", str(exc))
            return None
        self.output.appendPlainText(f"\nInstalled as {self.installed.name}; choose it in the model panel.")
        self.install_button.setEnabled(False)
        if self.on_installed is not None:
            self.on_installed(self.installed)
        return self.installed

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
