"""The medexport command end to end, as a user types it."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def medexport(*args, cwd=None):
    exe = Path(sys.executable).with_name("medexport")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def user_onnx(tmp_path_factory):
    """A small image classifier as a user might bring it: ONNX only, fixed batch 1, 64x64 input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, (3, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "user", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("user") / "my_model.onnx"
    onnx.save(model, path)
    return path


def test_build_from_user_onnx_inspect_and_predict(user_onnx, tmp_path, cxr, dcm, cache_dir):
    out = tmp_path / "x"
    proc = medexport("build", user_onnx, "--task", "classification", "--labels", "a,b,c", "--input-size", 64,
                     "--target", "openvino,onnxruntime", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "PASS my_model [openvino fp32]" in proc.stderr and "PASS my_model [onnxruntime fp32]" in proc.stderr
    proc = medexport("inspect", out)
    assert proc.returncode == 0 and "checksums verified" in proc.stdout and "onnxruntime-fp32" in proc.stdout
    proc = medexport("predict", out, cxr[0], dcm("RG1_UNCI.dcm"), "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["backend"] for r in results] == ["openvino", "openvino"]
    assert all(set(r["scores"]) == {"a", "b", "c"} for r in results)
    proc = medexport("predict", out, cxr[0], "--backend", "onnxruntime", "--json")
    ort = json.loads(proc.stdout)[0]
    assert max(abs(ort["scores"][k] - results[0]["scores"][k]) for k in "abc") < 1e-4


def test_predict_prints_backend_precision_and_disclaimer(pneumonia_bundle, cxr):
    proc = medexport("predict", pneumonia_bundle, cxr[1])
    assert proc.returncode == 0
    assert "[openvino fp32]" in proc.stdout and "not a medical device" in proc.stdout
    assert "threshold" in proc.stdout


def test_bad_input_is_one_line_without_traceback(pneumonia_bundle, pydicom_file, cxr):
    proc = medexport("predict", pneumonia_bundle, pydicom_file("waveform_ecg.dcm"), cxr[0])
    assert proc.returncode == 1  # the good study still gets its result
    assert "Traceback" not in proc.stderr and "is a DICOM ECG waveform" in proc.stderr and "ecg-rhythm" in proc.stderr
    assert "pneumonia" in proc.stdout
    proc = medexport("predict", "no/such/bundle", cxr[0])
    assert proc.returncode == 2 and proc.stderr.startswith("error: bundle no/such/bundle does not exist")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--target", "openvno"], "unknown target 'openvno'. Did you mean 'openvino'?"),
    (["--target", "openvino", "--calib-size", "10"], "--calib-size given but no int8"),
    (["--target", "openvino", "--precision", "int8"], "int8 needs calibration data"),
    (["--target", "openvino", "--max-drop", "0.01"], "--max-drop given without --val"),
    (["--target", "openvino", "--input-size", "64"], "--input-size only apply to ONNX files"),
])
def test_conflicting_options_are_refused_with_a_fix(args, message, tmp_path):
    proc = medexport("build", "pneumonia-cxr", "-o", tmp_path / "b", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()


def test_existing_output_is_not_overwritten(pneumonia_bundle):
    proc = medexport("build", "pneumonia-cxr", "--target", "openvino", "-o", pneumonia_bundle)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "--overwrite" in proc.stderr


def test_onnx_needs_its_settings(user_onnx, tmp_path):
    proc = medexport("build", user_onnx, "--target", "openvino", "-o", tmp_path / "b")
    # the input size (64x64) and the task (the only one ONNX files build as) come from the file
    assert proc.returncode == 2 and "my_model.onnx needs --labels (the file does not say)" in proc.stderr
    proc = medexport("build", user_onnx, "--task", "classification", "--labels", "a,b", "--input-size", 64,
                     "--target", "openvino", "-o", tmp_path / "b")
    assert proc.returncode == 2 and "2 labels given but the model's output 'out' has 3" in proc.stderr
    proc = medexport("build", user_onnx, "--task", "classification", "--labels", "a,b,c", "--input-size", 224,
                     "--target", "openvino", "-o", tmp_path / "b")
    assert "conflicts with the model's input 64x64" in proc.stderr


def test_doctor_and_models():
    proc = medexport("doctor")
    assert proc.returncode == 0 and "openvino" in proc.stdout and "not been run in CI" in proc.stdout
    proc = medexport("models")
    assert "pneumonia-cxr" in proc.stdout and "densenet121-cxr" in proc.stdout


def test_selftest_command(pneumonia_bundle):
    proc = medexport("selftest", pneumonia_bundle)
    assert proc.returncode == 0 and proc.stdout.count("PASS") == 4


def test_occlusion_fallback_for_a_model_without_cam(user_onnx, tmp_path, cxr, cache_dir):
    from medexport.engine import open_bundle

    out = tmp_path / "x"
    assert medexport("build", user_onnx, "--task", "classification", "--labels", "a,b,c", "--input-size", 64,
                     "--target", "onnxruntime", "-o", out).returncode == 0
    with open_bundle(out) as model:
        plain = model.predict(cxr[0])
        explained = model.predict(cxr[0], explain=True)
    assert plain.heatmap is None
    assert explained.heatmap.shape == (512, 512) and "occlusion" in explained.heatmap_method
    assert explained.scores == plain.scores


def test_staging_left_by_a_dead_build_is_cleaned(user_onnx, tmp_path, cache_dir):
    stale = tmp_path / ".x.building-999999"
    stale.mkdir()
    (stale / "half-written.bin").write_bytes(b"x")
    proc = medexport("build", user_onnx, "--task", "classification", "--labels", "a,b,c", "--input-size", 64,
                     "--target", "onnxruntime", "-o", tmp_path / "x")
    assert proc.returncode == 0 and not stale.exists() and (tmp_path / "x" / "manifest.json").is_file()


def test_bench_on_a_bundle_writes_table_csv_and_json(pneumonia_bundle, tmp_path):
    import csv

    proc = medexport("bench", pneumonia_bundle, "--targets", "onnxruntime", "--precisions", "fp32", "--batch", "4",
                     "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pneumonia-cxr    onnxruntime  fp32  ok" in proc.stdout and "end-to-end / raw engine" in proc.stdout
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert len(rows) == 1 and float(rows[0]["latency_p50_ms"]) > 0 and float(rows[0]["throughput"]) > 0
    assert float(rows[0]["e2e_p50_ms"]) > float(rows[0]["latency_p50_ms"])
    assert json.loads((tmp_path / "bench.json").read_text())[0]["batch"] == 4


def test_one_bad_study_never_stops_a_batch(pneumonia_bundle, cxr, dcm, tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(Path(dcm("RG1_UNCR.dcm")).read_bytes()[:5000])  # a study cut off in transfer
    junk = tmp_path / "notes.png"
    junk.write_text("not a picture")
    proc = medexport("predict", pneumonia_bundle, cxr[0], broken, junk, cxr[1], "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = json.loads(proc.stdout)
    assert [("error" in r) for r in rows] == [False, True, True, False]
    assert rows[3]["source"] == cxr[1] and "pneumonia" in rows[3]["scores"]
    proc = medexport("predict", pneumonia_bundle, cxr[0], broken, cxr[1])
    assert proc.returncode == 1 and proc.stderr.count("error:") == 1 and proc.stdout.count("pneumonia-cxr") >= 2


def test_out_pointing_at_a_file_is_refused_before_any_work(pneumonia_bundle, cxr, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("keep me")
    proc = medexport("predict", pneumonia_bundle, cxr[0], "--out", target)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "is a file" in proc.stderr
    assert target.read_text() == "keep me"


def test_first_hour_errors_point_the_right_way(pneumonia_bundle, shared, user_onnx, tmp_path, cxr):
    wfdb = shared / "ecg" / "cinc2017-af" / "A00004.hea"
    proc = medexport("predict", pneumonia_bundle, wfdb)
    assert proc.returncode == 1 and "is an ECG record, not an image" in proc.stderr and "ecg_rhythm" in proc.stderr
    proc = medexport("inspect", user_onnx)
    assert proc.returncode == 2 and "is an ONNX model, not a bundle" in proc.stderr and "medexport build" in proc.stderr
    proc = medexport("build", "pneumonia-cxr", "--target", "openvino", "--precision", "int4", "-o", tmp_path / "x")
    assert proc.returncode == 2 and "unknown precision 'int4'" in proc.stderr and "another target" not in proc.stderr
    proc = medexport("bench", "pneumonia-cxr", "--targets", "OpenVINO", "--precision", "FP32", "--help")
    assert proc.returncode == 0  # bench and build take --target/--targets and --precision/--precisions alike
    help_text = medexport("build", "--help").stdout + medexport("predict", "--help").stdout
    assert "auto: the one 'medexport doctor'" in help_text and "--csv" in help_text


def test_build_target_defaults_to_auto_and_names_are_case_blind(tmp_path, cache_dir):
    proc = medexport("build", "pneumonia-cxr", "--precision", "FP32", "-o", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert "--target auto: openvino" in proc.stderr
    assert "openvino-fp32" in proc.stdout and "golden vs source" in proc.stdout  # the summary table


def test_predict_walks_folders_and_writes_a_csv(pneumonia_bundle, dcm, cxr, tmp_path):
    import csv
    import shutil

    folder = tmp_path / "studies"
    (folder / "series").mkdir(parents=True)
    shutil.copy(cxr[0], folder / "a.png")
    shutil.copy(dcm("RG1_UNCR.dcm"), folder / "series" / "b.dcm")
    (folder / "notes.txt").write_text("not a study")
    shutil.copy(shared_ecg := Path(cxr[0]).parents[2] / "ecg" / "cinc2017-af" / "A00004.hea", folder / "A00004.hea")
    proc = medexport("predict", pneumonia_bundle, folder, "--csv", tmp_path / "out.csv")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 file(s)" in proc.stderr  # the ECG: this bundle reads images
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert sorted(r["file"] for r in rows) == ["a.png", "b.dcm"]
    assert all(r["decision"] and r["backend"] == "openvino" and float(r["total_ms"]) > 0 for r in rows)
    assert all(0 <= float(r["score_pneumonia"]) <= 1 and r["error"] == "" for r in rows)
    assert shared_ecg.is_file()
    # an existing table is never silently renamed nor overwritten: refused, or replaced on --overwrite
    before = (tmp_path / "out.csv").read_bytes()
    again = medexport("predict", pneumonia_bundle, folder / "a.png", "--csv", tmp_path / "out.csv")
    assert again.returncode == 2 and "exists already" in again.stderr and "--overwrite" in again.stderr
    assert (tmp_path / "out.csv").read_bytes() == before and not list(tmp_path.glob("out (*"))
    replaced = medexport("predict", pneumonia_bundle, folder / "a.png", "--csv", tmp_path / "out.csv", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert [r["file"] for r in csv.DictReader(open(tmp_path / "out.csv"))] == ["a.png"]


def test_onnx_with_external_weights_labels_in_metadata_and_a_name(user_onnx, tmp_path, cache_dir, cxr):
    """The current torch exporter writes model.onnx + model.onnx.data: that builds, the labels come
    from the file's metadata, and the bundle carries the user's name, version and intended use."""
    import onnx

    model = onnx.load(str(user_onnx))
    model.metadata_props.add(key="labels", value="normal,effusion,nodule")
    external = tmp_path / "ext" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(model, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (external.parent / "model.onnx.data").stat().st_size > 0
    out = tmp_path / "b"
    proc = medexport("build", external, "--target", "onnxruntime,openvino", "--name", "chest-triage", "--version",
                     "1.2.0", "--intended-use", "Research on adult PA chest films.", "-o", out)
    assert proc.returncode == 0, proc.stderr
    shown = medexport("inspect", out).stdout
    assert "chest-triage 1.2.0" in shown and "normal, effusion, nodule" in shown and "adult PA chest films" in shown
    proc = medexport("predict", out, cxr[0])
    assert proc.returncode == 0 and "chest-triage 1.2.0" in proc.stdout
