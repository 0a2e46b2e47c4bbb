"""The one small interface every runtime implements (Polygraphy-style runners).

A backend is created for one artifact, then ``load()``-ed, ``infer()``-ed any number of
times and ``close()``-d; it is also a context manager. Public methods check state and
delegate to ``_load`` / ``_infer`` / ``_close``. Heavy runtimes are imported inside
``_load`` only, so importing this package costs nothing.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, MedError


class Backend:
    name: str = ""
    module: str = ""  # the import that must succeed
    extra: str = ""  # pip extra that installs it
    targets: tuple = ()  # artifact targets this backend runs
    precision_preference: tuple = ("int8", "fp32", "fp16")  # fastest first, on this kind of hardware
    install_hint: str = ""  # how to get the runtime, when pip install medexport[extra] is not enough

    def __init__(self, files: dict, *, precision: str = "fp32", threads: int | None = None,
                 cache_dir: str | None = None):
        self.files = {role: Path(p) for role, p in files.items()}
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.loaded = False
        self.load_seconds: float | None = None
        self.device = "CPU"

    # -- availability -------------------------------------------------------------
    @classmethod
    def installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when this backend can run here, else a sentence saying why not."""
        if not cls.installed():
            return f"{cls.module} is not installed"
        return None

    @classmethod
    def require(cls) -> None:
        reason = cls.unavailable_reason()
        if reason:
            raise BackendUnavailableError(
                f"backend {cls.name!r} cannot run here: {reason}",
                fix=cls.install_hint or f"pip install 'medexport[{cls.extra}]', or choose another backend (backend='auto')")

    # -- lifecycle ------------------------------------------------------------------
    def load(self) -> "Backend":
        if self.loaded:
            return self
        self.require()
        import time

        from .blas import quiet_blas
        from .offline import runtimes_offline

        runtimes_offline()  # before the runtime's own import: it may start telemetry there
        quiet_blas()  # numpy's spinning BLAS threads would slow every inference after a matrix product

        start = time.perf_counter()
        try:
            self._load()
        except MedError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(f"{self.name} could not load {self.files.get('model')}: {exc}",
                                          fix="rebuild the bundle for this runtime version") from exc
        self.load_seconds = time.perf_counter() - start
        self.loaded = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.loaded:
            raise MedError(f"backend {self.name} used before load()", fix="call load() or use 'with'")
        return self._infer(feeds)

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()

    # -- to implement ---------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _infer(self, feeds):
        raise NotImplementedError

    def _close(self) -> None:
        pass


def default_cache_dir() -> str:
    """Per-user cache for compiled models (OpenVINO blobs, TensorRT engines)."""
    root = os.environ.get("MEDEXPORT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "medexport")
    return root
