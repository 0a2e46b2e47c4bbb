"""The one table of export targets; every build option is checked against it.

Like Ultralytics' ``export_formats()``, but options that conflict or do not apply are an
error naming the fix, never silently changed.
"""
from __future__ import annotations

from dataclasses import dataclass

from medexport.engine.errors import ConfigurationError, suggest
from medexport.engine.manifest import PRECISIONS


@dataclass(frozen=True)
class Target:
    name: str
    backend: str  # engine backend that runs the artifact
    artifact: str  # what lands in the bundle
    precisions: tuple
    hardware: str
    build_needs: tuple  # modules needed to build (beyond torch/onnx)
    extra: str  # pip extra to install them
    compiler: str  # "module:function" in medexport.export.steps


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("openvino", "openvino", "OpenVINO IR (.xml + .bin)", ("fp32", "fp16", "int8"),
           "x86-64 / ARM CPUs (Intel, AMD)", ("openvino",), "openvino",
           "compile_openvino:compile_openvino"),
    Target("onnxruntime", "onnxruntime", "ONNX (.onnx)", ("fp32", "fp16", "int8"),
           "any CPU (portable fallback)", ("onnxruntime",), "onnxruntime",
           "compile_onnxruntime:compile_onnxruntime"),
    Target("tensorrt", "tensorrt", "TensorRT-ready ONNX + build settings; engine built on the target GPU",
           ("fp16", "int8", "fp32"), "NVIDIA GPU (compute capability >= 7.5)", ("tensorrt",), "tensorrt",
           "compile_tensorrt:compile_tensorrt"),
)}

def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigurationError(f"unknown target {name!r}.{suggest(name, TARGETS)}",
                                 expected=f"one of {', '.join(TARGETS)}")
    return TARGETS[name]


def check_options(targets: list[str], precisions: list[str], *, clinical: bool = True, calib=None, calib_size=None,
                  val=None, max_drop=None, max_decision_drop=None) -> None:
    """Refuse option combinations that do not apply; never drop or change one silently."""
    if not targets:
        raise ConfigurationError("no target given", expected=f"--target with one of {', '.join(TARGETS)}")
    for p in precisions:
        if p not in PRECISIONS:
            raise ConfigurationError(f"unknown precision {p!r}.{suggest(p, PRECISIONS)}",
                                     expected=f"one of {', '.join(PRECISIONS)}")
    for name in targets:
        target = get_target(name)
        for p in precisions:
            if p not in target.precisions:
                raise ConfigurationError(f"target {name!r} does not build precision {p!r}",
                                         expected=f"one of {', '.join(target.precisions)}",
                                         fix=f"drop {p} or choose another target")
    if len(set(precisions)) != len(precisions) or len(set(targets)) != len(targets):
        raise ConfigurationError("a target or precision is given twice", fix="list each once")
    int8 = "int8" in precisions
    if calib_size is not None and not int8:  # --calib alone fits the out-of-distribution reference
        raise ConfigurationError("--calib-size given but no int8 precision was asked for",
                                 fix="add '--precision int8' or drop --calib-size")
    if int8 and calib is None:
        raise ConfigurationError("int8 needs calibration data", expected="--calib DATA (real studies)",
                                 fix="pass --calib with a folder of studies or an .npz (e.g. file.npz:train)")
    if int8 and val is None and clinical:
        raise ConfigurationError("int8 needs labelled validation data to prove it is safe",
                                 expected="--val DATA with labels (and optionally --max-drop, default 0.005)",
                                 fix="pass --val, e.g. an .npz split or a folder with labels.csv")
    for flag, value in (("--max-drop", max_drop), ("--max-decision-drop", max_decision_drop)):
        if value is not None and val is None:
            raise ConfigurationError(f"{flag} given without --val", fix="add --val DATA with labels to measure the drop")
        if value is not None and not 0 <= value < 1:
            raise ConfigurationError(f"{flag} is {value}", expected="a drop between 0 and 1, e.g. 0.005")
    if calib_size is not None and calib_size < 1:
        raise ConfigurationError(f"--calib-size is {calib_size}", expected="a positive number of studies")
