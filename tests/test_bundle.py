"""Bundles: checksums, tamper refusal, backend choice, parity, predictions with provenance."""
import json
import shutil
import zipfile

import numpy as np
import pytest

from medexport.engine import (BackendUnavailableError, BundleError, ConfigurationError, InvalidInputError, open_bundle,
                              read_manifest)
from medexport.engine.compare import max_abs_diff


def test_manifest_lists_every_file_with_its_hash(pneumonia_bundle):
    manifest, sha, root = read_manifest(pneumonia_bundle)
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert on_disk == set(manifest.files)
    assert {a.key for a in manifest.artifacts} == {"openvino-fp32", "openvino-fp16", "onnxruntime-fp32",
                                                   "onnxruntime-fp16"}
    assert manifest.provenance["source_sha256"] and manifest.provenance["training"]["validation"]["auroc"]
    assert len(sha) == 64


def test_changed_byte_is_refused(pneumonia_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(pneumonia_bundle, copy)
    weights = copy / "openvino-fp32" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"openvino-fp32/model.bin has SHA-256"):
        open_bundle(copy)


def test_missing_file_and_bad_schema_are_refused(pneumonia_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(pneumonia_bundle, copy)
    (copy / "golden.npz").unlink()
    with pytest.raises(BundleError, match="golden.npz listed in the manifest is missing"):
        open_bundle(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema"] = "medexport.bundle/99"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema 'medexport.bundle/99'"):
        open_bundle(copy)
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nothing")


def test_auto_picks_openvino_and_explicit_choice_is_honoured(pneumonia_bundle):
    with open_bundle(pneumonia_bundle) as m:
        assert (m.backend, m.precision) == ("openvino", "fp32")
    with open_bundle(pneumonia_bundle, backend="onnxruntime", precision="fp16") as m:
        assert (m.backend, m.precision) == ("onnxruntime", "fp16")


def test_unrunnable_choice_is_an_error_not_a_fallback(pneumonia_bundle):
    with pytest.raises(BackendUnavailableError, match="has no artifact for backend 'openvino' at precision 'int8'"):
        open_bundle(pneumonia_bundle, backend="openvino", precision="int8")
    with pytest.raises(ConfigurationError, match="Did you mean 'openvino'"):
        open_bundle(pneumonia_bundle, backend="openvno")


def test_backend_parity_on_golden_set(pneumonia_bundle):
    """OpenVINO and ONNX Runtime agree with the torch source (stored at build time) on real studies."""
    golden = np.load(pneumonia_bundle / "golden.npz")
    source = golden["scores_source"]
    for backend in ("openvino", "onnxruntime"):
        for precision, tol in (("fp32", 1e-4), ("fp16", 1e-2)):
            with open_bundle(pneumonia_bundle, backend=backend, precision=precision) as m:
                scores = m.scores(golden["inputs"])
            assert max_abs_diff(scores, source) < tol, (backend, precision)


def test_self_test_passes_on_every_artifact(pneumonia_bundle):
    for backend in ("openvino", "onnxruntime"):
        with open_bundle(pneumonia_bundle, backend=backend) as m:
            check = m.self_test()
        assert check.passed and check.n >= 3, check.line()


def test_predict_png_dicom_and_array_with_provenance(pneumonia_bundle, cxr, dcm, shared):
    _, sha, _ = read_manifest(pneumonia_bundle)
    with open_bundle(pneumonia_bundle) as m:
        png = m.predict(cxr[0])
        dicom = m.predict(dcm("RG3_UNCI.dcm"))
        arr = m.predict(np.random.default_rng(0).integers(0, 255, (300, 417), dtype=np.uint8))
    for r in (png, dicom, arr):
        assert set(r.scores) == {"normal", "pneumonia"} and abs(sum(r.scores.values()) - 1) < 1e-5
        assert (r.model_id, r.backend, r.precision, r.bundle_sha256) == ("pneumonia-cxr", "openvino", "fp32", sha)
        assert r.heatmap is not None and r.heatmap.max() <= 1.0
        assert "not a medical device" in r.disclaimer
    assert png.heatmap.shape == (512, 512) and dicom.heatmap.shape == (1760, 1760)
    assert arr.heatmap.shape == (300, 417) and arr.heatmap[:, :50].max() == 0  # outside the centre crop
    # held-out paediatric films (the model's intended use; adult NIH films are outside it) land on their side
    films = shared / "images" / "kermany-cxr224" / "train"
    with open_bundle(pneumonia_bundle) as m:
        normal = m.predict(films / "NORMAL" / "NORMAL2-IM-0402-0001.jpeg")
        pneumonia = m.predict(films / "PNEUMONIA" / "person889_bacteria_2813.jpeg")
    assert normal.scores["pneumonia"] < normal.thresholds["pneumonia"] <= pneumonia.scores["pneumonia"]
    assert normal.heatmap.shape == (224, 224)
    json.dumps(dicom.to_dict())


def test_same_answer_through_both_runtimes(pneumonia_bundle, cxr, dcm):
    studies = [*cxr, dcm("RG1_J2KR.dcm")]
    with open_bundle(pneumonia_bundle, backend="openvino") as ov, \
            open_bundle(pneumonia_bundle, backend="onnxruntime") as ort:
        for s in studies:
            a, b = ov.predict(s), ort.predict(s)
            assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
            assert np.abs(a.heatmap - b.heatmap).max() < 1e-3


def test_zipped_bundle_opens(pneumonia_bundle, tmp_path, cxr):
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in pneumonia_bundle.rglob("*"):
            zf.write(p, p.relative_to(pneumonia_bundle))
    with open_bundle(z) as m, open_bundle(pneumonia_bundle) as ref:
        assert m.sha256 == ref.sha256
        assert m.predict(cxr[0]).scores == ref.predict(cxr[0]).scores


def test_batch_shape_mismatch_is_explained(pneumonia_bundle):
    from medexport.engine import InvalidInputError

    with open_bundle(pneumonia_bundle) as m, pytest.raises(InvalidInputError, match=r"\(N, 1, 224, 224\)"):
        m.infer(np.zeros((1, 1, 32, 32), np.float32))


def test_frame_zero_of_a_multiframe_dicom(pneumonia_bundle, dcm):
    """frame=0 counts (it was once dropped as falsy). emri_small is 64 x 64: too small for this
    224-px model, which says so; the frame choice itself reaches the reader."""
    with open_bundle(pneumonia_bundle) as m:
        task = m.task
        first = task.read(dcm("emri_small.dcm"), task.options(frame=0))
        fifth = task.read(dcm("emri_small.dcm"), task.options(frame=5))
        with pytest.raises(InvalidInputError, match="64 x 64 pixels"):
            m.predict(dcm("emri_small.dcm"), frame=0)
    assert first.frames == 10 and not np.array_equal(first.pixels, fifth.pixels)


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
    bogus = tmp_path / "bundle.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="is neither a bundle folder nor a zip file"):
        open_bundle(bogus)


def test_built_bundle_lists_no_signature_and_opens_unsigned_without_a_trust_store(pneumonia_bundle):
    manifest, _, _ = read_manifest(pneumonia_bundle)
    assert "bundle.sig" not in manifest.files and "manifest.json" not in manifest.files
    with open_bundle(pneumonia_bundle) as m:
        assert m.signature.to_dict() == {"signed": False, "fingerprint": None, "signer": None, "trusted": False}
