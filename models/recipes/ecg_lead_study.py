"""Does the ECG rhythm answer depend on the lead? AF calls per limb lead and with the default lead choice.

    python -m medexport.models.recipes.ecg_lead_study --bundle BUNDLE [--extra FOLDER] [--json OUT]

Torch-free: runs a built ``ecg-rhythm`` bundle through the engine, exactly as a clinic would.
Data (none of it trained on; the shipped model saw only the 300 CinC 2017 records):
- CinC 2021 sample: 50 twelve-lead records, 500 Hz, 10 s; AF = SNOMED 164889003, flutter 164890007.
- MIT-BIH 100: 2 leads (MLII, V5), 360 Hz, cut into 30-s windows; sinus rhythm (specificity only).
- PTB s0010: 15 leads, 1000 Hz, MI in sinus rhythm (specificity only).
- ``--extra FOLDER``: any folder of records with AF labels (WFDB ``# Dx:`` SNOMED codes, or a
  ``labels.csv`` of ``record,label`` with label AF / af / A / 1 for AF, anything else for not AF),
  e.g. 30-s windows of a two-lead Holter: the data the shared folder lacks for AF sensitivity.
For each limb lead and for the default choice: AF sensitivity and specificity with Wilson 95 % CIs.
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from medexport.engine import open_bundle
from medexport.engine.errors import InvalidInputError
from medexport.engine.io.ecg import normalise_lead, read_ecg

from ..data import shared_data
from .ecg_shift import proportion as rate  # k of n with a Wilson 95 % CI

LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
DEFAULT = "default"
AF_CODES = {"164889003", "164890007"}  # atrial fibrillation, atrial flutter
PAC = "284470004"
AF_WORDS = {"af", "a", "1", "afib", "atrial fibrillation"}


def dx_codes(record) -> set:
    dx = next((c.split(":", 1)[1] for c in record.meta.get("comments", ()) if c.startswith("Dx")), "")
    return {c.strip() for c in dx.split(",") if c.strip()}


def lead_names(record) -> dict:
    """Standard lead name -> the record's own spelling (PTB writes 'i', 'avr')."""
    return {normalise_lead(n): n for n in record.leads}


def calls(model, source, record) -> dict:
    """Label per limb lead present and for the default choice (plus which leads decided and warnings)."""
    names = lead_names(record)
    out = {}
    for std in LIMB:
        if std in names:
            out[std] = _label(model, source, lead=names[std])
    out[DEFAULT] = _label(model, source)
    return out


def _label(model, source, **kw) -> dict:
    try:
        r = model.predict(source, **kw)
    except InvalidInputError as exc:  # too few beats in that lead: no answer is not an AF call
        return {"label": "no answer", "why": exc.what, "leads": [], "warnings": []}
    return {"label": r.label, "leads": list(r.leads), "warnings": [w.code for w in r.warnings]}


def cinc2021(model) -> list[dict]:
    rows = []
    for h in sorted((shared_data() / "ecg" / "cinc2021-12lead").glob("*.hea")):
        r = read_ecg(h)
        codes = dx_codes(r)
        rows.append({"source": "cinc2021", "record": h.stem, "af": bool(codes & AF_CODES), "pac": PAC in codes,
                     "calls": calls(model, str(h), r)})
    return rows


def mitdb_windows(model, seconds: float = 30.0) -> list[dict]:
    """Record 100 cut into 30-s two-lead windows, each written as a CSV the engine reads."""
    r = read_ecg(shared_data() / "ecg" / "mitdb" / "100.hea")
    n = int(seconds * r.fs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, start in enumerate(range(0, r.signals.shape[1] - n + 1, n)):
            path = Path(tmp) / f"100_{i:03d}.csv"
            body = "\n".join(",".join(f"{v:.4f}" for v in row) for row in r.signals[:, start:start + n].T)
            path.write_text(f"# fs={r.fs:g}\n{','.join(r.leads)}\n{body}\n")
            labels = {lead: _label(model, str(path), lead=lead) for lead in r.leads} | {DEFAULT: _label(model, str(path))}
            rows.append({"source": "mitdb100", "record": path.stem, "af": False, "pac": False, "calls": labels})
    return rows


def ptb(model) -> list[dict]:
    path = shared_data() / "ecg" / "ptbdb" / "s0010_re.hea"
    r = read_ecg(path)
    return [{"source": "ptb", "record": "s0010_re", "af": False, "pac": False, "calls": calls(model, str(path), r)}]


def extra(model, folder: Path) -> list[dict]:
    table = {}
    if (folder / "labels.csv").is_file():
        with open(folder / "labels.csv") as fh:
            table = {row[0]: row[1].strip().lower() in AF_WORDS for row in csv.reader(fh) if len(row) >= 2}
    rows = []
    for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".hea", ".dcm", ".xml", ".csv") and p.name != "labels.csv"):
        r = read_ecg(f)
        af = table[f.stem] if f.stem in table else bool(dx_codes(r) & AF_CODES)
        rows.append({"source": folder.name, "record": f.stem, "af": af, "pac": PAC in dx_codes(r),
                     "calls": calls(model, str(f), r)})
    return rows


