"""TensorRT on a real GPU: build, cache, rebuild on mismatch, agree with ONNX Runtime CPU."""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory, shared):
    from medexport.export.build import BuildOptions, build

    npz = shared / "images" / "pneumoniamnist_trainval.npz"
    out = tmp_path_factory.mktemp("trt") / "pneumonia-cxr"
    build("pneumonia-cxr", out, BuildOptions(targets=["tensorrt", "onnxruntime"], precisions=["fp16", "int8"],
                                             calib=f"{npz}:train", val=f"{npz}:val"), emit=print)
    return out


def test_engine_matches_onnxruntime_cpu(trt_bundle):
    from medexport.engine import open_bundle

    golden = np.load(trt_bundle / "golden.npz")
    with open_bundle(trt_bundle, backend="tensorrt") as gpu, open_bundle(trt_bundle, backend="onnxruntime") as cpu:
        a, b = gpu.scores(golden["inputs"]), cpu.scores(golden["inputs"])
        assert np.abs(a - b).max() < 2e-2  # fp16 / int8 engines against the CPU artifact
        assert gpu.self_test().passed


def test_second_open_uses_the_cache_and_a_changed_gpu_key_rebuilds(trt_bundle, tmp_path):
    import time

    from medexport.engine import open_bundle

    t0 = time.perf_counter()
    with open_bundle(trt_bundle, backend="tensorrt", cache_dir=str(tmp_path)):
        pass
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_bundle(trt_bundle, backend="tensorrt", cache_dir=str(tmp_path)):
        pass
    warm = time.perf_counter() - t0
    assert warm < cold
    meta = next(tmp_path.glob("*.json"))
    data = json.loads(meta.read_text())
    data["compute_capability"] = "0.0"  # as if the cache came from another GPU
    meta.write_text(json.dumps(data))
    with open_bundle(trt_bundle, backend="tensorrt", cache_dir=str(tmp_path)) as model:
        assert model.self_test().passed
