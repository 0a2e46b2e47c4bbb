"""Help > Commissioning report... (Qt-free): ``medexport commission`` run as its own process, and
whether each bundle has a current, passing report (engine/commissioning.py).

Why a process and not an import: commissioning lives in the export package (export/commission.py,
its PDF, the machine's CPU and GPU facts, the build's evidence readers), which the desktop may not
import (import-linter: desktop and export are independent layers) and which the frozen clinic app
leaves out. In a process of its own it also measures speed as a clinic's service would run the
bundle (not beside the viewer's own runtimes and threads), writes exactly the report the CLI writes,
and Cancel ends it at once (a thread cannot be stopped inside a runtime call).
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from medexport.engine.commissioning import check_commissioned, read_reports
from medexport.engine.errors import ConfigurationError, MedError

DONE = re.compile(r"verdict (PASS|FAIL) in [\d.]+ s: (.+\.json) and (.+\.pdf)\s*$")
STARTED = "commissioning "  # export/commission.py announces each bundle with this


def unavailable() -> str | None:
    """Why commissioning cannot run from this installation (None: it can)."""
    if getattr(sys, "frozen", False) or find_spec("medexport.export") is None:
        return ("this installation of the viewer has no 'medexport commission' (the command-line tools are not "
                "installed with the clinic app)")
    return None


def command(bundles: list, out, trust_sources: list) -> list[str]:
    """The ``medexport commission`` command line for ``bundles`` into ``out``."""
    cmd = [sys.executable, "-m", "medexport.export.cli", "commission", *map(str, bundles), "-o", str(out)]
    for source in trust_sources:
        cmd += ["--trust", str(source)]
    return cmd


def trust_sources() -> list[Path]:
    """The files of the viewer's trust store (desktop/trust.py), for the command's ``--trust``."""
    from .trust import policy

    return sorted({k.source for k in policy().keys})


def run_commission(bundles: list, out, cancel: threading.Event | None = None, progress=None) -> Path:
    """Run ``medexport commission`` on ``bundles`` (blocking: call from a worker thread); the JSON
    report's path. ``progress(i, n)`` as each bundle starts; ``cancel`` set: the process is ended and
    ``state.Cancelled`` raised (the command writes its report only at the end: nothing is left)."""
    from .state import Cancelled

    why = unavailable()
    if why:
        raise ConfigurationError(f"cannot commission from here: {why}", expected="the medexport command-line tools",
                                 fix=f"on this machine run 'medexport commission BUNDLE... -o {out}' with the full "
                                     "install; the viewer reads the report from that folder")
    if not bundles:
        raise ConfigurationError("no bundle was chosen", fix="tick the bundles to commission")
    Path(out).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command(bundles, out, trust_sources()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # readlines without blocking us
    reader.start()
    started = 0
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            seen = sum(line.startswith(STARTED) for line in list(lines))
            if progress and seen != started:
                started = seen
                progress(started, len(bundles))
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    reader.join(5)
    done = next((m for m in map(DONE.search, reversed(lines)) if m), None)
    if proc.returncode not in (0, 1) or done is None:  # 1: a bundle failed a check; the report is written
        tail = "".join(lines[-8:]).strip() or "no output"
        raise MedError(f"'medexport commission' ended with exit status {proc.returncode}: {tail}",
                       expected="a commissioning report", fix="run the same command in a terminal to see all of it")
    return Path(done.group(2))


@dataclass(frozen=True)
class BundleStatus:
    path: Path
    title: str  # "model version"
    sha256: str
    commissioned: bool  # a current, passing report in the folder commissions it
    status: str  # the report that does, or why none does


def bundle_status(paths: list, folder) -> list[BundleStatus]:
    """Each bundle's standing against the reports in ``folder`` (engine/commissioning.check_commissioned)."""
    from medexport.engine import read_manifest

    out = []
    for path in paths:
        try:
            m, sha, _ = read_manifest(path)  # every file checked: a report names the manifest, the manifest the files
        except MedError as exc:
            out.append(BundleStatus(Path(path), Path(path).name, "", False, f"cannot be run: {exc}"))
            continue
        title = f"{m.model_id} {m.model_version}"
        try:
            report = check_commissioned(folder, sha, m.model_id)
            out.append(BundleStatus(Path(path), title, sha, True, f"commissioned: {report.name} passed"))
        except MedError as exc:
            out.append(BundleStatus(Path(path), title, sha, False, str(exc)))
    return out


def report_rows(report: dict) -> list[tuple[str, str, bool, str]]:
    """(bundle, check, passed, detail) for every check in a commissioning report, bundle by bundle."""
    rows = []
    for b in report.get("bundles", []):
        name = f"{b.get('model_id', Path(b['path']).name)} {b.get('version', '')}".strip()
        for c in b.get("checks", []):
            rows.append((name, c["name"], bool(c["passed"]), c.get("detail", "")))
    return rows


def read_report(path) -> dict:
    """The report ``run_commission`` wrote (as engine/commissioning.py reads it)."""
    path = Path(path)
    for p, report in read_reports(path.parent):
        if p.name == path.name:
            return report
    raise MedError(f"{path} is not a readable commissioning report", fix="commission the bundles again")
