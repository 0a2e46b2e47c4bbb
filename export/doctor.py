"""``medexport doctor``: what this machine has, and which targets can be built and run here."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib.util import find_spec

from medexport.engine.host import installed_versions

from .targets import TARGETS

PACKAGES = ("numpy", "pydicom", "pylibjpeg", "openvino", "onnxruntime", "onnx", "torch", "nncf",
            "PySide6-Essentials", "tensorrt", "cuda-python", "highdicom")


def cpu_info() -> dict:
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_fp16") if f in flags]
    return {"name": name, "cores": os.cpu_count(), "isa": isa}


def gpu_info() -> dict:
    """NVIDIA GPUs via nvidia-smi (no CUDA import needed); empty when there are none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    gpus = [dict(zip(("name", "driver", "compute_capability", "memory"), [s.strip() for s in line.split(",")]))
            for line in out.strip().splitlines() if line.strip()]
    return {"gpus": gpus} if gpus else {}


def package_versions() -> dict:
    return installed_versions(PACKAGES)


def target_status() -> dict:
    from medexport.engine.backends import BACKENDS

    status = {}
    for name, t in TARGETS.items():
        missing = [m for m in t.build_needs if find_spec(m) is None]
        backend = BACKENDS.get(t.backend)
        reason = backend.unavailable_reason() if backend else f"{t.backend} backend is not part of this engine yet"
        status[name] = {"build": not missing and find_spec("onnx") is not None,
                        "run": reason is None, "why_not": reason or (f"missing {', '.join(missing)}" if missing else ""),
                        "install": f"pip install 'medexport[{t.extra}]'"}
    return status


def best_target() -> str:
    """The target that builds and runs best here: TensorRT on an NVIDIA GPU with TensorRT, else
    OpenVINO, else ONNX Runtime (the order of export/targets.py)."""
    status = target_status()
    runnable = [name for name, s in status.items() if s["build"] and s["run"]]
    if not runnable:
        from medexport.engine.errors import BackendUnavailableError

        raise BackendUnavailableError("no target can be built and run on this machine",
                                      fix="pip install 'medexport[openvino]' or 'medexport[onnxruntime]'")
    return runnable[0]


def report() -> dict:
    from medexport.engine.host import missing_desktop_libraries

    return {"cpu": cpu_info(), "gpu": gpu_info(), "python": platform.python_version(),
            "viewer_display": {"missing": missing_desktop_libraries("xcb")},
            "platform": platform.platform(), "packages": package_versions(), "targets": target_status()}


def render(info: dict) -> str:
    cpu = info["cpu"]
    lines = [f"CPU      {cpu['name']} ({cpu['cores']} logical cores; {', '.join(cpu['isa']) or 'no AVX2'})"]
    gpus = info["gpu"].get("gpus", [])
    lines.append("GPU      " + ("; ".join(f"{g['name']} (driver {g['driver']}, compute {g['compute_capability']})"
                                        for g in gpus) if gpus else "none found (no nvidia-smi)"))
    lines.append(f"Python   {info['python']} on {info['platform']}")
    lines.append("Packages " + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))
    absent = [k for k, v in info["packages"].items() if not v]
    if absent:
        lines.append("Absent   " + ", ".join(absent))
    missing = info.get("viewer_display", {}).get("missing", [])
    if missing:
        from medexport.engine.host import install_line

        lines.append(f"Viewer   the desktop display needs {', '.join(missing)}: {install_line(missing)}")
    lines.append("")
    lines.append(f"{'target':<12} {'build':<6} {'run':<6} note")
    for name, s in info["targets"].items():
        note = "" if s["build"] and s["run"] else f"{s['why_not']}: {s['install']}"
        if name == "tensorrt":
            note = (note + "; " if note else "") + "this path has not been run in CI"
        lines.append(f"{name:<12} {'yes' if s['build'] else 'no':<6} {'yes' if s['run'] else 'no':<6} {note}")
    return "\n".join(lines)
