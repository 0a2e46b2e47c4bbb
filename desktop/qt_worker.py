"""Inference off the UI thread, with cancel (the window never freezes)."""
from __future__ import annotations

import threading

from PySide6.QtCore import QThread, Signal

from medexport.engine import MedError

from .state import Cancelled


class RunWorker(QThread):
    """Runs ``job(cancel_event, progress)`` in a thread; reports done / failed / cancelled."""

    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    progress = Signal(int, int)

    def __init__(self, job, parent=None):
        super().__init__(parent)
        self.job = job
        self.cancel_event = threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        try:
            result = self.job(self.cancel_event, lambda i, n: self.progress.emit(i, n))
        except Cancelled:
            self.cancelled.emit()
        except MedError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # an unexpected bug must not take the app down
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            if self.cancel_event.is_set():
                self.cancelled.emit()
            else:
                self.done.emit(result)
