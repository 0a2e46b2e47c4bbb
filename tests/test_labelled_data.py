"""Labelled data a clinic can't get wrong (engine/labelled.py, export/datasets.py): spreadsheet CSVs,
conflicting and orphan rows, class sub-folders, calibration data reused as validation, and Wilson
intervals for proportions. Real Kermany films and PneumoniaMNIST from the shared data folder."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medexport.engine.compare import binary_metrics, wilson_ci
from medexport.engine.errors import ConfigurationError
from medexport.engine.labelled import folder_studies, study_labels
from medexport.engine.manifest import ImagePreprocess
from medexport.export.datasets import check_calib_val, load_dataset

LABELS = ("normal", "pneumonia")
PREPROCESS = ImagePreprocess(size=(32, 32))


def films(shared: Path, kind: str, n: int) -> list[Path]:
    return sorted((shared / "images" / "kermany-cxr224" / "train" / kind).glob("*.jpeg"))[:n]


def linked(folder: Path, sources: list[Path]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for s in sources:
        (folder / s.name).symlink_to(s)
    return [folder / s.name for s in sources]


def write_rows(path: Path, rows: list, encoding: str = "utf-8") -> None:
    with open(path, "w", newline="", encoding=encoding) as fh:
        csv.writer(fh).writerows([["file", "label"], *rows])


@pytest.fixture
def site(tmp_path, shared):
    """4 normal and 4 pneumonia real films in one folder (no labels yet)."""
    normal, pneumonia = films(shared, "NORMAL", 4), films(shared, "PNEUMONIA", 4)
    linked(tmp_path / "site", normal + pneumonia)
    return tmp_path / "site", [(f.name, "normal") for f in normal] + [(f.name, "pneumonia") for f in pneumonia]


def test_labels_csv_with_a_byte_order_mark_is_read(site):
    folder, rows = site
    write_rows(folder / "labels.csv", rows, encoding="utf-8-sig")  # as Excel's "CSV UTF-8" writes it
    labels = study_labels(folder, folder_studies(folder), LABELS)
    assert sorted(labels.table.values()) == [0] * 4 + [1] * 4 and labels.notes() == []
    (folder / "labels.csv").write_bytes("file,label\nfilm\xe9.jpeg,normal\n".encode("cp1252"))
    with pytest.raises(ConfigurationError, match="not UTF-8 text.*CSV UTF-8"):
        study_labels(folder, folder_studies(folder), LABELS)


def test_a_study_listed_twice_with_different_labels_is_refused(site):
    folder, rows = site
    name = rows[0][0]
    write_rows(folder / "labels.csv", rows + [(name, "normal"), (name, "pneumonia")])
    with pytest.raises(ConfigurationError) as err:
        study_labels(folder, folder_studies(folder), LABELS)
    assert f"lists {name} twice" in str(err.value)
    assert f"row 2 '{name},normal'" in str(err.value) and f"row 11 '{name},pneumonia'" in str(err.value)
    write_rows(folder / "labels.csv", rows + [(name, "normal")])  # a repeated row that agrees is harmless
    assert len(study_labels(folder, folder_studies(folder), LABELS).table) == 8


def test_rows_without_a_study_are_reported_and_a_wrong_folder_refused(site):
    folder, rows = site
    orphans = [(f"gone-{i:05d}.jpeg", "normal") for i in range(3)]
    write_rows(folder / "labels.csv", rows + orphans)
    labels = study_labels(folder, folder_studies(folder), LABELS)
    assert len(labels.table) == 8
    assert labels.notes() == [f"3 row(s) of {folder / 'labels.csv'} name no study in the folder and are left out "
                              "(first: gone-00000.jpeg, gone-00001.jpeg, gone-00002.jpeg)"]
    ds = load_dataset(str(folder), PREPROCESS, labels=LABELS)  # the build reads the same and keeps the note
    assert ds.notes == tuple(labels.notes()) and list(ds.labels) == [0] * 4 + [1] * 4
    write_rows(folder / "labels.csv", rows + [(f"gone-{i:05d}.jpeg", "normal") for i in range(10_000)])
    with pytest.raises(ConfigurationError, match=r"10000 of the 10008 rows .* name no study .*gone-00000.jpeg"):
        study_labels(folder, folder_studies(folder), LABELS)


def test_class_sub_folders_label_the_studies(tmp_path, shared):
    folder = tmp_path / "kermany"
    normal = linked(folder / "NORMAL", films(shared, "NORMAL", 3))
    pneumonia = linked(folder / "Pneumonia", films(shared, "PNEUMONIA", 2))
    labels = study_labels(folder, folder_studies(folder), LABELS)
    assert labels.table == {**{f: 0 for f in normal}, **{f: 1 for f in pneumonia}} and labels.source == folder
    ds = load_dataset(str(folder), PREPROCESS, labels=LABELS)  # build's --calib / --val
    assert sorted(ds.labels) == [0, 0, 0, 1, 1]
    linked(folder / "VIRAL", films(shared, "PNEUMONIA", 1))
    with pytest.raises(ConfigurationError, match=r"sub-folder\(s\) \['VIRAL'\].*named \['normal', 'pneumonia'\]"):
        study_labels(folder, folder_studies(folder), LABELS)


def test_unrelated_sub_folders_leave_a_folder_unlabelled(tmp_path, shared):
    linked(tmp_path / "series-1", films(shared, "NORMAL", 2))
    assert study_labels(tmp_path, folder_studies(tmp_path), LABELS) is None


def test_calibration_data_that_is_the_validation_data_is_refused(shared):
    npz = shared / "images" / "pneumoniamnist_trainval.npz"
    val = load_dataset(f"{npz}:val:40", PREPROCESS, labels=LABELS)
    with pytest.raises(ConfigurationError, match="are the same data: 40 of 40 validation studies"):
        check_calib_val(f"{npz}:val:40", val, PREPROCESS, LABELS)
    said = []
    check_calib_val(f"{npz}:train:40", val, PREPROCESS, LABELS, emit=said.append)  # another split: accepted
    assert said == []


def test_proportions_get_wilson_intervals_at_small_samples():
    from scipy.stats import binomtest

    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    s = np.r_[np.linspace(0.6, 1.0, 20), np.r_[np.linspace(0.0, 0.4, 17), 0.7, 0.8, 0.9]]
    m = binary_metrics(y, s, 0.5, n_boot=200)
    assert m["sensitivity"]["value"] == 1.0 and m["sensitivity"]["ci95"][0] == pytest.approx(0.8389, abs=1e-4)
    for name, k, n in (("sensitivity", 20, 20), ("specificity", 17, 20), ("accuracy", 37, 40)):
        ref = binomtest(k, n).proportion_ci(method="wilson")
        assert m[name]["ci95"] == pytest.approx([ref.low, ref.high], abs=1e-4)
    assert wilson_ci(0, 0) == (0.0, 1.0)


def _random_classifier(folder: Path) -> Path:
    """A user's broken ONNX classifier (its conv weights lost: all zero): the same score for every study."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros((2, 1, 3, 3), np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["out"], axis=1)]
    graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "random.onnx")
    return folder / "random.onnx"


def test_build_warns_on_a_chance_model_and_refuses_calib_equal_to_val(tmp_path, shared):
    from medexport.export.build import BuildOptions, build

    npz = shared / "images" / "pneumoniamnist_trainval.npz"
    onnx_file = _random_classifier(tmp_path)
    common = dict(targets=["onnxruntime"], task="classification", labels=["normal", "pneumonia"], input_size=28,
                  model_id="random-user-model")
    said = []
    build(str(onnx_file), tmp_path / "b1", BuildOptions(**common, val=f"{npz}:val:120"), emit=said.append)
    warned = [m for m in said if "WARNING" in m and "no better than chance" in m]
    assert warned, said
    with pytest.raises(ConfigurationError, match="are the same data"):
        build(str(onnx_file), tmp_path / "b2", BuildOptions(**common, precisions=["fp32", "int8"],
                                                            calib=f"{npz}:val:120", val=f"{npz}:val:120"),
              emit=lambda m: None)
