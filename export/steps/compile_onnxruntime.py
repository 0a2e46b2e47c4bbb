"""Step: ONNX -> ONNX Runtime artifact at fp32 / fp16 (int8 through steps.quantize)."""
from __future__ import annotations

import shutil
from pathlib import Path

from .context import CompileContext


def compile_onnxruntime(source, precision: str, out_dir: Path, ctx: CompileContext) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    if precision == "fp32":
        shutil.copyfile(source.onnx_path, path)
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        # recurrent ops stay FP32: ONNX Runtime's CPU build crashed (SIGSEGV) on an FP16 LSTM
        blocked = list(DEFAULT_OP_BLOCK_LIST) + ["LSTM", "GRU", "RNN"]
        model = convert_float_to_float16(onnx.load(str(source.onnx_path)), keep_io_types=True, op_block_list=blocked)
        onnx.save(model, str(path))
    else:
        from .quantize import CPU_QDQ, quantize_onnxruntime

        # the record of what was quantized: the build moves it into the manifest
        return {"model": path, "quantization": quantize_onnxruntime(source, path, ctx, CPU_QDQ)}
    return {"model": path}
