"""The walls between layers: engine and desktop never import torch; engine never imports Qt."""
import subprocess
import sys

import pytest

BLOCK = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["medexport.engine", "medexport.engine.model", "medexport.desktop.app"])
def test_imports_without_torch(module):
    proc = run(BLOCK.format(mods=["torch", "torchvision"]) + f"import {module}\nprint('ok')")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_engine_never_imports_qt():
    proc = run(BLOCK.format(mods=["PySide6", "PyQt5", "PyQt6"]) + "import medexport.engine\nprint('ok')")
    assert proc.returncode == 0, proc.stderr


def test_engine_runs_a_bundle_without_torch(pneumonia_bundle, cxr):
    code = BLOCK.format(mods=["torch"]) + (
        "from medexport.engine import open_bundle\n"
        f"with open_bundle({str(pneumonia_bundle)!r}) as m:\n"
        f"    r = m.predict({cxr[0]!r})\n"
        "print(round(sum(r.scores.values()), 4), r.backend)\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules if sys.modules[k] is not None)\n")
    proc = run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "1.0"


def test_heavy_runtimes_are_lazy():
    proc = run("import sys, medexport.engine\n"
               "print(sorted(m for m in ('openvino', 'onnxruntime', 'tensorrt') if m in sys.modules))")
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_ecg_path_needs_neither_scipy_nor_wfdb(shared):
    """The frozen clinic app ships without scipy, pandas and wfdb: reading, filtering and beat
    detection of a real WFDB record must work with them blocked."""
    record = shared / "ecg" / "mitdb" / "100.hea"
    code = BLOCK.format(mods=["scipy", "wfdb", "pandas"]) + (
        "from medexport.engine import ecg_beats\n"
        "from medexport.engine.io.ecg import read_ecg\n"
        "from medexport.engine.manifest import EcgPreprocess\n"
        f"r = read_ecg({str(record)!r})\n"
        "b = ecg_beats.beats_of(r.signals[0, :36000], r.fs, EcgPreprocess())\n"
        "print(len(r.annotations), len(b.peaks))\n")
    proc = run(code)
    assert proc.returncode == 0, proc.stderr
    n_annotations, n_beats = map(int, proc.stdout.split())
    assert n_annotations == 2274 and 120 < n_beats < 140  # 100 s of a ~75 bpm record


def test_import_contracts_hold_and_catch_an_upward_import(tmp_path):
    """The contracts in pyproject.toml hold for the project, and fail for a copy of it in which
    the engine imports the export layer (what a careless edit would do)."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0 and "broken" not in proc.stdout.lower().replace("0 broken", ""), proc.stdout

    for layer in ("engine", "export", "models", "desktop"):
        shutil.copytree(repo / layer, tmp_path / "medexport" / layer, ignore=shutil.ignore_patterns("*.pt", "__pycache__"))
    shutil.copy(repo / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "medexport" / "engine" / "upward.py").write_text("from medexport.export import build  # noqa\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(lint)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode != 0
    assert "medexport.engine.upward -> medexport.export" in proc.stdout.replace("\n", " ")


@pytest.mark.parametrize("command", [["models"], ["inspect", "BUNDLE"]])
def test_cli_commands_that_only_read_need_no_torch(command, pneumonia_bundle):
    args = [str(pneumonia_bundle) if a == "BUNDLE" else a for a in command]
    proc = run(BLOCK.format(mods=["torch", "torchvision", "nncf"]) +
               f"from medexport.export.cli import main\nsys.exit(main({args!r}))")
    assert proc.returncode == 0, proc.stderr
    assert "pneumonia-cxr" in proc.stdout


def test_tasks_have_one_home():
    """No caller tells results apart by their attributes, and task names are matched only in
    the task registry (engine/tasks): everything else asks the Task / Result objects."""
    import re
    from pathlib import Path

    from medexport.engine.tasks import TASKS

    repo = Path(__file__).resolve().parent.parent
    names = "|".join(TASKS)
    compared = re.compile(rf"""[=!]=\s*["']({names})["']|["']({names})["']\s*[=!]=|in\s*\(["']({names})""")
    offenders = []
    for layer in ("engine", "export", "desktop", "models"):
        for path in (repo / layer).rglob("*.py"):
            if path.parts[-2] == "tasks":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"hasattr\((result|r|res)\b", line) or compared.search(line):
                    offenders.append(f"{path.relative_to(repo)}:{n}: {line.strip()}")
    assert offenders == []


def test_viewer_names_the_packages_a_plain_desktop_lacks(monkeypatch):
    """Qt's own message is 'could not load the Qt platform plugin xcb'; ours names the packages."""
    import ctypes.util

    from medexport.engine import host

    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda n: None if n in ("xcb-icccm", "xcb-keysyms") else real(n))
    missing = host.missing_desktop_libraries("xcb")
    assert {"libxcb-icccm4", "libxcb-keysyms1"} <= set(missing)
    assert host.install_line(missing).startswith("sudo apt-get install -y libxcb")
    assert host.missing_desktop_libraries("offscreen") == []
    proc = run("import os, sys\nos.environ['QT_QPA_PLATFORM'] = 'xcb'\nimport ctypes.util\n"
               "ctypes.util.find_library = lambda n: None if n == 'xcb-icccm' else 'lib' + n\n"
               "from medexport.desktop.app import main\nsys.exit(main(['--quit']))")
    assert proc.returncode == 2 and "libxcb-icccm4" in proc.stderr and "apt-get install" in proc.stderr
