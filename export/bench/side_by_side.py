"""``medexport bench``: every target side by side, in the shape users know from Ultralytics.

Each row is measured in its own process. Registered models are built for every
target x precision first (a failed build or validation is a row too, not a crash), and
torch eager FP32 gives the reference row. A served model (``triton://host:port/model``) is one
row measured end to end through its server: a study file in, the result back.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medexport.engine.bundle_read import read_manifest
from medexport.engine.errors import MedError, ValidationError
from medexport.engine.remote import is_remote

from ..build import BuildOptions, build

COLUMNS = ("model", "target", "precision", "status", "size_mb", "metric", "latency_p50_ms", "latency_p95_ms",
           "throughput", "batch", "e2e_p50_ms", "load_cold_s", "load_warm_s")


@dataclass
class Row:
    model: str
    target: str
    precision: str
    status: str
    size_mb: float | None = None
    values: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "precision": self.precision, "status": self.status,
                "size_mb": self.size_mb, **{k: self.values.get(k) for k in COLUMNS[5:]}}


SERVED = "triton"  # a served model's rows: target "triton:<backend on the server>"
SYNTAX_NAMES = ("uncompressed", "jpeg_baseline", "jpeg2000_lossless", "jpeg_ls", "rle")


def run_worker(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "medexport.export.bench.worker", json.dumps(cfg)],
                          capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError((proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout) else "no output")


def default_study(model_id: str, task: str) -> str | None:
    """A real study for end-to-end timing: the model's own demo study (a DICOM where there is
    one), else by study kind the RG1 chest radiograph (1955x1841 CR) or pydicom's 10-s 12-lead
    waveform."""
    from medexport.engine.tasks import task_class
    from medexport.models.data import pydicom_data

    from ..demo import demo_studies

    own = demo_studies().get(model_id, [])
    dicom = [s for s in own if s.endswith(".dcm")]
    if dicom or own:
        return (dicom or own)[0]
    if task_class(task).study_kind == "ecg":
        from pydicom.data import get_testdata_file

        return get_testdata_file("waveform_ecg.dcm")
    root = pydicom_data()
    return str(root / "RG1_UNCI.dcm") if root and (root / "RG1_UNCI.dcm").is_file() else None


def bench(items: list[str], targets: list[str], precisions: list[str], *, data: str | None = None,
          batch: int = 8, threads: int | None = None, study: str | None = None, syntaxes: bool = False,
          emit=print) -> list[Row]:
    """``syntaxes``: also time image bundles end to end per transfer syntax and on a folder of 100
    mixed-syntax radiographs (export/bench/worker.bench_syntaxes)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="medexport-bench-") as work:
        for item in items:
            if is_remote(item):
                if syntaxes or threads:
                    emit(f"[bench] {item}: --syntaxes and --threads apply to local bundles; the server chose its "
                         "threads, and its row is one study end to end")
                rows.append(_bench_served(item, data, batch, study, emit))
            elif Path(item).is_dir() or item.endswith(".zip"):
                rows += _bench_bundle(item, targets, precisions, data, batch, threads, study, emit, syntaxes)
            else:
                rows += _bench_model(item, Path(work), targets, precisions, data, batch, threads, study, emit,
                                     syntaxes)
    return rows


def _measure(row: Row, cfg: dict, emit) -> Row:
    emit(f"[bench] {row.model} {row.target} {row.precision} ...")
    try:
        row.values = run_worker(cfg)
    except Exception as exc:  # a runtime failing at run time is a result, not a crash
        row.status = f"failed to run: {exc}"
    return row


def _bench_bundle(path, targets, precisions, data, batch, threads, study, emit, syntaxes=False) -> list[Row]:
    manifest, _, root = read_manifest(path)
    study = study or default_study(manifest.model_id, manifest.task)
    rows = []
    for a in manifest.artifacts:
        if (targets and a.target not in targets) or (precisions and a.precision not in precisions):
            continue
        size = sum((root / p).stat().st_size for p in a.files.values()) / 1e6
        cfg = {"bundle": str(root), "backend": a.target, "precision": a.precision, "batch": batch,
               "threads": threads, "study": study, "data": data, "syntaxes": syntaxes}
        rows.append(_measure(Row(manifest.model_id, a.target, a.precision, "ok", size), cfg, emit))
    return rows


