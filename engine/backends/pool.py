"""A pool of per-call runtime state (OpenVINO infer requests, TensorRT execution contexts).

Such objects hold one call's inputs and outputs, so two threads must never use one at the
same time. Each caller takes an idle one, or a new one while fewer than ``cap`` exist, or
waits until one is handed back.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable


class Pool:
    def __init__(self, create: Callable[[], object], cap: int, destroy: Callable[[object], None] | None = None):
        if cap < 1:
            raise ValueError(f"a pool needs room for at least one item, got cap={cap}")
        self._create, self._destroy, self.cap = create, destroy, cap
        self._idle: list = []
        self._free = threading.Semaphore(cap)  # callers that may hold an item right now
        self._lock = threading.Lock()
        self.created = 0

    @contextmanager
    def take(self):
        """Lend one item to this caller alone for the ``with`` block."""
        self._free.acquire()
        try:
            with self._lock:
                item = self._idle.pop() if self._idle else None
            if item is None:
                item = self._create()
                with self._lock:
                    self.created += 1
            try:
                yield item
            finally:
                with self._lock:
                    self._idle.append(item)
        finally:
            self._free.release()

    def close(self) -> None:
        """Wait for the items in use to come back, then destroy all of them."""
        for _ in range(self.cap):
            self._free.acquire()
        try:
            with self._lock:
                items, self._idle = self._idle, []
            for item in items:
                if self._destroy is not None:
                    self._destroy(item)
        finally:
            for _ in range(self.cap):
                self._free.release()
