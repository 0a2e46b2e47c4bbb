"""Everything of the TensorRT path that needs no libnvinfer: artifacts, QDQ graph, cache keys, errors, ranking."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medexport.engine.backends import choose_artifact
from medexport.engine.backends.tensorrt import TensorRTBackend, cached_engine, engine_key, store_engine
from medexport.engine.manifest import Artifact, Manifest

GPU = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from medexport.export.source import from_registry

    return from_registry("pneumonia-cxr", tmp_path_factory.mktemp("src"))


def context(**given):
    from medexport.export.steps.context import CompileContext

    return CompileContext(emit=lambda m: None, golden_inputs=np.zeros((1, 1, 224, 224), np.float32),
                          golden_tolerance=1e-2, **given)


def test_fp16_artifact_settings(source, tmp_path):
    from medexport.export.steps.compile_tensorrt import prepare_tensorrt

    files = prepare_tensorrt(source, "fp16", tmp_path / "t", context())
    settings = json.loads(files["build"].read_text())
    assert settings["flags"] == ["FP16"] and settings["precision"] == "fp16"
    assert settings["profiles"] == {"image": {"min": [1, 1, 224, 224], "opt": [4, 1, 224, 224], "max": [8, 1, 224, 224]}}
    assert files["model"].read_bytes() == source.onnx_path.read_bytes()


def test_int8_is_an_explicit_symmetric_qdq_graph(source, tmp_path, shared):
    import onnx
    from onnx import numpy_helper

    from medexport.export.datasets import load_dataset
    from medexport.export.steps.compile_tensorrt import prepare_tensorrt

    calib = load_dataset(f"{shared}/images/kermany-cxr224/train", source.preprocess, limit=64).inputs
    files = prepare_tensorrt(source, "int8", tmp_path / "q", context(calib_inputs=calib))
    model = onnx.load(str(files["model"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quant) > 5
    for node in quant:
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()  # symmetric: what TensorRT requires
    heads = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Einsum")]
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert heads
    for head in heads:  # the classifier head keeps float weights
        weight = head.input[1]
        assert weight not in dequantized and inits[weight].dtype == np.float32
    settings = json.loads(files["build"].read_text())
    assert settings["flags"] == ["INT8", "FP16"] and settings["explicit_quantization"]


def test_engine_key_covers_what_an_engine_depends_on():
    settings = {"flags": ["FP16"], "profiles": {"image": {"min": [1], "opt": [4], "max": [8]}}}
    base = engine_key("abc", settings, "10.7.0", GPU)
    assert engine_key("abc", settings, "10.7.0", dict(GPU)) == base
    assert engine_key("abd", settings, "10.7.0", GPU) != base
    assert engine_key("abc", settings, "10.8.0", GPU) != base
    assert engine_key("abc", settings, "10.7.0", {**GPU, "gpu": "NVIDIA L4"}) != base
    assert engine_key("abc", settings, "10.7.0", {**GPU, "compute_capability": "8.9"}) != base
    assert engine_key("abc", {**settings, "flags": ["INT8", "FP16"]}, "10.7.0", GPU) != base


def test_stale_cached_engine_is_not_loaded(tmp_path):
    ident = {"onnx": "abc", "tensorrt": "10.7.0", **GPU}
    store_engine(tmp_path, "k1", ident, b"ENGINE")
    assert cached_engine(tmp_path, "k1", ident) == b"ENGINE"
    assert cached_engine(tmp_path, "k1", {**ident, "tensorrt": "10.8.0"}) is None
    (tmp_path / "k1.json").write_text("{broken")
    assert cached_engine(tmp_path, "k1", ident) is None
    assert cached_engine(tmp_path, "missing", ident) is None


def test_without_tensorrt_the_message_says_what_to_install():
    reason = TensorRTBackend.unavailable_reason()
    assert reason is not None and ("NVIDIA" in reason or "GPU" in reason or "cuda" in reason)


def test_build_tensorrt_here_fails_helpfully(tmp_path):
    exe = Path(sys.executable).with_name("medexport")
    proc = subprocess.run([str(exe), "build", "pneumonia-cxr", "--target", "tensorrt", "--precision", "fp16",
                           "-o", str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pypi.nvidia.com" in proc.stderr and "openvino" in proc.stderr
    assert not (tmp_path / "t").exists()


def test_auto_ranks_tensorrt_first_only_when_it_can_run(pneumonia_bundle, monkeypatch):
    manifest = Manifest.from_json((pneumonia_bundle / "manifest.json").read_text())
    trt = Artifact("tensorrt", "fp16", {"model": "tensorrt-fp16/model.onnx", "build": "tensorrt-fp16/build.json"}, 5e-3)
    manifest = dataclasses.replace(manifest, artifacts=(*manifest.artifacts, trt))
    cls, art = choose_artifact(manifest)
    assert cls.name == "openvino"  # no TensorRT here: the CPU runtime, silently correct
    monkeypatch.setattr(TensorRTBackend, "unavailable_reason", classmethod(lambda cls: None))
    cls, art = choose_artifact(manifest)
    assert (cls.name, art.precision) == ("tensorrt", "fp16")


class _FakeCuda:
    """cuda-python's runtime in host memory: 'device' buffers are ctypes buffers, copies are memmove."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.keep = {}

    def _alloc(self, n):
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self.keep[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):
        return 0, object()

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaFree(self, ptr):
        return (0,)

    cudaFreeHost = cudaStreamDestroy = cudaFree


class _FakeContext:
    """An execution context computing y = 2x + 1; slow enough that shared use would interleave."""

    def __init__(self):
        self.shape, self.address = None, {}

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)

    def get_tensor_shape(self, name):
        return self.shape

    def set_tensor_address(self, name, ptr):
        self.address[name] = ptr

    def execute_async_v3(self, stream):
        import ctypes
        import time

        n = int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.address["x"])).copy()
        time.sleep(0.0005)
        y = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.address["y"]))
        y[:] = 2 * x + 1
        return True


class _FakeEngine:
    num_io_tensors = 2

    def __init__(self):
        self.contexts = 0

    def get_tensor_name(self, i):
        return ("x", "y")[i]

    def get_tensor_mode(self, name):
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name):
        return "f32"

    def create_execution_context(self):
        self.contexts += 1
        return _FakeContext()


def test_concurrent_calls_never_share_an_execution_context(monkeypatch):
    """4 threads x 40 calls through one TensorRT backend, different inputs: every output is its own input's."""
    import threading
    from types import SimpleNamespace

    from medexport.engine.backends import tensorrt as trt_backend

    monkeypatch.setattr(trt_backend, "cudart", lambda fake=_FakeCuda(): fake)
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="in"), nptype=lambda dtype: np.float32)
    backend, engine = TensorRTBackend({"model": "m.onnx"}, contexts=2), _FakeEngine()
    backend._bind(trt, engine)
    backend.loaded = True
    inputs = [np.full((2, 3, 8, 8), i, np.float32) for i in range(160)]
    wrong, errors = [], []

    def work(k):
        try:
            for i in range(k, 160, 4):
                y = backend.infer({"x": inputs[i]})["y"]
                if not np.array_equal(y, 2 * inputs[i] + 1):
                    wrong.append(i)
        except Exception as exc:  # collected and asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong
    assert engine.contexts <= 2  # the pool's cap: a third caller waits for a free context
    backend.close()
