"""OpenVINO runtime backend (IR .xml/.bin), with the compiled-model cache turned on.

An infer request holds one call's tensors, so concurrent calls each take their own from a pool
(as many as the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS; further callers wait).
"""
from __future__ import annotations

import os

from .base import Backend, default_cache_dir
from .pool import Pool


class OpenVINOBackend(Backend):
    name = "openvino"
    module = "openvino"
    extra = "openvino"
    targets = ("openvino",)

    def __init__(self, files, *, hint: str = "LATENCY", requests: int | None = None, **kw):
        super().__init__(files, **kw)
        self.hint = hint
        self.requests = requests  # pool size; default: what OpenVINO reports as optimal for the hint

    def _load(self) -> None:
        import openvino as ov

        core = ov.Core()
        cache = self.cache_dir or os.path.join(default_cache_dir(), "openvino")
        os.makedirs(cache, exist_ok=True)
        core.set_property({"CACHE_DIR": cache})
        # OpenVINO would otherwise pick bf16 on CPUs that have it: run what was validated.
        config = {"PERFORMANCE_HINT": self.hint, "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        model = core.read_model(str(self.files["model"]))
        self._compiled = core.compile_model(model, "CPU", config)
        cap = self.requests or int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._pool = Pool(self._compiled.create_infer_request, max(1, cap))
        self._outputs = [(out.get_any_name(), out) for out in self._compiled.outputs]
        self.device = "CPU"

    def _infer(self, feeds):
        with self._pool.take() as request:
            # share_outputs=False: the arrays are copies, so the next caller of this request cannot change them
            result = request.infer(feeds, share_inputs=False, share_outputs=False)
            return {name: result[out] for name, out in self._outputs}

    def _close(self) -> None:
        self._pool.close()
        self._pool = self._compiled = None
