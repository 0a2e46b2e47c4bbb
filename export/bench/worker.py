"""One benchmark row, measured in its own process (runtimes sharing a process slow each other).

    python -m medexport.export.bench.worker '{"bundle": ..., "backend": ..., "precision": ..., ...}'

Prints one JSON object: load times, batch-1 latency p50/p95, throughput at a batch size,
end-to-end time (file on disk -> result) on a study, and the task metric if data is given; for a
served model (``"served": "triton://..."``) the same columns through its server.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

from ..reencode import jpeg_baseline_copy


def timed(fn, *, warmup: int = 5, min_iters: int = 20, min_seconds: float = 2.0) -> np.ndarray:
    """Per-call times in ms after warm-up: at least ``min_iters`` calls and ``min_seconds``."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 2000:
            break
    return np.array(times)


def summary(lat_ms: np.ndarray, batch_ms: np.ndarray, batch: int) -> dict:
    return {"latency_p50_ms": float(np.median(lat_ms)), "latency_p95_ms": float(np.percentile(lat_ms, 95)),
            "throughput": float(batch * 1e3 / np.median(batch_ms)), "iterations": int(len(lat_ms))}


def bench_bundle(cfg: dict) -> dict:
    from medexport.engine import open_bundle

    cache = tempfile.mkdtemp(prefix="medexport-bench-cache-")
    kw = dict(backend=cfg["backend"], precision=cfg["precision"], threads=cfg.get("threads"), cache_dir=cache)
    t0 = time.perf_counter()
    model = open_bundle(cfg["bundle"], **kw)
    cold = time.perf_counter() - t0
    model.close()
    t0 = time.perf_counter()
    model = open_bundle(cfg["bundle"], **kw)
    warm = time.perf_counter() - t0
    shape = model.manifest.input.shape[1:]
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape)).astype(np.float32)
    batch = cfg["batch"] if model.manifest.input.shape[0] < 0 else 1
    many = rng.standard_normal((batch, *shape)).astype(np.float32)
    lat = timed(lambda: model.infer(one))
    thr = timed(lambda: model.infer(many), min_iters=10)
    out = {"load_cold_s": cold, "load_warm_s": warm, **summary(lat, thr, batch), "batch": batch}
    if cfg.get("study"):
        e2e = timed(lambda: model.predict(cfg["study"]), min_iters=10)
        out["e2e_p50_ms"] = float(np.median(e2e))
        options = model.task.options()
        feeds, _ = model.task.preprocess(model.task.read(cfg["study"], options), options)
        out["items_per_study"] = int(len(next(iter(feeds.values()))))  # tiles or beat windows per study
    if cfg.get("syntaxes") and model.task.study_kind == "image" and model.manifest.preprocess.kind == "image":
        out.update(bench_syntaxes(model, cfg.get("folder_size", 100)))
    if cfg.get("data"):
        out["metric"] = _metric(model.scores, model.manifest, cfg["data"])
    model.close()
    return out


def bench_served(cfg: dict) -> dict:
    """A served model end to end: the study file sent, the result back, one request at a time
    (latency), and studies/s with ``batch`` requests in flight (Triton batches them)."""
    from concurrent.futures import ThreadPoolExecutor

    from medexport.engine import open_bundle

    t0 = time.perf_counter()
    model = open_bundle(cfg["served"])
    connect = time.perf_counter() - t0
    study, batch = cfg.get("study"), max(1, int(cfg["batch"]))
    if study:
        one = lambda: model.predict(study)  # noqa: E731
    else:  # no study: a preprocessed random input, the runtime pass and the round trip only
        x = np.random.default_rng(0).standard_normal((1, *model.manifest.input.shape[1:])).astype(np.float32)
        one = lambda: model.infer(x)  # noqa: E731
    lat = timed(one, min_iters=10)
    n = max(4 * batch, 16)
    with ThreadPoolExecutor(batch) as pool:
        list(pool.map(lambda _: one(), range(batch)))  # each thread's own connection
        t0 = time.perf_counter()
        list(pool.map(lambda _: one(), range(n)))
        elapsed = time.perf_counter() - t0
    out = {"load_cold_s": None, "load_warm_s": connect, "latency_p50_ms": float(np.median(lat)),
           "latency_p95_ms": float(np.percentile(lat, 95)), "throughput": n / elapsed, "batch": batch,
           "iterations": int(len(lat))}
    if study:
        out["e2e_p50_ms"] = out["latency_p50_ms"]
    if cfg.get("data"):
        out["metric"] = _metric(lambda x: np.concatenate([model.scores(x[i:i + 16]) for i in range(0, len(x), 16)]),
                                model.manifest, cfg["data"])
    model.close()
    return out


