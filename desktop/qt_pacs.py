"""The PACS panel: find studies on a node, retrieve and open them, send the results back (SR, SEG, PDF).

Network work runs on a :class:`~.qt_worker.RunWorker` with progress and cancel; an error is a
message in the panel, never a frozen window. Nodes come from the settings file the CLI and the
listener share (``medexport pacs add``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from medexport.engine.errors import MedError

from .qt_worker import RunWorker

COLUMNS = [("Patient", "PatientName"), ("Patient ID", "PatientID"), ("Date", "StudyDate"),
           ("Modality", "ModalitiesInStudy"), ("Description", "StudyDescription"),
           ("Images", "NumberOfStudyRelatedInstances")]


class PacsPanel(QWidget):
    """``openPaths`` asks the window to open retrieved files; ``outgoing(node)`` gives the objects to send."""

    openPaths = Signal(list)

    def __init__(self, outgoing=None, parent=None):
        super().__init__(parent)
        self.outgoing = outgoing  # (node) -> the current result as SR/SEG/PDF/overlay datasets; raises MedError
        self.worker = None
        self.rows: list[dict] = []
        self.node = QComboBox()
        self.patient_id, self.patient_name = QLineEdit(), QLineEdit()
        self.date_from, self.date_to, self.modality = QLineEdit(), QLineEdit(), QLineEdit()
        self.patient_name.setPlaceholderText("DOE^* (wildcards)")
        self.date_from.setPlaceholderText("YYYYMMDD")
        self.date_to.setPlaceholderText("YYYYMMDD")
        self.modality.setPlaceholderText("CR, DX, ECG...")
        form = QGridLayout()  # two rows, so the image keeps its room
        for i, (label, widget) in enumerate([("PACS node", self.node), ("Patient ID", self.patient_id),
                                             ("Patient name", self.patient_name), ("Study date from", self.date_from),
                                             ("to", self.date_to), ("Modality", self.modality)]):
            form.addWidget(QLabel(label), i // 3, 2 * (i % 3))
            form.addWidget(widget, i // 3, 2 * (i % 3) + 1)
        self.find_button = QPushButton("Find")
        self.get_button = QPushButton("Retrieve and open")
        self.send_button = QPushButton("Send result to PACS")
        self.cancel_button = QPushButton("Cancel")
        self.find_button.clicked.connect(self.find)
        self.get_button.clicked.connect(self.retrieve)
        self.send_button.clicked.connect(self.send)
        self.cancel_button.clicked.connect(self.cancel)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c for c, _ in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(self.retrieve)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        for b in (self.find_button, self.get_button, self.send_button, self.cancel_button):
            buttons.addWidget(b)
        col = QVBoxLayout(self)
        col.addLayout(form)
        col.addLayout(buttons)
        col.addWidget(self.table, 1)
        col.addWidget(self.progress)
        col.addWidget(self.status)
        self.reload_nodes()
        self._busy(False)

    # -- nodes ---------------------------------------------------------------------------------
    def reload_nodes(self) -> None:
        from medexport.engine.pacs.nodes import load_nodes, nodes_path

        self.node.clear()
        try:
            nodes = load_nodes()
        except MedError as exc:
            self._message(str(exc), error=True)
            return
        for node in nodes.values():
            self.node.addItem(node.describe(), node)
        if not nodes:
            self._message(f"No PACS node yet. Add one: medexport pacs add NAME AET@HOST:PORT "
                          f"(saved in {nodes_path()})", error=True)

    def current_node(self):
        return self.node.currentData()

    # -- work ----------------------------------------------------------------------------------
    def _busy(self, on: bool) -> None:
        for b in (self.find_button, self.get_button, self.send_button):
            b.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.progress.setRange(0, 0 if on else 1)
        if not on:
            self.progress.setValue(0)

    def _message(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #b00020;" if error else "")
        self.status.setText(text)

    def _start(self, what: str, job, on_done) -> bool:
        node = self.current_node()
        if node is None:
            self._message("Choose a PACS node first (medexport pacs add NAME AET@HOST:PORT).", error=True)
            return False
        if self.worker is not None and self.worker.isRunning():
            return False
        self.worker = RunWorker(lambda cancel, progress: job(node, cancel, progress), self)
        self.worker.done.connect(lambda value: (self._busy(False), on_done(value)))
        self.worker.failed.connect(lambda msg: (self._busy(False), self._message(f"{what} failed: {msg}", True)))
        self.worker.cancelled.connect(lambda: (self._busy(False), self._message(f"{what} cancelled.")))
        self.worker.progress.connect(self._progress)
        self._busy(True)
        self._message(f"{what} on {node.describe()}...")
        self.worker.start()
        return True

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def filters(self) -> dict:
        date = self.date_from.text().strip()
        if self.date_to.text().strip():
            date = f"{date}-{self.date_to.text().strip()}"
        return {"patient_id": self.patient_id.text().strip(), "patient_name": self.patient_name.text().strip(),
                "date": date, "modality": self.modality.text().strip().upper()}

    def find(self) -> bool:
        from medexport.engine.pacs import scu

        wanted = self.filters()
        return self._start("Find", lambda node, cancel, progress: scu.find(node, **wanted), self._show_rows)

    def _show_rows(self, rows: list) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, (_, key) in enumerate(COLUMNS):
                text = str(row.get(key, ""))
                text = text.replace("\\", ", ")
                if key == "PatientName":
                    text = text.replace("^", " ").strip()
                if key == "StudyDate" and len(text) == 8:
                    text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
                self.table.setItem(i, j, QTableWidgetItem(text))
        if rows:
            self.table.selectRow(0)
        self._message(f"{len(rows)} {'study' if len(rows) == 1 else 'studies'} found." if rows else "No study matches.")

    def retrieve(self) -> bool:
        from medexport.engine.pacs import scu
        from medexport.engine.pacs.nodes import data_home

        row = self.table.currentRow()
        if not 0 <= row < len(self.rows):
            self._message("Select a study in the list first.", error=True)
            return False
        uid = self.rows[row]["StudyInstanceUID"]
        folder = data_home() / "pacs" / scu.safe_name(uid)

        def done(paths):
            self._message(f"Retrieved {len(paths)} objects.")
            self.openPaths.emit([str(folder)])

        return self._start("Retrieve", lambda node, cancel, progress: scu.get(node, uid, folder, cancel=cancel,
                                                                                progress=progress), done)

    def send(self) -> bool:
        from medexport.engine.pacs import scu

        if self.outgoing is None:
            return False
        try:
            objects = self.outgoing(self.current_node())
        except MedError as exc:
            self._message(f"Nothing to send: {exc}", error=True)
            return False
        return self._start("Send", lambda node, cancel, progress: scu.send(node, objects, cancel=cancel,
                                                                            progress=progress),
                           lambda uids: self._message(f"Sent {len(uids)} objects (SR / SEG / PDF report / overlay)."))

    def cancel(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()

    def wait(self, ms: int = 60000) -> None:
        """For tests and scripts: let the running job finish and its signals arrive."""
        from PySide6.QtWidgets import QApplication

        if self.worker is not None:
            self.worker.wait(ms)
        QApplication.processEvents()


def current_result_objects(window, node=None) -> list:
    """The current study's result as DICOM objects for the PACS: SR / SEG, the PDF report (Encapsulated
    PDF) and, unless ``node`` says ``send_overlay: false``, the overlay as a secondary capture."""
    from medexport.engine.errors import InvalidInputError
    from medexport.engine.pacs.objects import result_objects

    from .qt_report import save_pdf

    study = window.state.study
    result = window.state.result_of(study) if study is not None else None
    if result is None:
        raise InvalidInputError("no result on the open study", fix="run the model first (Ctrl+R)")
    entry = window.state.model_for(study)
    with tempfile.TemporaryDirectory(prefix="medexport-pdf-") as tmp:
        pdf = save_pdf(Path(tmp) / "report.pdf", study, result, entry.intended_use,
                       window=window.shown_window()).read_bytes()
    return result_objects(result, study.path, pdf=pdf, overlay=node is None or node.send_overlay)


def install(window) -> PacsPanel:
    """Add the panel to the main window as a dock, and File > PACS... to show it."""
    from PySide6.QtGui import QAction

    panel = PacsPanel(lambda node: current_result_objects(window, node), window)
    panel.openPaths.connect(window.open_paths)
    dock = window._dock("PACS", panel, Qt.DockWidgetArea.BottomDockWidgetArea)
    dock.hide()
    action = QAction("PACS: find, retrieve, send results...", window)
    action.setShortcut("Ctrl+Shift+P")
    action.triggered.connect(lambda: (panel.reload_nodes(), dock.show(), dock.raise_()))
    window.menuBar().actions()[0].menu().addAction(action)
    window.pacs_panel, window.pacs_dock = panel, dock
    return panel
