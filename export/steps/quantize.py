"""Step: post-training INT8 with calibration on real studies.

OpenVINO: NNCF PTQ (per-channel s8 weights, per-tensor u8 activations), with NNCF's full bias
correction: the fast one left a per-layer shift that moved pneumonia-cxr scores by up to 0.110
(56 of 1,046 validation films beyond the 5e-2 tolerance; full: 0 beyond, worst 0.034). If a
validation metric is given and plain INT8 misses the budget, NNCF's accuracy-controlled
quantization keeps the most sensitive layers in float.
ONNX Runtime: static QDQ, u8 activations / s8 weights per channel, reduce_range (7-bit weights:
no u8s8 saturation on CPUs without VNNI). Per-tensor weights moved pneumonia-cxr scores by up to
0.148 (104 beyond); per channel: 0 beyond, worst 0.029. s8s8 was slower than FP32 here.
Mixed precision: classifier heads, the output layer (it computes the scores) and the layers a
model lists as most sensitive (``int8_float_layers``) stay in float. Each quantizer returns what it
did (its record: scheme, layers kept in float and why), which the build keeps in the artifact's
manifest entry; the build's proof then guards the result; this step only tries its best.
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
# The output layer (the weighted layer that computes the score output) stays in float on every model:
# its rounding reaches the scores with nothing after it to average it out. blood-cell-det's last
# 1x1 conv (heatmap logits and box distances) in INT8 put 28 of 87 validation smears beyond the
# 1e-1 box-score tolerance on OpenVINO (worst 0.316); in float: 0 beyond, worst 0.051, at +2 % latency.
WEIGHTED_OPENVINO = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                     "MatMul")
WEIGHTED_ONNX = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WHY_OUTPUT = "output layer: computes the score output, its rounding reaches the scores directly"
WHY_OPS = "classifier heads (MatMul/Gemm/Einsum) and recurrent layers stay in float"
WHY_MODEL = "listed by the model (int8_float_ops in models/zoo.py)"
WHY_SENSITIVE = "mixed precision: measured most sensitive to INT8, listed by the model (int8_float_layers in models/zoo.py)"
WHY_ACCURACY = "accuracy-controlled quantization: among the layers most sensitive to INT8 on the validation metric"
WHY_LEFT = "left in float by the quantizer (no quantizable pattern)"


def quantize_openvino(model, source, ctx: CompileContext):
    """(quantized model, record): what was done and which layers were kept in float, and why."""
    try:
        return _quantize_openvino(model, source, ctx)
    except ExportError:
        raise
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
    output_layers = output_layers_openvino(model, source.postprocess.score_output)
    sensitive = _openvino_names(model, source.int8_float_layers)
    settings = dict(subset_size=len(calib), preset=nncf.QuantizationPreset.PERFORMANCE,
                    target_device=nncf.TargetDevice.CPU, fast_bias_correction=False,
                    ignored_scope=nncf.IgnoredScope(names=output_layers + sensitive,
                                                    types=[*FLOAT_OPS_OPENVINO, *source.int8_float_ops], validate=False))
    quantized = nncf.quantize(model, dataset, **settings)
    record = lambda m, method: _record_openvino(m, method, source, output_layers, len(calib))  # noqa: E731
    metric, max_drop = ctx.val_metric, ctx.max_drop
    if metric is None or max_drop is None:
        return quantized, record(quantized, "nncf post-training")
    emit = ctx.emit
    core = ov.Core()

    def score(m) -> float:
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return metric(lambda x: {out.get_any_name(): compiled(x)[out] for out in compiled.outputs})

    reference, plain = score(model), score(quantized)
    emit(f"[build]   plain INT8 {ctx.metric_name or 'metric'} {plain:.4f} vs fp32 {reference:.4f}")
    if reference - plain <= max_drop:
        return quantized, record(quantized, "nncf post-training")
    emit(f"[build]   drop {reference - plain:.4f} exceeds {max_drop}: accuracy-controlled quantization")
    val = ctx.val_inputs
    val_set = nncf.Dataset([val[i:i + 1] for i in range(len(val))])

    def validation_fn(compiled, items) -> float:
        batch = np.concatenate(list(items))
        return metric(lambda x: {out.get_any_name(): compiled(x)[out] for out in compiled.outputs}, batch)

    controlled = nncf.quantize_with_accuracy_control(
        model, dataset, val_set, validation_fn, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **settings)
    return controlled, record(controlled, "nncf accuracy-controlled")


def _openvino_names(model, onnx_names: tuple) -> list[str]:
    """The OpenVINO ops made from the given ONNX nodes (a Conv becomes ``<name>/WithoutBiases`` and
    its bias Add); a name that matches nothing is refused, not skipped."""
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    found = []
    for wanted in onnx_names:
        matched = [n for n in names if n == wanted or n.startswith(wanted + "/")]
        if not matched:
            raise ExportError(f"int8_float_layers names {wanted!r}, which is not a layer of this model",
                              fix="list ONNX node names of the exported model (models/zoo.py)")
        found += matched
    return found


def output_layers_openvino(model, output: str) -> list[str]:
    """The weighted layers whose results reach ``output`` with no other weighted layer between."""
    starts = [out.get_node() for out in model.outputs if output in out.get_names()]
    found, seen = [], set()
    while starts:
        op = starts.pop()
        name = op.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if op.get_type_name() in WEIGHTED_OPENVINO:
            found.append(name)
        else:
            starts += [value.get_node() for value in op.input_values()]
    return sorted(found)


def _record_openvino(model, method: str, source, output_layers: list, calib: int) -> dict:
    """What the manifest keeps of an OpenVINO INT8 artifact: the scheme and each weighted layer
    left in float (its weights not quantized), with the reason it was kept."""
    kept = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        by_type = kind in FLOAT_OPS_OPENVINO and kind not in WEIGHTED_OPENVINO  # Einsum, recurrent cells
        if not by_type and (kind not in WEIGHTED_OPENVINO or _int8_weights(op.input_value(1).get_node())):
            continue
        name = op.get_friendly_name()
        kept.append(_kept_entry(name, kind, name in output_layers, FLOAT_OPS_OPENVINO, source,
                                WHY_ACCURACY if "accuracy" in method else WHY_LEFT))
    return {"method": method, "preset": "performance", "weights": "s8 per channel, symmetric",
            "activations": "8-bit per tensor", "bias_correction": "full", "calibration_studies": calib,
            "float_op_types": [*FLOAT_OPS_OPENVINO, *source.int8_float_ops], "kept_in_float": kept}


def _int8_weights(node) -> bool:
    """Whether a weight input is quantized: a FakeQuantize, or NNCF's compressed form (an 8-bit
    constant, converted, shifted and scaled back to float)."""
    while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze"):
        node = node.input_value(0).get_node()
    if node.get_type_name() in ("FakeQuantize", "FakeConvert"):
        return True
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")


def _kept_entry(name: str, op: str, output_layer: bool, float_ops: tuple, source, otherwise: str) -> dict:
    listed = any(name == n or name.startswith(n + "/") for n in source.int8_float_layers)
    why = (WHY_OUTPUT if output_layer else WHY_SENSITIVE if listed else WHY_OPS if op in float_ops
           else WHY_MODEL if op in source.int8_float_ops else otherwise)
    return {"layer": name, "op": op, "why": why}


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


# ONNX Runtime on CPU: u8 activations, s8 weights per channel, reduce_range (no saturation without VNNI)
CPU_QDQ = QdqScheme("onnxruntime-cpu", {"activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
                                        "reduce_range": True})
# TensorRT explicit quantization: symmetric s8 activations and per-channel s8 weights
TENSORRT_QDQ = QdqScheme("tensorrt", {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True,
                                      "reduce_range": False,
                                      "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}})


def quantize_onnxruntime(source, out: Path, ctx: CompileContext, scheme: QdqScheme) -> dict:
    """Static QDQ INT8 of the source graph in ``scheme``; the output layer, classifier heads and
    recurrent ops stay in float. Returns the record the manifest keeps (``_record_onnx``)."""
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
        output_layers = output_layers_onnx(graph, source.postprocess.score_output)
        missing = set(source.int8_float_layers) - {n.name for n in graph.node}
        if missing:
            raise ExportError(f"int8_float_layers names {', '.join(sorted(missing))}, not layers of this model",
                              fix="list ONNX node names of the exported model (models/zoo.py)")
        heads = sorted(set(downstream(graph, [n.name for n in graph.node if n.op_type in HEAD_OPS] + output_layers))
                       | {n.name for n in graph.node if n.op_type in exact} | set(source.int8_float_layers))
        try:
            settings = dict(scheme.settings)
            for key in ("activation_type", "weight_type"):
                settings[key] = getattr(QuantType, settings[key])
            quantize_static(str(pre), str(out), _Reader(source.input.name, calib, batch),
                            quant_format=QuantFormat.QDQ, nodes_to_exclude=heads, **settings)
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {exc}",
                              fix="try --target openvino for int8, or build fp32/fp16 only") from exc
    return _record_onnx(onnx.load(str(out)).graph, scheme, source, output_layers, len(calib))


def output_layers_onnx(graph, output: str) -> list[str]:
    """The weighted nodes whose results reach ``output`` with no other weighted node between."""
    producer = {t: n for n in graph.node for t in n.output}
    found, seen, stack = [], set(), [producer[output]] if output in producer else []
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED_ONNX:
            found.append(node.name)
        else:
            stack += [producer[t] for t in node.input if t in producer]
    return sorted(found)


def _record_onnx(graph, scheme: QdqScheme, source, output_layers: list, calib: int) -> dict:
    """What the manifest keeps of a QDQ INT8 artifact: the scheme and each weighted node whose
    weight is not dequantized from INT8, with the reason it was kept in float."""
    dequantized = {t for n in graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    kept = [_kept_entry(n.name, n.op_type, n.name in output_layers, FLOAT_OPS_ONNX, source, WHY_LEFT) for n in graph.node
            if n.op_type in WEIGHTED_ONNX + FLOAT_OPS_ONNX and not any(t in dequantized for t in n.input[1:2])]
    s = scheme.settings
    return {"method": f"onnxruntime static QDQ ({scheme.name})",
            "weights": f"{s['weight_type']} {'per channel' if s['per_channel'] else 'per tensor'}"
                       + (", 7-bit range" if s["reduce_range"] else ""),
            "activations": f"{s['activation_type']} per tensor", "calibration_studies": calib,
            "float_op_types": [*FLOAT_OPS_ONNX, *source.int8_float_ops], "kept_in_float": kept}
