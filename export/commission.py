"""``medexport commission``: does this model, on this machine, do what its bundle says?

One report per run (``commissioning-<UTC time>.json`` and ``.pdf``): the machine, then per bundle
its identity and signature, each artifact's golden replay against the float source model (also
from several threads: engine/selftest.py), the artifact ``auto`` picks here and why, speed
(p50 / p95 per artifact on the golden inputs and on the clinic's own studies, with the share
flagged outside intended use / out of distribution), the build's validation and robustness
tables with their CIs, a pass / fail per check and one verdict. It names the previous report in
the folder by its SHA-256 and lists what changed since. engine/commissioning.py reads it back.
"""
from __future__ import annotations

import base64
import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medexport.engine.atomic import write_new
from medexport.engine.commissioning import SCHEMA, canonical, read_reports, runtime_versions
from medexport.engine.errors import ConfigurationError, MedError

SPEED_CHANGE = 0.20  # a p50 slower or faster than the previous report by more than this is a change...
# ...unless the two runs' block medians overlap: the timings are split into SPEED_BLOCKS blocks in the
# order they ran, and a shift the machine's own jitter within one run can explain is not a change
# (two identical runs on 2 loaded cores differed by up to 17 % in p50; docs/commissioning.md)
SPEED_BLOCKS = 5
FLAG_CHANGE = 0.05  # a flag share that moved by more than this (absolute) is a change
FLAGS = ("outside_intended_use", "out_of_distribution")
GOLDEN_SAMPLES = 200  # timed golden passes per artifact (the golden inputs repeated), SPEED_BLOCKS blocks


# -- studies ------------------------------------------------------------------------------------
def studies_in(folder, kind: str) -> list:
    """The studies of ``kind`` (image | ecg) in ``folder``, as ``predict`` finds them."""
    from medexport.engine.studies import open_paths

    found, _ = open_paths([folder])
    return [s for s in found if s.kind == kind]


def run_studies(model, studies: list) -> tuple[list, object]:
    """[(study, result or None, error or None)] in order, through engine/pipeline.py, and its BatchStats
    (a served model: one request per study, batched by its server)."""
    from medexport.engine.pipeline import BatchStats, run

    stats = BatchStats()
    rows = list(run(model, studies, lambda s: model.prepare(s.path, **s.predict_options),
                    lambda s: model.predict(s.path, **s.predict_options), stats=stats))
    return rows, stats


def percentiles(ms: list) -> dict:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def timed(ms: list) -> dict:
    """p50 / p95 and the measured noise: the medians of SPEED_BLOCKS consecutive blocks of the timings
    (``block_p50_ms``, as they ran) and their spread relative to the p50 (``noise``)."""
    out = percentiles(ms)
    if len(ms) >= 2 * SPEED_BLOCKS:
        blocks = [round(float(np.median(b)), 3) for b in np.array_split(np.asarray(ms, float), SPEED_BLOCKS)]
        out.update(block_p50_ms=blocks, noise=round((max(blocks) - min(blocks)) / out["p50_ms"], 3))
    return out


def speed_change(before: dict, now: dict) -> tuple[bool, str] | None:
    """None when the p50 moved by SPEED_CHANGE or less; else (a change?, what moved and the noise measured).
    Beyond SPEED_CHANGE it is a change unless the block medians of the two runs overlap (within noise)."""
    x, y = before.get("p50_ms"), now.get("p50_ms")
    if not x or not y or abs(y / x - 1) <= SPEED_CHANGE:
        return None
    a, b = before.get("block_p50_ms"), now.get("block_p50_ms")
    overlap = bool(a and b and min(b) <= max(a) and min(a) <= max(b))
    noise = (f"block medians {min(a):.2f}-{max(a):.2f} then {min(b):.2f}-{max(b):.2f} ms" if a and b
             else "noise not measured in both runs")
    return not overlap, (f"{x:.2f} -> {y:.2f} ms ({100 * (y / x - 1):+.0f} %, beyond {100 * SPEED_CHANGE:.0f} %; "
                         f"{noise}{': within the noise' if overlap else ''})")


