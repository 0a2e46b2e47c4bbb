"""On-target self-tests: the one loop the CLI, the viewer, the demo and the build all run.

Each artifact's golden inputs are scored on this machine and compared, by the task's own
measure, with the float source model's scores stored at build time (not with the artifact's
own earlier outputs: that would hide a bad artifact). The same inputs scored from several
threads at once must give the same scores.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .compare import max_abs_diff
from .errors import BundleError


@dataclass(frozen=True)
class SelfTest:
    model_id: str
    backend: str
    precision: str
    max_disagreement: float = float("nan")  # the task's measure against the source model, worst golden input
    tolerance: float = float("nan")  # the artifact's stated tolerance for that measure
    measure: str = ""
    worst_item: str = ""
    n: int = 0
    ms_per_item: float = float("nan")
    drift: float | None = None  # largest |score difference| against this artifact's build-time outputs
    thread_mismatches: int = 0  # golden results that differ when threads share the model
    threads: int = 1
    skipped: str | None = None  # why this artifact was not run here (its runtime is missing)
    server: str = ""  # the triton:// address the golden inputs went through ("" : run here)

    @property
    def passed(self) -> bool:
        return self.skipped is None and self.max_disagreement <= self.tolerance and self.thread_mismatches == 0

    def line(self) -> str:
        where = f"{self.model_id} [{self.backend} {self.precision}]" + (f" served at {self.server}" if self.server else "")
        if self.skipped:
            return f"SKIP {where} {self.skipped}"
        drift = "" if self.drift is None else f", drift from build time {self.drift:.1e}"
        threads = "" if self.threads < 2 else f", {self.threads} threads: {self.thread_mismatches} results differ"
        return (f"{'PASS' if self.passed else 'FAIL'} {where} {self.n} golden inputs vs the source model: "
                f"{self.measure} {self.max_disagreement:.2e} (tolerance {self.tolerance:.0e}, worst "
                f"{self.worst_item}){drift}{threads}, {self.ms_per_item:.2f} ms/item")


def run_self_test(model, threads: int = 4, golden: dict | None = None) -> SelfTest:
    """Self-test one opened runner (``Model.self_test``, ``RemoteModel.self_test``); ``golden``: the
    bundle's golden.npz contents when they do not come from ``model.path``. A served model batches
    concurrent requests together, so there its threaded answers need only agree within the tolerance."""
    manifest = model.manifest
    if golden is None:
        if not manifest.golden:
            raise BundleError(f"bundle {manifest.model_id} carries no golden inputs", fix="rebuild the bundle")
        golden = np.load(model.path / manifest.golden)
    if "scores_source" not in golden:
        raise BundleError("golden.npz has no source-model reference scores", fix="rebuild the bundle")
    inputs, reference = golden["inputs"], golden["scores_source"]
    names = golden["names"].tolist() if "names" in golden else [f"#{i}" for i in range(len(inputs))]
    items = [inputs[i:i + 1] for i in range(len(inputs))]
    model.scores(items[0])  # warm-up
    start = time.perf_counter()
    alone = [model.scores(x) for x in items]
    ms = (time.perf_counter() - start) * 1e3 / len(items)
    mismatches = 0
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            together = list(pool.map(model.scores, items * 2))
        if model.batches_locally:
            mismatches = sum(not np.array_equal(a, b) for a, b in zip(alone * 2, together))
        else:
            apart = model.task.disagreement(np.concatenate(alone * 2), np.concatenate(together))
            mismatches = int((apart > model.artifact.tolerance).sum())
    scores = np.concatenate(alone)
    per_item = model.task.disagreement(reference, scores)
    own = golden.get(f"scores_{model.artifact.key}")
    return SelfTest(manifest.model_id, model.backend, model.precision, float(per_item.max()),
                    model.artifact.tolerance, model.task.agreement_measure, names[int(per_item.argmax())],
                    len(items), ms, None if own is None else max_abs_diff(scores, own), mismatches, threads)

