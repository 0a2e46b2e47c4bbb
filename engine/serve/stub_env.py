"""The small Python environment Triton's Python-backend stub runs in.

pytriton 0.7.0 bundles tritonserver 2.51, whose stub (``triton_python_backend_stub``) passes
numpy arrays through pybind11 built for numpy 1.x: under numpy 2 every output fails with
"output tensor shape does not match size of output" (measured here). The stub only forwards
tensors between Triton and this process through shared memory, so it gets its own environment
with ``numpy<2`` and ``pyzmq`` (what pytriton's proxy needs), made from the same interpreter as
the serving process (the stub embeds that interpreter's libpython). The engine keeps numpy 2.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..errors import BackendUnavailableError

STUB_PACKAGES = ("numpy>=1.21,<2", "pyzmq>=23")
ENV_VAR = "MEDEXPORT_TRITON_STUB_ENV"


def stub_env_path() -> Path:
    """``$MEDEXPORT_TRITON_STUB_ENV`` or ``triton-stub`` inside the running environment."""
    return Path(os.environ.get(ENV_VAR) or Path(sys.prefix) / "triton-stub")


def _stub_python(path: Path) -> Path:
    return path / "bin" / "python"


def check_stub_env(path: Path | None = None) -> Path:
    path = stub_env_path() if path is None else path
    python = _stub_python(path)
    if not python.is_file():
        raise BackendUnavailableError(f"no Python environment for Triton's Python-backend stub at {path}",
                                      expected="a venv with numpy<2 and pyzmq (the stub is built for numpy 1.x)",
                                      fix="run 'medexport serve --setup' once (make install does), "
                                          f"or point ${ENV_VAR} at one")
    return path


def create_stub_env(path: Path | None = None) -> Path:
    """Create the stub's environment (needs the package index once); returns its path."""
    path = stub_env_path() if path is None else path
    if not _stub_python(path).is_file():
        base = getattr(sys, "_base_executable", sys.executable)
        # venv.create uses the running interpreter; the stub needs the *base* one's libpython
        subprocess.run([base, "-m", "venv", str(path)], check=True)
    subprocess.run([str(_stub_python(path)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *STUB_PACKAGES], check=True)
    return path


def server_library_path() -> str:
    """LD_LIBRARY_PATH for tritonserver: this interpreter's libpython first.

    The stub links ``libpython3.X.so``; the system's may be an older patch release than the
    interpreter whose standard library it then loads (``'_thread.RLock' object has no attribute
    '_recursion_count'`` at model load, measured with Debian 3.11.2 vs 3.11.7).
    Also the wheel's own ``nvidia_pytriton.libs``: pytriton looks for it only when it sits in one of
    ``site.getsitepackages()`` (not when its folder is reached through a ``.pth`` file or PYTHONPATH).
    """
    import pytriton

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    wheel_libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return ":".join(p for p in (libdir, current, str(wheel_libs) if wheel_libs.is_dir() else "") if p)