def flag_shares(results: list) -> dict:
    """Share of results carrying each flag (of the results that came back)."""
    n = max(len(results), 1)
    return {code: round(sum(any(w.code == code for w in r.warnings) for r in results) / n, 4) for code in FLAGS}


# -- the machine ----------------------------------------------------------------------------------
def machine() -> dict:
    from medexport.engine.backends import available_backends

    from .doctor import cpu_info, gpu_info

    return {"cpu": cpu_info(), "gpu": gpu_info(), "os": platform.platform(), "runtime": runtime_versions(),
            "backends": available_backends()}


# -- one bundle ---------------------------------------------------------------------------------------
def _check(name: str, passed: bool, detail: str) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def auto_choice(manifest) -> dict:
    """The artifact ``open_bundle`` picks here with backend and precision ``auto``, and why."""
    from medexport.engine.backends import available_backends, choose_artifact

    cls, artifact = choose_artifact(manifest)
    why = (f"runtimes here, best first: {', '.join(available_backends())}; the bundle's measured preference: "
           f"{', '.join(manifest.backend_preference) or 'none'}; {cls.name} tries precisions "
           f"{', '.join(cls.precision_preference)}; the bundle has {', '.join(a.key for a in manifest.artifacts)}")
    return {"artifact": artifact.key, "backend": cls.name, "precision": artifact.precision, "why": why}


def quoted_cis(data, prefix: str = "") -> list[str]:
    """'path: value [lo, hi]' for every {value, ci95} in a stored validation report."""
    if isinstance(data, dict):
        if "value" in data and "ci95" in data:
            lo, hi = data["ci95"]
            return [f"{prefix}: {data['value']} (95 % CI {lo} - {hi})"]
        return [line for k, v in data.items() for line in quoted_cis(v, f"{prefix}.{k}" if prefix else str(k))]
    return []


def evidence(manifest, root) -> dict:
    """The build's validation and robustness tables, per artifact, as the bundle states them."""
    from .guards import describe_report
    from .render import read_reports, robustness_lines

    reports = read_reports(manifest, root)
    out = {}
    for key, rep in reports.items():
        validation = rep.get("validation")
        out[key] = {"validation": describe_report(validation), "validation_passed": (validation or {}).get("passed"),
                    "cis": quoted_cis({k: v for k, v in (validation or {}).items() if k in ("source", "artifact",
                                                                                             "per_label")})}
    out["robustness"] = robustness_lines(reports)
    return out


def speed_on_golden(model) -> dict:
    """p50 / p95 of one golden input through the runtime and the screening (``Model.scores``)."""
    golden = np.load(model.path / model.manifest.golden)["inputs"]
    items = [golden[i:i + 1] for i in range(len(golden))]
    model.scores(items[0])  # warm-up
    ms = []
    for i in range(max(GOLDEN_SAMPLES, len(items))):
        t0 = time.perf_counter()
        model.scores(items[i % len(items)])
        ms.append((time.perf_counter() - t0) * 1e3)
    return timed(ms)


def speed_on_studies(model, studies: list) -> dict:
    """p50 / p95 end to end (read to result) on the clinic's studies, and the share flagged."""
    rows, stats = run_studies(model, studies)
    results = [r for _, r, e in rows if e is None]
    errors = [e for _, _, e in rows if e is not None]
    return {**timed([r.timings_ms["total"] for r in results]), "studies": len(rows), "refused": len(errors),
            "first_refusal": errors[0] if errors else None, "studies_per_s": round(stats.studies_per_s, 2),
            "flagged": flag_shares(results)}


