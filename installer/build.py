"""Build the one-folder viewer app with PyInstaller, pack it, and prove it runs.

    python installer/build.py --bundles bundles [--dist dist]

Run it with a Python environment that has only the runtime and desktop extras (no torch):
``make installer`` makes one. Steps: icon -> PyInstaller (installer/medexport_viewer.spec)
-> .desktop launcher -> tarball -> size report -> ``--selftest`` of the frozen binary with
no Python on PATH -> a screenshot of the main window (offscreen).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "medexport-viewer"
BUDGET_MB = 350


def make_icon(folder: Path) -> Path:
    """A 256 px icon: an ECG trace over a dark tile (drawn here, so no binary lives in git)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((8, 8, 248, 248), radius=40, fill=(22, 52, 92, 255))
    trace = [(24, 150), (80, 150), (96, 130), (108, 150), (124, 150), (136, 60), (150, 200), (162, 150),
             (190, 150), (204, 128), (218, 150), (232, 150)]
    d.line(trace, fill=(255, 214, 90, 255), width=12, joint="curve")
    path = folder / "icon.png"
    img.save(path)
    img.save(folder / "icon.ico", sizes=[(256, 256), (64, 64), (32, 32)])
    return path


def freeze(bundles: Path, dist: Path, work: Path) -> Path:
    env = dict(os.environ, MEDEXPORT_BUNDLES_DIR=str(bundles.resolve()))
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
                    "--distpath", str(dist), "--workpath", str(work), str(HERE / "medexport_viewer.spec")],
                   check=True, env=env)
    return dist / NAME


def trim(app: Path) -> None:
    """Drop what the viewer never loads (Qt translations, unused Qt plugins), strip debug symbols
    from shared libraries, and store highdicom's JSON tables minified and gzip-compressed (16 MB ->
    0.6 MB; installer/rthook_packed_data.py serves them unpacked). The self-test afterwards proves it."""
    internal = app / "_internal"
    for pattern in ("PySide6/Qt/translations", "PySide6/Qt/plugins/generic", "PySide6/Qt/plugins/networkinformation",
                    "PySide6/Qt/plugins/tls", "PySide6/Qt/plugins/qmltooling"):
        shutil.rmtree(internal / pattern, ignore_errors=True)
    strip_debug(internal)
    stub_icu_data(internal)
    for table in (internal / "highdicom").rglob("*.json"):
        packed = json.dumps(json.loads(table.read_text()), separators=(",", ":")).encode()
        table.with_name(table.name + ".gz").write_bytes(gzip.compress(packed, 9, mtime=0))
        table.unlink()


def strip_debug(folder: Path) -> None:
    """Remove debug sections from the ELF libraries below ``folder`` that carry them (libpython and
    the DICOM decoders: ~40 MB). Symbols the loader needs stay. A library whose loadable segments
    would change (some auditwheel-patched ones) is left as it was; the launcher is never touched."""
    if not sys.platform.startswith("linux") or not (shutil.which("strip") and shutil.which("readelf")):
        print("strip/readelf not found: libraries keep their debug sections")
        return
    for lib in (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p)):
        if ".debug_info" not in _readelf("-SW", lib):
            continue
        stripped = lib.with_name(lib.name + ".stripped")
        subprocess.run(["strip", "--strip-debug", "-o", str(stripped), str(lib)], check=True, capture_output=True)
        if _segments(stripped) == _segments(lib):
            shutil.copymode(lib, stripped)
            os.replace(stripped, lib)
        else:
            stripped.unlink()


def stub_icu_data(folder: Path) -> None:
    """Replace Qt's 31 MB ICU data library with an empty one (installer/linux/icu_data_stub.c says
    what the viewer gives up: locale-aware collation and legacy code pages in Qt)."""
    libs = [p for p in folder.glob("PySide6/Qt/lib/libicudata.so.*") if p.is_file() and not p.is_symlink()]
    if not libs or not (shutil.which("gcc") and shutil.which("nm")):
        print("gcc/nm or libicudata not found: ICU data stays (about 31 MB)")
        return
    lib = libs[0]
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout.split()
    name = next((s for s in symbols if s.startswith("icudt") and s.endswith("_dat")), None)
    if name is None:
        print(f"{lib.name} exports no icudtNN_dat symbol: ICU data stays")
        return
    stub = lib.with_name(lib.name + ".stub")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", f"-DICU_DATA_SYMBOL={name}", f"-Wl,-soname,{lib.name}",
                    "-o", str(stub), str(HERE / "linux" / "icu_data_stub.c")], check=True)
    os.replace(stub, lib)


def _readelf(flag: str, path: Path) -> str:
    return subprocess.run(["readelf", flag, str(path)], capture_output=True, text=True).stdout


