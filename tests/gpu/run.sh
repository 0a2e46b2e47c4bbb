#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and TensorRT 10: build the demo bundles' TensorRT engines,
# check them against ONNX Runtime CPU outputs, and benchmark TensorRT FP16/INT8 against torch
# CUDA eager. Unchanged elsewhere it explains what is missing and exits 0 (nothing to run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if ! $PY -c "from medexport.engine.backends.tensorrt import TensorRTBackend as T; import sys; r=T.unavailable_reason(); print(r or 'ok'); sys.exit(1 if r else 0)"; then
  echo "TensorRT path not runnable here; nothing to do."
  exit 0
fi
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
CAL=../shared/data/images/pneumoniamnist_trainval.npz
$PY -m pytest -q tests/gpu | tee "$OUT/pytest.txt"
$PY -m medexport.export.cli build pneumonia-cxr --target tensorrt,onnxruntime --precision fp16,int8 \
    --calib $CAL:train --val $CAL:val -o "$OUT/pneumonia-cxr-trt" --overwrite
$PY -m medexport.export.cli inspect "$OUT/pneumonia-cxr-trt" | tee "$OUT/inspect.txt"
$PY -m medexport.export.cli selftest "$OUT/pneumonia-cxr-trt" | tee "$OUT/selftest.txt"
$PY -m medexport.export.bench.gpu densenet121-cxr --out "$OUT" | tee "$OUT/bench.txt"