def _bench_served(url: str, data, batch: int, study, emit) -> Row:
    """One row for a served model: the server's artifact, its size, end-to-end latency and
    throughput with ``batch`` studies in flight (export/bench/worker.bench_served)."""
    from medexport.engine import open_bundle

    with open_bundle(url) as model:
        prov, stated = model.provenance, model.describe()
    study = study or default_study(prov.model_id, stated["manifest"].task)
    cfg = {"served": url, "batch": batch, "study": study, "data": data}
    row = Row(prov.model_id, f"{SERVED}:{prov.backend}", prov.precision, "ok", stated["sizes"][stated["artifact"].key] / 1e6)
    return _measure(row, cfg, emit)


def _bench_model(name, work: Path, targets, precisions, data, batch, threads, study, emit,
                 syntaxes=False) -> list[Row]:
    from medexport.models.data import default_data
    from medexport.models.registry import get_config

    config = get_config(name)
    study = study or default_study(config.name, config.task)
    calib = default_data(config, "calib")
    val_list = [data] if data else default_data(config, "val")
    torch_cfg = {"torch": True, "model": name, "batch": batch, "threads": threads, "study": study}
    rows = [_measure(Row(name, "torch-eager", "fp32", "ok"), torch_cfg, emit)]
    for target in targets:
        for precision in precisions:
            out = work / f"{name}-{target}-{precision}"
            # calibration studies for every precision: they also fit the OOD reference a shipped bundle has
            opts = BuildOptions(targets=[target], precisions=[precision], val=val_list, calib=calib)
            row = Row(name, target, precision, "ok")
            try:
                build(name, out, opts, emit=lambda m: None)
            except ValidationError as exc:
                row.status = "built, failed validation"
                emit(f"[bench] {name} {target} {precision}: {exc}")
                rows.append(row)
                continue
            except MedError as exc:
                row.status = "failed to build"
                emit(f"[bench] {name} {target} {precision}: {exc}")
                rows.append(row)
                continue
            rows += _bench_bundle(out, [target], [precision], val_list[0] if val_list else None, batch, threads,
                                  study, emit, syntaxes)
    return rows


def render(rows: list[Row], threads: int | None, study: str | None) -> str:
    w = max([12, *(len(r.target) + 1 for r in rows)])  # a served row's target is longer
    head = (f"{'model':<16} {'target':<{w}} {'prec':<5} {'status':<10} {'MB':>6} {'metric':>6} {'p50 ms':>8} "
            f"{'p95 ms':>8} {'items/s':>8} {'e2e ms':>8} {'cold s':>7} {'warm s':>7}")
    lines = [f"threads: {threads or os.cpu_count()} | latency at batch 1 | throughput at the batch shown | "
             f"e2e: file on disk -> result ({study or 'RG1_UNCI.dcm for images, waveform_ecg.dcm for ECG, an EM slice (9 tiles) for segmentation, the demo series of a volume model'}) | "
             "metric: AUROC, macro F1 (ECG) or Dice on the model's validation data", head, "-" * len(head)]
    if any(r.target.startswith(f"{SERVED}:") for r in rows):
        lines.insert(1, f"{SERVED}:<backend> rows: a served model through its server: p50/p95 and e2e = one study "
                        "file -> result (one request at a time), items/s = studies/s with the batch shown in flight, "
                        "warm s = connecting and asking for the model")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        v = r.values
        lines.append(f"{r.model:<16} {r.target:<{w}} {r.precision:<5} {r.status[:10]:<10} {fmt(r.size_mb, '6.2f'):>6} "
                     f"{fmt(v.get('metric'), '6.4f'):>6} {fmt(v.get('latency_p50_ms'), '8.2f'):>8} "
                     f"{fmt(v.get('latency_p95_ms'), '8.2f'):>8} "
                     f"{fmt(v.get('throughput'), '8.1f'):>8} {fmt(v.get('e2e_p50_ms'), '8.2f'):>8} "
                     f"{fmt(v.get('load_cold_s'), '7.2f'):>7} {fmt(v.get('load_warm_s'), '7.2f'):>7}")
    return "\n".join(lines + [""] + ratios(rows) + syntax_table(rows))