def _segments(path: Path) -> list[list[str]]:
    return [line.split() for line in _readelf("-lW", path).splitlines() if line.strip().startswith("LOAD")]


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def desktop_entry(app: Path) -> None:
    shutil.copy(HERE / "build" / "icon.png", app / "medexport-viewer.png")
    (app / "medexport-viewer.desktop").write_text(
        "[Desktop Entry]\nType=Application\nName=medexport viewer\n"
        "Comment=Open medical images and ECGs and run AI models offline (demo models: not for diagnosis)\n"
        "Exec=medexport-viewer %F\nIcon=medexport-viewer\nTerminal=false\n"
        "Categories=Science;MedicalSoftware;Graphics;\n"
        "MimeType=application/dicom;image/png;image/jpeg;\n")
    (app / "install.sh").write_text(
        "#!/bin/sh\n# Per-user install: copy the folder, link the binary, register the launcher.\nset -e\n"
        "dest=\"${XDG_DATA_HOME:-$HOME/.local/share}/medexport-viewer\"\nsrc=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n"
        "[ \"$src\" = \"$dest\" ] || { rm -rf \"$dest\"; cp -r \"$src\" \"$dest\"; }\n"
        "mkdir -p \"$HOME/.local/bin\" \"$HOME/.local/share/applications\" \"$HOME/.local/share/icons\"\n"
        "ln -sf \"$dest/medexport-viewer\" \"$HOME/.local/bin/medexport-viewer\"\n"
        "cp \"$dest/medexport-viewer.png\" \"$HOME/.local/share/icons/medexport-viewer.png\"\n"
        "sed \"s#^Exec=.*#Exec=$dest/medexport-viewer %F#\" \"$dest/medexport-viewer.desktop\" "
        "> \"$HOME/.local/share/applications/medexport-viewer.desktop\"\necho \"installed in $dest\"\n")
    (app / "install.sh").chmod(0o755)


def pack(app: Path) -> Path:
    out = app.parent / f"{NAME}-linux-x86_64.tar.gz"
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(app, arcname=NAME)
    os.replace(tmp, out)
    return out


def size_report(app: Path) -> tuple[float, list[str]]:
    def size(p: Path) -> int:  # symlinks (PyInstaller links some libraries) counted once
        if p.is_symlink():
            return 0
        return sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) \
            if p.is_dir() else p.stat().st_size

    total = size(app) / 1e6
    internal = app / "_internal"
    parts = sorted(((size(p) / 1e6, p.name) for p in internal.iterdir()), reverse=True)[:12]
    return total, [f"  {mb:7.1f} MB  {name}" for mb, name in parts]


def clean_env(home: Path) -> dict:
    """No Python environment on PATH, no PYTHONPATH: what a clinic machine has."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "MEDEXPORT_HOME": str(home / "data"),
            "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8"}


def selftest(app: Path) -> str:
    """Run ``--selftest`` in a throwaway home; fail on a failed bundle or a file written outside
    the app's data folder (a runtime's device id or cache, say)."""
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.run([str(app / NAME), "--selftest"], capture_output=True, text=True, timeout=600,
                              env=clean_env(Path(home)), cwd=home)
        data = Path(clean_env(Path(home))["MEDEXPORT_HOME"])
        strays = [str(p.relative_to(home)) for p in Path(home).rglob("*") if p.is_file() and data not in p.parents]
    print(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"frozen app failed its self-test (exit {proc.returncode})")
    if strays:
        raise SystemExit(f"FAILED: the frozen app wrote outside its data folder: {strays}")
    print("the self-test wrote only into the app's data folder")
    return proc.stdout


def screenshot(app: Path, study: str | None, out: Path) -> None:
    with tempfile.TemporaryDirectory() as home:
        args = [str(app / NAME), *([str(Path(study).resolve())] if study else []), "--run", "--screenshot",
                str(out.resolve()), "--quit"]
        subprocess.run(args, capture_output=True, text=True, timeout=300, env=clean_env(Path(home)), cwd=home)
    print(f"screenshot: {out} ({'ok' if out.is_file() else 'MISSING'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default="bundles")
    parser.add_argument("--dist", default="dist")
    parser.add_argument("--study", help="a study to open for the screenshot")
    args = parser.parse_args()
    start = time.time()
    dist, work = Path(args.dist), Path("build") / "pyinstaller"
    make_icon(HERE / "build")
    app = freeze(Path(args.bundles), dist, work).resolve()
    trim(app)
    if sys.platform.startswith("linux"):
        desktop_entry(app)
    total, lines = size_report(app)
    print(f"{app}: {total:.0f} MB (budget {BUDGET_MB} MB) after {time.time() - start:.0f} s; largest parts:")
    print("\n".join(lines))
    selftest(app)
    screenshot(app, args.study, dist / "frozen-viewer.png")
    if sys.platform.startswith("linux"):
        tarball = pack(app)
        print(f"{tarball}: {tarball.stat().st_size / 1e6:.0f} MB")
    if total > BUDGET_MB:
        print(f"FAILED: {total:.0f} MB is over the {BUDGET_MB} MB budget")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