def commission_bundle(path, *, trust=None, studies: list | None = None, threads: int | None = None) -> dict:
    """Everything the report says about one bundle, with its checks and verdict."""
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.open import open_bundle
    from medexport.engine.open import self_test_bundle
    from medexport.engine.trust_policy import check_signature

    entry = {"path": str(path), "checks": []}
    checks = entry["checks"]
    try:
        manifest, sha, root = read_manifest(path)
    except MedError as exc:
        checks.append(_check("identity: every file matches the manifest", False, str(exc)))
        entry["verdict"] = "fail"
        return entry
    calibration = manifest.provenance.get("calibration") or {}
    entry.update(model_id=manifest.model_id, version=manifest.model_version, sha256=sha,
                 parent=calibration.get("parent"), task=manifest.task)
    checks.append(_check("identity: every file matches the manifest", True, f"SHA-256 {sha}"))
    try:
        signature = check_signature(root, trust, allow_unsigned=True)
        entry["signature"] = signature.to_dict() | {"describe": signature.describe()}
        checks.append(_check("signature", True, signature.describe()))
    except MedError as exc:
        checks.append(_check("signature", False, str(exc)))
    try:
        entry["auto"] = auto_choice(manifest)
        checks.append(_check("an artifact runs here", True, f"auto picks {entry['auto']['artifact']}"))
    except MedError as exc:
        checks.append(_check("an artifact runs here", False, str(exc)))
    options = {"trust": trust, "allow_unsigned": True}
    entry["artifacts"] = {}
    for test in self_test_bundle(root, **options):
        key = f"{test.backend}-{test.precision}"
        art = entry["artifacts"].setdefault(key, {})
        art["golden"] = {"line": test.line(), "passed": test.passed, "skipped": test.skipped,
                         "measure": test.measure, "max_disagreement": test.max_disagreement,
                         "tolerance": test.tolerance, "thread_mismatches": test.thread_mismatches,
                         "threads": test.threads}
        if test.skipped:
            continue
        checks.append(_check(f"golden replay {key}", test.passed, f"{test.measure} {test.max_disagreement:.1e} (tolerance "
                              f"{test.tolerance:.0e}); {test.thread_mismatches} results differ from {test.threads} threads"))
        with open_bundle(root, backend=test.backend, precision=test.precision, threads=threads, **options) as model:
            art["speed_golden"] = speed_on_golden(model)
            if studies:
                art["speed_studies"] = speed_on_studies(model, [s for s in studies if s.kind == model.task.study_kind])
    entry["evidence"] = evidence(manifest, root)
    for key, ev in entry["evidence"].items():
        if isinstance(ev, dict) and ev["validation_passed"] is not None:
            checks.append(_check(f"build validation {key}", ev["validation_passed"], ev["validation"]))
    entry["verdict"] = "pass" if all(c["passed"] for c in checks) else "fail"
    return entry


# -- changes since the previous report -------------------------------------------------------------
def changes_since(previous: dict, report: dict, within_noise: list | None = None) -> list[str]:
    """What changed since ``previous``: runtime versions, bundles, speed beyond 20 % (and beyond the noise
    measured: the other speed shifts go to ``within_noise``), flag rates, verdicts."""
    out = []
    then, now = previous.get("machine", {}), report["machine"]
    for k in sorted(set(then.get("runtime", {})) | set(now["runtime"])):
        a, b = then.get("runtime", {}).get(k), now["runtime"].get(k)
        if a != b:
            out.append(f"runtime {k}: {a} -> {b}")
    if then.get("cpu", {}).get("name") != now["cpu"]["name"]:
        out.append(f"CPU: {then.get('cpu', {}).get('name')} -> {now['cpu']['name']}")
    old = {b.get("model_id", b["path"]): b for b in previous.get("bundles", [])}
    for b in report["bundles"]:
        name = b.get("model_id", b["path"])
        p = old.get(name)
        if p is None:
            out.append(f"{name}: new in this report")
            continue
        if p.get("sha256") != b.get("sha256"):
            out.append(f"{name}: bundle {p.get('version')} ({str(p.get('sha256'))[:12]}) -> {b.get('version')} "
                       f"({str(b.get('sha256'))[:12]})")
        if p.get("verdict") != b.get("verdict"):
            out.append(f"{name}: verdict {p.get('verdict')} -> {b.get('verdict')}")
        for key, art in b.get("artifacts", {}).items():
            before = p.get("artifacts", {}).get(key, {})
            for where in ("speed_golden", "speed_studies"):
                moved = speed_change(before.get(where, {}), art.get(where, {}))
                if moved is None:
                    continue
                line = f"{name} {key}: p50 on {where.split('_')[1]} {moved[1]}"
                if moved[0]:
                    out.append(line)
                elif within_noise is not None:
                    within_noise.append(line)
            for code in FLAGS:
                x = before.get("speed_studies", {}).get("flagged", {}).get(code)
                y = art.get("speed_studies", {}).get("flagged", {}).get(code)
                if x is not None and y is not None and abs(y - x) > FLAG_CHANGE:
                    out.append(f"{name} {key}: {code} share {x:.1%} -> {y:.1%}")
    gone = set(old) - {b.get("model_id", b["path"]) for b in report["bundles"]}
    out += [f"{name}: not in this report" for name in sorted(gone)]
    return out


