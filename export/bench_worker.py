"""One benchmark row, measured in its own process (runtimes sharing a process slow each other).

    python -m medexport.export.bench_worker '{"bundle": ..., "backend": ..., "precision": ..., ...}'

Prints one JSON object: load times, batch-1 latency p50/p95, throughput at a batch size,
end-to-end time (file on disk -> result) on a study, and the task metric if data is given.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


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
    if cfg.get("data"):
        out["metric"] = _metric(model.scores, model.manifest, cfg["data"])
    model.close()
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
    result = bench_torch(cfg) if cfg.get("torch") else bench_bundle(cfg)
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
