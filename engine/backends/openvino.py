"""OpenVINO runtime backend (IR .xml/.bin), with the compiled-model cache turned on."""
from __future__ import annotations

import os

from .base import Backend, default_cache_dir


class OpenVINOBackend(Backend):
    name = "openvino"
    module = "openvino"
    extra = "openvino"
    targets = ("openvino",)

    def __init__(self, files, *, hint: str = "LATENCY", **kw):
        super().__init__(files, **kw)
        self.hint = hint

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
        self._request = self._compiled.create_infer_request()
        self._names = [out.get_any_name() for out in self._compiled.outputs]
        self.device = "CPU"

    def _infer(self, feeds):
        result = self._request.infer(feeds)
        return {name: result[out] for name, out in zip(self._names, self._compiled.outputs)}

    def _close(self) -> None:
        self._request = self._compiled = None
