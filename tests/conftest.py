"""Shared fixtures: real data locations and demo bundles built once per session."""
from __future__ import annotations

import os

import pytest

import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the app's own files (audit log, reports, settings) go to a throwaway home, never the user's
_HOME = tempfile.mkdtemp(prefix="medexport-test-home-")
os.environ["MEDEXPORT_HOME"] = _HOME
os.environ["XDG_CONFIG_HOME"] = _HOME
os.environ.setdefault("MEDEXPORT_TEST_REAL_HOME", os.environ.get("HOME", ""))  # for pip/PyInstaller caches
os.environ["HOME"] = _HOME  # reports default to ~/Documents: the tests' own, never the user's


def _bundle(tmp_path_factory, name: str, options):
    """Build model ``name`` with ``options`` for the session, or, for a developer's quick loop, copy it
    from ``$MEDEXPORT_TEST_BUNDLES/<name>`` (built there the first time). CI leaves that unset."""
    import shutil
    from pathlib import Path

    from medexport.export.build import build

    def build_it(folder):
        build(name, folder, options, emit=lambda m: None)

    out = tmp_path_factory.mktemp("bundles") / name
    cache = os.environ.get("MEDEXPORT_TEST_BUNDLES")
    if not cache:
        build_it(out)
        return out
    kept = Path(cache) / name
    if not (kept / "manifest.json").is_file():
        build_it(out)
        shutil.copytree(out, kept, dirs_exist_ok=True)
    else:
        shutil.copytree(kept, out)
    return out


@pytest.fixture(scope="session")
def shared():
    from medexport.models.data import shared_data

    return shared_data()


@pytest.fixture(scope="session")
def dcm():
    """Real DICOM files from pydicom-data (and pydicom's own bundled test files)."""
    from medexport.models.data import pydicom_data

    root = pydicom_data()
    assert root is not None, "pydicom-data is part of the dev extra"
    return lambda name: str(root / name)


@pytest.fixture(scope="session")
def pydicom_file():
    from pydicom.data import get_testdata_file

    return lambda name: get_testdata_file(name)


