"""Step: ONNX -> OpenVINO IR at fp32 / fp16 (int8 through steps.quantize, with its ``quantization`` record)."""
from __future__ import annotations

from pathlib import Path

from .context import CompileContext


def compile_openvino(source, precision: str, out_dir: Path, ctx: CompileContext) -> dict:
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(source.onnx_path))
    record = {}
    if precision == "int8":
        from .quantize import quantize_openvino

        model, record = quantize_openvino(model, source, ctx)
    xml = out_dir / "model.xml"
    # fp16 stores weights in half precision (CPUs without native fp16 compute in f32)
    ov.save_model(model, str(xml), compress_to_fp16=(precision == "fp16"))
    files = {"model": xml, "weights": xml.with_suffix(".bin")}
    return files | ({"quantization": record} if record else {})  # the build moves the record into the manifest
