"""Commissioning reports, read Qt-free: is a bundle commissioned, on this machine, as it is now?

``medexport commission`` (export/commission.py) writes ``commissioning-<date>.json`` reports. The
listener (``--require-commissioning DIR``) and the viewer (``require_commissioning=true`` in
viewer.ini) run a bundle only when the newest report in the folder that names its SHA-256 passed
for it, and was made with the runtime versions installed now (a changed runtime is a new
machine). A report signed with the clinic's key (``signature``) must verify.
"""
from __future__ import annotations

import base64
import json
import platform
from pathlib import Path

from .errors import ConfigurationError

REPORT_GLOB = "commissioning-*.json"
SCHEMA = "medexport.commissioning/1"
# what a result depends on besides the bundle: a change here needs a new commissioning
RUNTIME_PACKAGES = ("medexport", "numpy", "onnxruntime", "openvino", "tensorrt", "pydicom", "pylibjpeg")


def runtime_versions() -> dict:
    """Versions of Python and the packages results depend on (None: not installed)."""
    from medexport.engine.host import installed_versions

    return {"python": platform.python_version(), **installed_versions(RUNTIME_PACKAGES)}


def canonical(report: dict) -> bytes:
    """The bytes a report's signature covers: the report without ``signature``, keys sorted."""
    body = {k: v for k, v in report.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def verify_report(report: dict, where: Path) -> None:
    """A present ``signature`` must match the report (ECDSA over ``canonical``); absent is fine."""
    sig = report.get("signature")
    if not sig:
        return
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public = serialization.load_pem_public_key(sig["public_key_pem"].encode())
        public.verify(base64.b64decode(sig["value"]), canonical(report), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: its signature by {sig.get('signer', '?')} does not match the report "
                                 f"({type(exc).__name__})", expected="a report exactly as it was signed",
                                 fix="the report was edited after signing: commission the bundle again") from None


def read_reports(folder) -> list[tuple[Path, dict]]:
    """(path, report) of every readable commissioning report in ``folder``, oldest first."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.glob(REPORT_GLOB)) if folder.is_dir() else []:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and report.get("schema") == SCHEMA:
            out.append((path, report))
    return sorted(out, key=lambda pr: (str(pr[1].get("created", "")), pr[0].name))


def check_commissioned(folder, sha256: str, model_id: str = "") -> Path:
    """The report that commissions bundle ``sha256`` here, or a ConfigurationError saying why none does."""
    folder = Path(folder)
    name = f"bundle {model_id or '?'} (SHA-256 {sha256[:12]}...)"
    fix = f"run 'medexport commission BUNDLE -o {folder}' on this machine"
    covering = [(p, r) for p, r in read_reports(folder)
                if any(b.get("sha256") == sha256 for b in r.get("bundles", []))]
    if not covering:
        raise ConfigurationError(f"{name} has no commissioning report in {folder}",
                                 expected="a passing report from 'medexport commission' naming this bundle", fix=fix)
    path, report = covering[-1]
    verify_report(report, path)
    entry = next(b for b in report["bundles"] if b.get("sha256") == sha256)
    if entry.get("verdict") != "pass":
        failed = "; ".join(c["name"] for c in entry.get("checks", []) if not c.get("passed"))[:300]
        raise ConfigurationError(f"{name}: its latest commissioning report {path.name} failed ({failed or 'no checks'})",
                                 expected="a passing report", fix=f"fix what failed, then {fix}")
    now, then = runtime_versions(), report.get("machine", {}).get("runtime", {})
    changed = sorted(k for k in now if then.get(k) != now[k])
    if changed:
        what = ", ".join(f"{k} {then.get(k)} -> {now[k]}" for k in changed)
        raise ConfigurationError(f"{name}: commissioned in {path.name} with other runtime versions ({what})",
                                 expected="the runtime versions the bundle was commissioned with", fix=fix)
    return path
