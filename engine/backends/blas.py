"""numpy's BLAS threads give the cores back to the inference runtime.

OpenBLAS (numpy's BLAS) keeps its worker threads spinning for a while after every call. On the
2-core CI machine one small matrix product per study (the OOD distance in ``finish``) made the
next OpenVINO inference of DenseNet-121 INT8 take 50 ms instead of 31 (median of 40, prepare /
infer / finish interleaved): the runtime's threads waited for cores the idle BLAS threads held.
The engine's own matrix work is small, so once a runtime loads, BLAS runs on one thread
(threadpoolctl). ``MEDEXPORT_BLAS_THREADS=N`` keeps N threads (0: leave BLAS as it is).
"""
from __future__ import annotations

import os
import threading

from ..errors import ConfigurationError

_LOCK = threading.Lock()
_DONE = False


def blas_threads() -> int:
    raw = os.environ.get("MEDEXPORT_BLAS_THREADS", "1").strip()
    if not raw.isdigit():
        raise ConfigurationError(f"MEDEXPORT_BLAS_THREADS is {raw!r}", expected="a whole number of threads >= 0",
                                 fix="unset it (1 thread) or set e.g. MEDEXPORT_BLAS_THREADS=1")
    return int(raw)


def quiet_blas() -> None:
    """Limit numpy's BLAS to ``blas_threads()`` threads, once per process."""
    global _DONE
    with _LOCK:
        if _DONE:
            return
        threads = blas_threads()
        _DONE = True
        if threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads, user_api="blas")  # applies now and stays (no ``with``)