SYNTAXES = ("uncompressed", "jpeg_baseline", "jpeg2000_lossless", "jpeg_ls", "rle")


def syntax_studies(folder) -> dict:
    """RG1 (1955 x 1841 CR) in each transfer syntax: pydicom-data's own files where it has them,
    encoded here otherwise (JPEG-LS with pyjpegls, RLE with pydicom, 8-bit baseline JPEG with Pillow)."""
    from pathlib import Path

    import pydicom
    from pydicom.uid import JPEGLSLossless, RLELossless

    from medexport.models.data import pydicom_data

    root, folder = pydicom_data(), Path(folder)
    out = {"uncompressed": str(root / "RG1_UNCR.dcm"), "jpeg2000_lossless": str(root / "RG1_J2KR.dcm")}
    for name, uid in (("jpeg_ls", JPEGLSLossless), ("rle", RLELossless)):
        ds = pydicom.dcmread(root / "RG1_UNCR.dcm")
        ds.compress(uid)
        ds.save_as(folder / f"RG1_{name}.dcm")
        out[name] = str(folder / f"RG1_{name}.dcm")
    jpeg_baseline_copy(root / "RG1_UNCR.dcm", folder / "RG1_jpeg_baseline.dcm")
    out["jpeg_baseline"] = str(folder / "RG1_jpeg_baseline.dcm")
    return out


DECODE_MODES = (("", None), ("_full", False), ("_reduced", True))  # the bundle's own choice; forced full; forced reduced


