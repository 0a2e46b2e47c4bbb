"""ONNX Runtime backend: the portable fallback (CPU execution provider)."""
from __future__ import annotations

from .base import Backend


class ONNXRuntimeBackend(Backend):
    name = "onnxruntime"
    module = "onnxruntime"
    extra = "onnxruntime"
    targets = ("onnxruntime",)

    def _load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # ALL adds NCHWc layout transforms (an FP32 speed-up); on FP16 graphs with an LSTM they
        # crashed ONNX Runtime 1.32 (SIGSEGV), so FP16 artifacts stop at EXTENDED
        level = "ORT_ENABLE_EXTENDED" if self.precision == "fp16" else "ORT_ENABLE_ALL"
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        options.log_severity_level = 3
        # no busy-waiting between calls: it stole the CPU from decoding the next study
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.files["model"]), options,
                                             providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._session.get_outputs()]

    def _infer(self, feeds):
        return dict(zip(self._names, self._session.run(self._names, feeds)))

    def _close(self) -> None:
        self._session = None
