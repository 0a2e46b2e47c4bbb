"""The commissioning report as a document a clinic files: the lines engine/pacs/textpdf.py draws."""
from __future__ import annotations


def _mark(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def machine_lines(m: dict) -> list[str]:
    cpu, gpus = m["cpu"], m["gpu"].get("gpus", [])
    runtime = ", ".join(f"{k} {v}" for k, v in m["runtime"].items() if v)
    return ["1. The machine",
            f"   CPU: {cpu['name']} ({cpu['cores']} logical cores; instruction sets {', '.join(cpu['isa']) or 'no AVX2'})",
            "   GPU: " + ("; ".join(f"{g['name']} (driver {g['driver']})" for g in gpus) if gpus else "none found"),
            f"   Operating system: {m['os']}", f"   Runtime and medexport versions: {runtime}",
            f"   Runtimes that run here: {', '.join(m['backends']) or 'none'}", ""]


def speed_text(s: dict | None) -> str:
    if not s or not s.get("n"):
        return "-"
    noise = f"; noise {100 * s['noise']:.0f} % (spread of 5 block medians)" if s.get("noise") is not None else ""
    return f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms (n={s['n']}{noise})"


def bundle_lines(n: int, b: dict) -> list[str]:
    lines = [f"2.{n} Bundle {b.get('model_id', b['path'])} {b.get('version', '')}: {b['verdict'].upper()}",
             f"   Folder: {b['path']}"]
    if "sha256" in b:
        lines.append(f"   SHA-256 (manifest): {b['sha256']}")
    if b.get("parent"):
        p = b["parent"]
        lines.append(f"   Site-calibrated from {p.get('model_id')} {p.get('model_version')} "
                     f"(SHA-256 {str(p.get('sha256'))[:16]}...)")
    if b.get("signature"):
        lines.append(f"   Signature: {b['signature']['describe']}")
    if b.get("auto"):
        lines.append(f"   Auto picks here: {b['auto']['artifact']} ({b['auto']['why']})")
    for key, art in b.get("artifacts", {}).items():
        g = art["golden"]
        lines.append(f"   Artifact {key}: " + (f"not run here ({g['skipped']})" if g["skipped"] else
                     f"golden replay {_mark(g['passed'])}: {g['measure']} {g['max_disagreement']:.2e} against the "
                     f"float source (tolerance {g['tolerance']:.0e}); {g['threads']} threads: "
                     f"{g['thread_mismatches']} results differ"))
        if art.get("speed_golden"):
            lines.append(f"      speed on the golden inputs: {speed_text(art['speed_golden'])}")
        s = art.get("speed_studies")
        if s:
            flags = ", ".join(f"{k} {v:.1%}" for k, v in s["flagged"].items())
            lines.append(f"      speed end to end on {s['studies']} site studies: {speed_text(s)}; flagged: {flags}; "
                         f"refused {s['refused']}")
    ev = b.get("evidence", {})
    for key, e in ev.items():
        if key == "robustness" or not isinstance(e, dict):
            continue
        lines.append(f"   Build validation {key}: {e['validation']}")
        lines += [f"      {c}" for c in e["cis"]]
    robustness = ev.get("robustness") or []
    lines += [f"   {line}" for line in robustness if line]
    lines.append("   Checks:")
    lines += [f"      {_mark(c['passed'])}  {c['name']}: {c['detail']}" for c in b["checks"]]
    return lines + [""]


def report_lines(report: dict, key=None) -> list[str]:
    """The whole report, top to bottom: verdict first, then machine, bundles, changes, signature."""
    prev = report.get("previous")
    lines = ["medexport commissioning report", "",
             f"Overall verdict: {report['verdict'].upper()}   ({sum(b['verdict'] == 'pass' for b in report['bundles'])} "
             f"of {len(report['bundles'])} bundles pass)",
             f"Made {report['created']} UTC in {report.get('seconds', 0):.0f} s"
             + (f"; runtime threads limited to {report['threads']}" if report.get("threads") else ""),
             "Previous report: " + (f"{prev['file']} (SHA-256 {prev['sha256']})" if prev else "none in this folder"), ""]
    lines += machine_lines(report["machine"])
    lines += ["2. The bundles"]
    for n, b in enumerate(report["bundles"], 1):
        lines += bundle_lines(n, b)
    changes = report.get("changes") or []
    lines += ["3. What changed since the previous report"]
    lines += [f"   - {c}" for c in changes] or ["   nothing" if prev else "   (first report in this folder)"]
    lines += [f"   - not a change, {c}" for c in report.get("speed_within_noise") or []]
    lines += ["", "4. Signature"]
    lines.append(f"   The JSON report is signed by {key[1].name} (key {key[1].fingerprint[:16]})" if key
                 else "   Not signed (no --sign-key).")
    lines += ["", "Checked by: ____________________   Date: __________   Signature: ____________________"]
    return lines
