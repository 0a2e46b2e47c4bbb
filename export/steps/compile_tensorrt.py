"""Step: the TensorRT artifact: a TensorRT-ready ONNX graph plus ``build.json``.

The engine itself is built (and cached) on the target GPU by the tensorrt backend, because
an engine only runs on the GPU model and TensorRT version that built it. Preparation needs
no libnvinfer; compiling here requires TensorRT so that the build can validate the engine
it ships settings for.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from medexport.engine.backends.tensorrt import TensorRTBackend

from .context import CompileContext

FP16_OVERFLOW_LAYERS = ("SOFTMAX", "REDUCE", "NORMALIZATION", "UNARY")  # pinned to FP32 when FP16 misses


def build_settings(source, precision: str, *, max_batch: int = 8, fp32_layer_types=()) -> dict:
    """Precision flags and one optimisation profile over the batch dimension."""
    item = [d for d in source.input.shape[1:]]
    if any(d < 0 for d in item):
        raise ValueError(f"TensorRT profiles need fixed item dimensions, got {source.input.shape}")
    fixed = source.input.shape[0] > 0
    batch = (source.input.shape[0],) * 3 if fixed else (1, max(1, max_batch // 2), max_batch)
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    return {"precision": precision, "flags": flags, "workspace_mb": 1024,
            "profiles": {source.input.name: {k: [b, *item] for k, b in zip(("min", "opt", "max"), batch)}},
            "fp32_layer_types": list(fp32_layer_types), "explicit_quantization": precision == "int8"}


def prepare_tensorrt(source, precision: str, out_dir: Path, ctx: CompileContext, *, fp32_layer_types=()) -> dict:
    """Write model.onnx (QDQ for int8) and build.json; return the artifact's files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / "model.onnx"
    if precision == "int8":
        from .quantize import TENSORRT_QDQ, quantize_onnxruntime

        quantize_onnxruntime(source, model, ctx, TENSORRT_QDQ)
    else:
        shutil.copyfile(source.onnx_path, model)
    settings = build_settings(source, precision, fp32_layer_types=fp32_layer_types)
    settings["onnx_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (out_dir / "build.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return {"model": model, "build": out_dir / "build.json"}


def compile_tensorrt(source, precision: str, out_dir: Path, ctx: CompileContext) -> dict:
    """Prepare, then build and check the engine here; FP16 that misses pins overflow-prone layers to FP32."""
    TensorRTBackend.require()
    files = prepare_tensorrt(source, precision, out_dir, ctx)
    if precision != "fp16":
        return files
    import numpy as np

    with TensorRTBackend(files, precision=precision) as runtime:
        name = source.input.name
        out = runtime.infer({name: ctx.golden_inputs})
    reference = source.reference(ctx.golden_inputs)
    worst = max(float(np.abs(out[k] - reference[k]).max()) for k in reference)
    if worst <= ctx.golden_tolerance * 10:  # raw outputs (logits): looser than the score tolerance
        return files
    ctx.emit(f"[build]   FP16 engine differs by {worst:.3g}: pinning {FP16_OVERFLOW_LAYERS} to FP32")
    return prepare_tensorrt(source, precision, out_dir, ctx, fp32_layer_types=FP16_OVERFLOW_LAYERS)
