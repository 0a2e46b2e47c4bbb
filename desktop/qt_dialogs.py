"""Small dialogs: errors, DICOM tags, model card, about."""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QMessageBox, QProgressBar, QPushButton, QTextBrowser,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout)


def show_error(parent, title: str, message: str) -> None:
    """A MedError's message as the user reads it (what was found, expected, how to fix): no traceback.
    Scripted runs (--screenshot / --quit) print it instead of waiting on a dialog nobody sees."""
    if getattr(parent, "scripted", False):
        import sys

        print(f"error: {title}: {message}", file=sys.stderr)
        return
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.exec()


def run_controls(owner, label: str) -> tuple[QPushButton, QPushButton, QProgressBar]:
    """Run / Cancel buttons and a progress bar for a dialog with ``start()`` and a ``worker`` that can cancel."""
    run = QPushButton(label)
    run.clicked.connect(owner.start)
    cancel = QPushButton("Cancel")
    cancel.setEnabled(False)
    cancel.clicked.connect(lambda: owner.worker is not None and owner.worker.cancel())
    progress = QProgressBar()
    progress.setRange(0, 1)
    progress.setValue(0)
    return run, cancel, progress


class TextDialog(QDialog):
    def __init__(self, title: str, markdown: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(720, 640)
        view = QTextBrowser()
        view.setMarkdown(markdown)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(view)
        layout.addWidget(buttons)


class TagDialog(QDialog):
    """Every header element of a DICOM file (pixel and waveform data left out)."""

    def __init__(self, path: str, parent=None):
        super().__init__(parent)
        import pydicom

        self.setWindowTitle(f"DICOM tags: {path}")
        self.resize(760, 640)
        tree = QTreeWidget()
        tree.setHeaderLabels(["tag", "keyword", "VR", "value"])
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        self._fill(tree.invisibleRootItem(), ds.file_meta)
        self._fill(tree.invisibleRootItem(), ds)
        tree.resizeColumnToContents(0)
        tree.resizeColumnToContents(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(tree)
        layout.addWidget(buttons)
        self.tree = tree

    def _fill(self, parent, ds) -> None:
        for elem in ds:
            if elem.keyword in ("PixelData", "WaveformData"):
                continue
            value = "" if elem.VR == "SQ" else str(elem.value)[:200]
            item = QTreeWidgetItem(parent, [f"({elem.tag.group:04X},{elem.tag.element:04X})", elem.keyword or "",
                                            elem.VR, value])
            if elem.VR == "SQ":
                for i, sub in enumerate(elem.value):
                    child = QTreeWidgetItem(item, [f"item {i + 1}", "", "", ""])
                    self._fill(child, sub)


def about_text(state) -> str:
    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    from medexport.engine.backends import available_backends

    models = "\n".join(f"- {b.title}: {', '.join(b.artifacts)} ({b.path})" for b in state.bundles) or "- none"
    return f"""# medexport viewer {v('medexport')}

**Offline by design.** This application never connects to a network: no update checks,
no telemetry, no cloud. Studies, results, reports and the audit log stay on this computer
(reports and the audit log in the user data folder).

**The bundled demo models are not medical devices and must not be used for diagnosis.**

## Installed models
{models}

## Runtimes on this machine
Available backends: {', '.join(available_backends()) or 'none'}

| component | version |
|---|---|
| Python | {platform.python_version()} |
| OpenVINO | {v('openvino')} |
| ONNX Runtime | {v('onnxruntime')} |
| pydicom | {v('pydicom')} |
| PySide6 | {v('PySide6-Essentials') if v('PySide6-Essentials') != 'not installed' else v('PySide6')} |
| highdicom | {v('highdicom')} |
"""
