"""Step: post-training INT8 with calibration on real studies.

OpenVINO: NNCF PTQ; if a validation metric is given and plain INT8 misses the budget,
NNCF's accuracy-controlled quantization keeps the most sensitive layers in float.
ONNX Runtime: static QDQ, u8 activations / s8 weights, per-tensor, reduce_range (on AVX2-only
CPUs s8s8 per-channel ran slower than fp32 and was less accurate; see platform notes).
The classifier head stays in float. The build's validate step then guards the result;
this step only tries its best.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medexport.engine.errors import ExportError

from .context import CompileContext

# Classifier heads (and the CAM projection) stay in float: quantizing the last linear layer
# shifted every score (138 of 524 decisions flipped at the operating threshold in a probe).
# Recurrent layers stay in float too: OpenVINO's CPU plugin needs constant LSTM weights.
HEAD_OPS = ("MatMul", "Gemm", "Einsum")
FLOAT_OPS_ONNX = HEAD_OPS + ("LSTM", "GRU", "RNN")
FLOAT_OPS_OPENVINO = ("MatMul", "Einsum", "LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell")


def quantize_openvino(model, source, ctx: CompileContext):
    try:
        return _quantize_openvino(model, source, ctx)
    except Exception as exc:  # NNCF and the CPU plugin raise many kinds; report one clearly
        raise ExportError(f"OpenVINO INT8 quantization failed: {str(exc).strip().splitlines()[-1]}",
                          fix="build fp32/fp16 for OpenVINO, or try --target onnxruntime for int8") from exc


def _quantize_openvino(model, source, ctx: CompileContext):
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its INFO lines (ignored nodes, one per line) drowned the build's own

    calib = ctx.calib_inputs
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    settings = dict(subset_size=len(calib), preset=nncf.QuantizationPreset.PERFORMANCE,
                    target_device=nncf.TargetDevice.CPU,
                    ignored_scope=nncf.IgnoredScope(types=[*FLOAT_OPS_OPENVINO, *source.int8_float_ops], validate=False))
    quantized = nncf.quantize(model, dataset, **settings)
    metric, max_drop = ctx.val_metric, ctx.max_drop
    if metric is None or max_drop is None:
        return quantized
    emit = ctx.emit
    core = ov.Core()

    def score(m) -> float:
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return metric(lambda x: {out.get_any_name(): compiled(x)[out] for out in compiled.outputs})

    reference, plain = score(model), score(quantized)
    emit(f"[build]   plain INT8 {ctx.metric_name or 'metric'} {plain:.4f} vs fp32 {reference:.4f}")
    if reference - plain <= max_drop:
        return quantized
    emit(f"[build]   drop {reference - plain:.4f} exceeds {max_drop}: accuracy-controlled quantization")
    val = ctx.val_inputs
    val_set = nncf.Dataset([val[i:i + 1] for i in range(len(val))])

    def validation_fn(compiled, items) -> float:
        batch = np.concatenate(list(items))
        return metric(lambda x: {out.get_any_name(): compiled(x)[out] for out in compiled.outputs}, batch)

    return nncf.quantize_with_accuracy_control(
        model, dataset, val_set, validation_fn, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **settings)


def downstream(graph, names: list[str]) -> list[str]:
    """``names`` and every node that consumes their results, directly or not: what follows a
    classifier head (bias, masking, pooling of per-beat scores) stays in float with it."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    by_name = {n.name: n for n in graph.node}
    seen, stack = set(), [by_name[n] for n in names if n in by_name]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for out in node.output:
            stack += consumers.get(out, [])
    return sorted(seen)


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over preprocessed inputs."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int):
        self.items = iter([{name: inputs[i:i + batch]} for i in range(0, len(inputs), batch)])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):  # not needed for MinMax, kept for the interface
        pass


@dataclass(frozen=True)
class QdqScheme:
    """How static QDQ INT8 is laid out for a runtime."""

    name: str
    settings: dict  # quantize_static keyword arguments


# ONNX Runtime on CPU: u8 activations, s8 weights, per-tensor, reduce_range (AVX2 without VNNI)
CPU_QDQ = QdqScheme("onnxruntime-cpu", {"activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": False,
                                        "reduce_range": True})
# TensorRT explicit quantization: symmetric s8 activations and per-channel s8 weights
TENSORRT_QDQ = QdqScheme("tensorrt", {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True,
                                      "reduce_range": False,
                                      "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}})


def quantize_onnxruntime(source, out: Path, ctx: CompileContext, scheme: QdqScheme) -> None:
    """Static QDQ INT8 of the source graph in ``scheme``; classifier heads and recurrent ops stay in float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = ctx.calib_inputs
    batch = source.input.shape[0] if source.input.shape[0] > 0 else 16
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(source.onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation; quantize the raw graph instead
            pre = source.onnx_path
            ctx.emit(f"[build]   ONNX pre-processing skipped ({exc})")
        import onnx

        graph = onnx.load(str(pre)).graph
        exact = FLOAT_OPS_ONNX + tuple(source.int8_float_ops)
        heads = sorted(set(downstream(graph, [n.name for n in graph.node if n.op_type in HEAD_OPS]))
                       | {n.name for n in graph.node if n.op_type in exact})
        try:
            settings = dict(scheme.settings)
            for key in ("activation_type", "weight_type"):
                settings[key] = getattr(QuantType, settings[key])
            quantize_static(str(pre), str(out), _Reader(source.input.name, calib, batch),
                            quant_format=QuantFormat.QDQ, nodes_to_exclude=heads, **settings)
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {exc}",
                              fix="try --target openvino for int8, or build fp32/fp16 only") from exc