@pytest.fixture(scope="session")
def cxr(shared):
    return sorted(str(p) for p in (shared / "images" / "cxr-nih").glob("*.png"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    os.environ["MEDEXPORT_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def pneumonia_bundle(tmp_path_factory, cache_dir):
    """pneumonia-cxr built for OpenVINO and ONNX Runtime at fp32 and fp16, with its OOD reference
    fitted on the recipe's 300 calibration films."""
    from medexport.export.build import BuildOptions
    from medexport.models.data import default_data
    from medexport.models.registry import get_config

    return _bundle(tmp_path_factory, "pneumonia-cxr",
                   BuildOptions(targets=["openvino", "onnxruntime"],
                                precisions=["fp32", "fp16"], calib=default_data(get_config("pneumonia-cxr"), "calib")))


@pytest.fixture(scope="session")
def ecg_bundle(tmp_path_factory, cache_dir):
    """ecg-rhythm built for ONNX Runtime and OpenVINO at fp32."""
    from medexport.export.build import BuildOptions

    return _bundle(tmp_path_factory, "ecg-rhythm",
                   BuildOptions(targets=["onnxruntime", "openvino"],
                                precisions=["fp32"]))


@pytest.fixture(scope="session")
def seg_bundle(tmp_path_factory, cache_dir):
    from medexport.export.build import BuildOptions

    return _bundle(tmp_path_factory, "em-membrane-seg",
                   BuildOptions(targets=["openvino", "onnxruntime"],
                                precisions=["fp32"]))


@pytest.fixture(scope="session")
def fetal_bundle(tmp_path_factory, cache_dir, shared):
    """fetal-head-us built for ONNX Runtime at fp32, validated on 12 held-out HC18 frames."""
    from medexport.export.build import BuildOptions

    return _bundle(tmp_path_factory, "fetal-head-us",
                   BuildOptions(targets=["onnxruntime"],
                                precisions=["fp32"], val=f"{shared / 'segmentation' / 'hc18'}:val:12"))


@pytest.fixture(scope="session")
def hippo_bundle(tmp_path_factory, cache_dir):
    """hippocampus-mr from the recipe's saved weights, ONNX Runtime fp32, golden inputs from its validation
    list; its OOD reference fitted on the recipe's calibration volumes, thresholded on its validation list."""
    from medexport.export.build import BuildOptions
    from medexport.models.data import default_data
    from medexport.models.registry import get_config

    config = get_config("hippocampus-mr")
    return _bundle(tmp_path_factory, "hippocampus-mr",
                   BuildOptions(targets=["onnxruntime"], precisions=["fp32"], calib=default_data(config, "calib"),
                                val=default_data(config, "val")))


@pytest.fixture(scope="session", autouse=True)
def clinic_allows_unsigned_bundles():
    """The session's bundles are built unsigned: the test clinic's viewer settings allow them
    (desktop/trust.py refuses unsigned bundles by default; tests/test_bundle_trust.py covers that)."""
    from pathlib import Path

    ini = Path(_HOME) / "viewer.ini"
    if "allow_unsigned_bundles" not in (ini.read_text() if ini.is_file() else ""):
        with open(ini, "a") as fh:
            fh.write("[General]\nallow_unsigned_bundles=true\n")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory):
    """A fresh ECDSA P-256 pair (private, public) and a second, unrelated public key."""
    from medexport.engine.signing import generate_key_pair

    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_key_pair(folder, "publisher")
    _, other = generate_key_pair(folder, "stranger")
    return private, public, other


@pytest.fixture(scope="session")
def signed_bundle(tmp_path_factory, pneumonia_bundle, signing_keys):
    """A copy of ``pneumonia_bundle`` signed with ``signing_keys`` (the build's --sign-key step)."""
    import shutil

    from medexport.engine.signing import sign_bundle

    out = tmp_path_factory.mktemp("signed") / "pneumonia-cxr"
    shutil.copytree(pneumonia_bundle, out)
    sign_bundle(out, signing_keys[0])
    return out


@pytest.fixture(scope="session")
def user_bundle_unvalidated(tmp_path_factory, cache_dir):
    """A user's model built without --val (no validation evidence), named to sort first."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from medexport.export.build import BuildOptions, build

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (2, 1, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["out"])]
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("unvalidated")
    onnx.save(model, folder / "m.onnx")
    out = folder / "aaa-untrained"
    build(str(folder / "m.onnx"), out, BuildOptions(targets=["onnxruntime"], task="classification",
                                                    labels=["normal", "abnormal"], input_size=32,
                                                    model_id="aaa-untrained"), emit=lambda m: None)
    return out


@pytest.fixture(scope="session")
def det_bundle(tmp_path_factory, cache_dir, shared):
    """blood-cell-det for ONNX Runtime FP32, its mAP guard run on 12 BCCD val smears."""
    from medexport.export.build import BuildOptions

    return _bundle(tmp_path_factory, "blood-cell-det",
                   BuildOptions(targets=["onnxruntime"],
                                precisions=["fp32"], val=f"{shared / 'detection' / 'bccd'}:val:12"))


# Markers chosen from what a test uses (`make check` runs the rest): a bundle built by torch from the
# shipped weights -> slow; the real Orthanc -> pacs; the real Triton server -> serve (and slow).
_SLOW_FIXTURES = {"pneumonia_bundle", "ecg_bundle", "seg_bundle", "fetal_bundle", "det_bundle", "signed_bundle",
                  "user_bundle_unvalidated", "cache_dir", "hippo_bundle"}
_MARK_BY_FIXTURE = {"orthanc": "pacs", "server": "serve"}
_SLOW_MODULES = {"test_models", "test_installer", "test_robustness", "test_quantization", "test_serve", "test_fuzz",
                 "test_listener", "test_listener_kinds", "test_listener_robust", "test_listener_service",
                 "test_decode_speed", "test_ecg_speed", "test_threads", "test_triton_repo", "test_offline"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARK_BY_FIXTURE.items():
            if fixture in used:
                item.add_marker(getattr(pytest.mark, marker))
        if used & _SLOW_FIXTURES or item.module.__name__.rsplit(".", 1)[-1] in _SLOW_MODULES \
                or any(m in item.keywords for m in ("pacs", "serve", "load", "gpu")):
            item.add_marker(pytest.mark.slow)