def bench_syntaxes(model, folder_size: int = 100) -> dict:
    """End-to-end ms per transfer syntax (file on disk -> result) and the throughput of a folder
    of ``folder_size`` mixed-syntax radiographs through engine/pipeline.py, each with its ratio to
    raw inference (batch-1 latency, raw throughput = 1000 / latency). Decoding as the artifact's
    build check allows (``decode_margin``), and forced full / reduced for comparison."""
    import shutil
    from pathlib import Path

    from medexport.engine.io.dicom import reduced_resolution
    from medexport.engine.pipeline import BatchStats, predicted

    one = np.zeros((1, *model.manifest.input.shape[1:]), np.float32)
    infer = float(np.median(timed(lambda: model.infer(one))))
    out = {"infer_p50_ms": infer, "decode_margin": model.artifact.decode_margin}
    with tempfile.TemporaryDirectory(prefix="medexport-bench-syntax-") as work:
        files = syntax_studies(work)
        for name in SYNTAXES:
            for mode, enabled in DECODE_MODES:
                with reduced_resolution(enabled):
                    runs = [model.predict(files[name]) for _ in range(2)]  # warm-up
                    e2e = timed(lambda: runs.append(model.predict(files[name])), warmup=0, min_iters=15,
                                min_seconds=1.5)
                out[f"e2e_{name}{mode}_ms"] = float(np.median(e2e))
                out[f"e2e_{name}{mode}_ratio"] = float(np.median(e2e)) / infer
                if not mode:  # where the time goes, and how it was decoded
                    out[f"e2e_{name}_stages_ms"] = {k: round(float(np.median([r.timings_ms[k] for r in runs])), 2)
                                                    for k in runs[-1].timings_ms}
                    # the measure: each study's total over its own inference (r.timings_ms), so a
                    # machine that slows down between the raw-inference and the study timings does not count
                    out[f"e2e_{name}_own_ratio"] = float(np.median([r.timings_ms["total"] / r.timings_ms["infer"]
                                                                    for r in runs]))
                    out[f"e2e_{name}_decoded"] = runs[-1].input_meta.get("decoded", "full")
        folders = {"": SYNTAXES, "_j2k": ("jpeg2000_lossless",)}  # mixed; JPEG 2000 only (what most PACS store)
        paths = {}
        for key, names in folders.items():
            folder = Path(work) / f"folder{key}"
            folder.mkdir()
            for i in range(folder_size):
                name = names[i % len(names)]
                shutil.copyfile(files[name], folder / f"{i:03d}_{name}.dcm")
            paths[key] = sorted(str(p) for p in folder.iterdir())
        for mode, enabled, workers in (("_serial", None, 1), ("", None, None), ("_full", False, None),
                                       ("_j2k", None, None)):
            stats = BatchStats()

            def prepare(path, enabled=enabled):
                with reduced_resolution(enabled):  # worker threads start from the default context
                    return model.prepare(path)

            for _, _, error in predicted(model, paths["_j2k" if mode == "_j2k" else ""], prepare, stats=stats,
                                         workers=workers):
                if error:
                    raise RuntimeError(error)
            out.update({f"folder{mode}_studies_per_s": stats.studies_per_s, f"folder{mode}_wait_share": stats.wait_share,
                        f"folder{mode}_decode_share": stats.decode_share(),
                        f"folder{mode}_ratio": stats.studies_per_s * infer / 1e3})
    return out


def bench_torch(cfg: dict) -> dict:
    import torch

    from medexport.engine.io import read_image
    from medexport.engine.manifest import ImagePreprocess
    from medexport.engine.preprocess import image_to_tensor
    from medexport.models.registry import create_model, get_config

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = cfg.get("device", "cpu")
    config = get_config(cfg["model"])
    model = create_model(cfg["model"]).to(device)
    one = torch.randn(1, *config.input_shape, device=device)
    many = torch.randn(cfg["batch"], *config.input_shape, device=device)

    def run(x):
        with torch.inference_mode():
            out = model(x.to(device))
            if device != "cpu":
                torch.cuda.synchronize()
            return out

    lat = timed(lambda: run(one))
    thr = timed(lambda: run(many), min_iters=10)
    out = {"load_cold_s": None, "load_warm_s": None, **summary(lat, thr, cfg["batch"]), "batch": cfg["batch"]}
    if cfg.get("study") and config.preprocess.get("kind", "image") == "image":  # torch path: one resized image
        spec = ImagePreprocess(**config.preprocess)

        def e2e():
            tensor, _ = image_to_tensor(read_image(cfg["study"], frame=0).pixels, spec)
            return torch.softmax(run(torch.from_numpy(tensor)), 1)

        out["e2e_p50_ms"] = float(np.median(timed(e2e, min_iters=10)))
    return out


def _metric(scores_fn, manifest, data) -> float | None:
    """The task's guarded metric (AUROC, macro F1 or Dice) of this artifact on labelled data."""
    from medexport.engine.tasks import task_class
    from medexport.export.datasets import load_dataset
    from medexport.export.guards import guard_class

    ds = load_dataset(data, manifest.preprocess, labels=manifest.labels)
    if ds.labels is None:
        return None
    guard = guard_class(task_class(manifest.task), manifest.postprocess)(manifest.labels, manifest.postprocess,
                                                                         manifest.preprocess)
    return guard.value(ds, scores_fn(ds.inputs))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.get("threads") or os.cpu_count()))
    result = bench_torch(cfg) if cfg.get("torch") else bench_served(cfg) if cfg.get("served") else bench_bundle(cfg)
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