def syntax_table(rows: list[Row]) -> list[str]:
    """End to end per transfer syntax (RG1 CR, 1955 x 1841) and a folder of 100 mixed syntaxes,
    each as ms and as a ratio to raw batch-1 inference, where the rows measured it."""
    measured = [r for r in rows if r.values.get("infer_p50_ms")]
    if not measured:
        return []
    head = f"{'model':<16} {'target':<10} {'prec':<5} {'infer':>7} {'margin':>6} " + " ".join(f"{n:>26}" for n in SYNTAX_NAMES)
    out = ["", "end to end per transfer syntax (RG1 CR 1955 x 1841), ms: as the bundle decodes (x raw inference) / forced "
           "full / forced reduced; margin: the artifact's checked reduced decode (x its input, 0 = full); folder: 100 "
           "mixed-syntax files through engine/pipeline.py", head, "-" * len(head)]
    for r in measured:
        v = r.values
        cells = " ".join(f"{v[f'e2e_{n}_ms']:>6.1f}(x{v[f'e2e_{n}_ratio']:.2f})/{v[f'e2e_{n}_full_ms']:.0f}/"
                         f"{v[f'e2e_{n}_reduced_ms']:<4.0f}" for n in SYNTAX_NAMES)
        own = ", ".join(f"{n} x{v[f'e2e_{n}_own_ratio']:.2f}" for n in SYNTAX_NAMES if f"e2e_{n}_own_ratio" in v)
        out.append(f"{r.model:<16} {r.target:<10} {r.precision:<5} {v['infer_p50_ms']:>7.1f} "
                   f"{v.get('decode_margin', 0):>6} {cells}")
        out.append(f"{'':<16}   each study's total / its own inference (Result.timings_ms, median): {own}")
        for n in SYNTAX_NAMES:
            stages = ", ".join(f"{k} {ms:.1f}" for k, ms in v.get(f"e2e_{n}_stages_ms", {}).items())
            out.append(f"{'':<16}   {n}: {stages} ms; {v.get(f'e2e_{n}_decoded', '?')}")
        for mode, what in (("_serial", "one at a time"), ("", "2 workers"), ("_full", "2 workers, forced full decode"),
                           ("_j2k", "JPEG 2000 only, 2 workers")):
            out.append(f"{'':<16} folder, {what}: {v[f'folder{mode}_studies_per_s']:.1f} studies/s "
                       f"(x{v[f'folder{mode}_ratio']:.2f} of raw inference throughput; waiting "
                       f"{100 * v[f'folder{mode}_wait_share']:.0f} % of the time, read + preprocess "
                       f"{100 * v[f'folder{mode}_decode_share']:.0f} % of study time)")
    return out


def ratios(rows: list[Row]) -> list[str]:
    """The headline ratios, measured in this run."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = {(r.target, r.precision): r.values for r in rows if r.model == model and r.values}
        ref, ov8 = mine.get(("torch-eager", "fp32")), mine.get(("openvino", "int8"))
        if ref and ov8:
            out.append(f"{model}: OpenVINO INT8 vs torch eager FP32: throughput x{ov8['throughput'] / ref['throughput']:.2f}, "
                       f"batch-1 latency x{ref['latency_p50_ms'] / ov8['latency_p50_ms']:.2f} faster")
        for key, v in mine.items():  # only where one study is one inference (not tiles or many windows)
            if key[0] != "torch-eager" and not key[0].startswith(f"{SERVED}:") and v.get("e2e_p50_ms") and v.get("items_per_study", 1) == 1:
                out.append(f"{model} {key[0]} {key[1]}: end-to-end / raw engine = "
                           f"{v['e2e_p50_ms'] / v['latency_p50_ms']:.2f} ({v['e2e_p50_ms']:.1f} / {v['latency_p50_ms']:.1f} ms)")
        for key, v in mine.items():  # a served row beside the local row of the same artifact
            local = mine.get((key[0].split(":", 1)[-1], key[1])) if key[0].startswith(f"{SERVED}:") else None
            if local and local.get("e2e_p50_ms") and v.get("e2e_p50_ms"):
                out.append(f"{model} {key[1]}: end to end through the server / here = "
                           f"{v['e2e_p50_ms'] / local['e2e_p50_ms']:.2f} ({v['e2e_p50_ms']:.1f} / {local['e2e_p50_ms']:.1f} ms)")
    return out


def write(rows: list[Row], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = [r.as_dict() for r in rows]
    with open(folder / "bench.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(data)
    (folder / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    return [folder / "bench.csv", folder / "bench.json"]