TRANSFORMS = {"x0.15 (lead-I amplitude)": 0.15, "inverted": -1.0, "inverted x0.15": -0.15}


def invariance(model) -> dict:
    """Lead II of each CinC 2021 record scaled and inverted: does the label stay? (amplitude and polarity)"""
    out = {name: 0 for name in TRANSFORMS}
    records = sorted((shared_data() / "ecg" / "cinc2021-12lead").glob("*.hea"))
    for h in records:
        r = read_ecg(h)
        signal, _ = r.lead("II")
        base = model.predict(signal, fs=r.fs).label
        for name, factor in TRANSFORMS.items():
            out[name] += model.predict(signal * np.float32(factor), fs=r.fs).label == base
    return {name: rate(k, len(records)) for name, k in out.items()}


def summarise(rows: list[dict]) -> dict:
    """Per lead (limb leads, MIT-BIH's own leads, default): sensitivity and specificity with Wilson CIs."""
    keys = [k for k in (*LIMB, "MLII", "V5", DEFAULT) if any(k in row["calls"] for row in rows)]
    out = {}
    for key in keys:
        have = [row for row in rows if key in row["calls"]]
        pos = [row for row in have if row["af"]]
        neg = [row for row in have if not row["af"]]
        called = lambda row: row["calls"][key]["label"] == "af"  # noqa: E731
        out[key] = {"sensitivity": rate(sum(map(called, pos)), len(pos)),
                    "specificity": rate(sum(not called(row) for row in neg), len(neg)),
                    "specificity_without_pac": rate(sum(not called(row) for row in neg if not row["pac"]),
                                                    sum(not row["pac"] for row in neg)),
                    "called_noisy": sum(row["calls"][key]["label"] == "noisy" for row in have),
                    "no_answer": sum(row["calls"][key]["label"] == "no answer" for row in have),
                    "low_quality_warnings": sum("low_signal_quality" in row["calls"][key]["warnings"] for row in have)}
    return out


def agreement(rows: list[dict]) -> dict:
    """Share of records whose label on each limb lead equals the default choice's label."""
    out = {}
    for key in LIMB:
        have = [row for row in rows if key in row["calls"]]
        same = sum(row["calls"][key]["label"] == row["calls"][DEFAULT]["label"] for row in have)
        out[key] = rate(same, len(have))
    return out


def deciding_leads(rows: list[dict]) -> dict:
    counts: dict = {}
    for row in rows:
        for lead in row["calls"][DEFAULT]["leads"]:
            counts[lead] = counts.get(lead, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def fmt(r: dict) -> str:
    if not r["n"]:
        return "n/a (0 cases)"
    return f"{r['value']:.2f} ({r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}; {r['k']}/{r['n']})"


def table(summary: dict) -> str:
    lines = ["| lead | AF sensitivity | specificity | specificity, no PACs | called noisy | no answer | low-quality warnings |",
             "|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        lines.append(f"| {key} | {fmt(s['sensitivity'])} | {fmt(s['specificity'])} | {fmt(s['specificity_without_pac'])} "
                     f"| {s['called_noisy']} | {s['no_answer']} | {s['low_quality_warnings']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="a built ecg-rhythm bundle (medexport build ecg-rhythm ...)")
    parser.add_argument("--extra", type=Path, action="append", default=[], help="a folder of AF-labelled records")
    parser.add_argument("--json", type=Path, help="write every call and the summaries here")
    args = parser.parse_args()
    with open_bundle(args.bundle) as model:
        groups = {"cinc2021": cinc2021(model), "mitdb100": mitdb_windows(model), "ptb": ptb(model)}
        for folder in args.extra:
            groups[folder.name] = extra(model, folder)
        inv = invariance(model)
    result = {}
    for name, rows in groups.items():
        result[name] = {"summary": summarise(rows), "agreement_with_default": agreement(rows),
                        "deciding_leads": deciding_leads(rows), "af_records": sum(r["af"] for r in rows),
                        "records": len(rows)}
        print(f"\n## {name}: {len(rows)} records/windows, {result[name]['af_records']} AF\n")
        print(table(result[name]["summary"]))
        print("deciding leads (default):", result[name]["deciding_leads"])
        print("agreement of each limb lead with the default:",
              {k: fmt(v) for k, v in result[name]["agreement_with_default"].items() if v["n"]})
    print("\nlabel unchanged when lead II is transformed (CinC 2021):", {k: fmt(v) for k, v in inv.items()})
    result["invariance_lead_ii"] = inv
    if args.json:
        args.json.write_text(json.dumps({"results": result, "calls": groups}, indent=1))


if __name__ == "__main__":
    main()
