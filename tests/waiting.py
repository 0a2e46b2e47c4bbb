"""Polling for the tests that watch a separate process (a listener, a server) reach a state."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60) -> bool:
    """True as soon as ``predicate()`` is true; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