# -- the report ---------------------------------------------------------------------------------------
def commission(bundles: list, out, *, studies=None, sign_key=None, trust=None, threads: int | None = None,
               emit=print) -> tuple[Path, Path, dict]:
    """Commission ``bundles`` here; write the JSON and PDF into ``out``; returns (json, pdf, report).

    ``studies``: {model_id or "*": folder} of the clinic's own (unlabelled) studies."""
    if not bundles:
        raise ConfigurationError("commission needs at least one bundle", fix="medexport commission BUNDLE... -o OUT/")
    key = _signing_key(sign_key)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    created = datetime.now(timezone.utc)
    report = {"schema": SCHEMA, "created": created.isoformat(timespec="seconds"), "machine": machine(),
              "threads": threads, "bundles": []}
    cache: dict = {}
    for path in bundles:
        emit(f"commissioning {path} ...")
        wanted = _studies_for(path, studies or {}, cache)
        report["bundles"].append(commission_bundle(path, trust=trust, studies=wanted, threads=threads))
    previous = read_reports(out)
    if previous:
        prev_path, prev = previous[-1]
        report["previous"] = {"file": prev_path.name, "sha256": hashlib.sha256(prev_path.read_bytes()).hexdigest(),
                              "created": prev.get("created")}
        report["speed_within_noise"] = []
        report["changes"] = changes_since(prev, report, report["speed_within_noise"])
    else:
        report["previous"], report["changes"] = None, []
    report["verdict"] = "pass" if report["bundles"] and all(b["verdict"] == "pass" for b in report["bundles"]) else "fail"
    report["seconds"] = round(time.perf_counter() - t0, 1)
    stem = f"commissioning-{created.strftime('%Y%m%dT%H%M%SZ')}"
    from .commission_pdf import report_lines
    from medexport.engine.pacs.textpdf import text_pdf

    pdf = write_new(out / f"{stem}.pdf", text_pdf(report_lines(report, key), title="medexport commissioning report"))
    report["pdf"] = {"file": pdf.name, "sha256": hashlib.sha256(pdf.read_bytes()).hexdigest()}
    if key is not None:
        report["signature"] = _sign(report, key)
    path = write_new(out / f"{stem}.json", json.dumps(report, indent=1, default=_plain).encode())
    return path, pdf, report


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _studies_for(path, studies: dict, cache: dict) -> list:
    """The studies given for this bundle (by model id, or for all with '*'), read once per folder."""
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.tasks import task_class

    if not studies:
        return []
    try:
        manifest, _, _ = read_manifest(path, verify=False)
    except MedError:
        return []
    folder = studies.get(manifest.model_id) or studies.get("*")
    if folder is None:
        return []
    kind = task_class(manifest.task).study_kind
    if (folder, kind) not in cache:
        cache[(folder, kind)] = studies_in(folder, kind)
    return cache[(folder, kind)]


def _signing_key(sign_key):
    """(private key, public TrustedKey) for ``--sign-key``, checked before any work; None without one."""
    if not sign_key:
        return None
    from cryptography.hazmat.primitives import serialization

    from medexport.engine.signing import signing_key

    public = signing_key(sign_key)
    return serialization.load_pem_private_key(Path(sign_key).read_bytes(), None), public


def _sign(report: dict, key) -> dict:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = key
    body = json.loads(json.dumps(report, default=_plain))  # exactly what is written and read back
    value = private.sign(canonical(body), ec.ECDSA(hashes.SHA256()))
    return {"signer": public.name, "fingerprint": public.fingerprint, "public_key_pem": public.pem.decode(),
            "algorithm": "ecdsa-sha256 over the report without 'signature', keys sorted, compact JSON",
            "value": base64.b64encode(value).decode()}
