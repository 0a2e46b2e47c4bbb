"""One typed Task, Result and Guard per task: options, guard choice, results' own methods."""
import numpy as np
import pytest

from medexport.engine.errors import ConfigurationError
from medexport.engine.manifest import Postprocess
from medexport.engine.tasks import TASKS, EcgOptions, ImageOptions, task_class
from medexport.export.guards import AurocGuard, DiceGuard, F1Guard, guard_class


def test_registry_names_every_task_once():
    assert set(TASKS) == {"classification", "ecg_rhythm", "segmentation", "detection", "fetal_head",
                          "volume_segmentation"}
    assert {t.study_kind for t in TASKS.values()} == {"image", "ecg", "volume"}
    for name, cls in TASKS.items():
        assert cls.name == name and cls.metrics and set(cls.golden_tolerance) == {"fp32", "fp16", "int8"}


@pytest.mark.parametrize("kw,message", [
    ({"lead": "II"}, "option(s) lead do not apply to a classification bundle"),
    ({"frame": -1}, "frame is -1"),
    ({"frame": "2"}, "frame is '2'"),
])
def test_image_options_are_typed_and_refused_not_dropped(pneumonia_bundle, cxr, kw, message):
    from medexport.engine import open_bundle

    with open_bundle(pneumonia_bundle) as model:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.predict(cxr[0], **kw)
        assert model.task.options(frame=None, lead=None, explain=False) == ImageOptions()


def test_ecg_and_segmentation_options(ecg_bundle, seg_bundle, shared):
    from medexport.engine import open_bundle

    with open_bundle(ecg_bundle) as model:
        assert model.task.options(lead="V1", fs=500) == EcgOptions("V1", 500)
        for bad in ({"fs": float("nan")}, {"fs": 0}, {"explain": True}, {"frame": 0}):
            with pytest.raises(ConfigurationError):
                model.task.options(**bad)
    with open_bundle(seg_bundle) as model:
        with pytest.raises(ConfigurationError, match="explain does not apply to a segmentation bundle"):
            model.predict(str(shared / "segmentation" / "isbi2012-em" / "image" / "24.png"), explain=True)


def test_guard_follows_the_task_and_the_thresholds():
    thresholded = Postprocess("softmax", {"pneumonia": 0.5})
    argmax = Postprocess("softmax", {})
    assert guard_class(task_class("classification"), thresholded) is AurocGuard
    assert guard_class(task_class("classification"), argmax) is F1Guard  # was AUROC in the table, F1 in the report
    assert guard_class(task_class("classification"), thresholded, "f1") is F1Guard
    assert guard_class(task_class("segmentation"), Postprocess("sigmoid", {"m": 0.5})) is DiceGuard
    with pytest.raises(ConfigurationError, match="metric 'dice' does not apply to task 'classification'"):
        guard_class(task_class("classification"), thresholded, "dice")
    with pytest.raises(ConfigurationError, match="no thresholds"):
        guard_class(task_class("classification"), argmax, "auroc")


def test_results_answer_for_themselves(pneumonia_bundle, ecg_bundle, seg_bundle, cxr, shared, tmp_path):
    from medexport.engine import open_bundle

    with open_bundle(pneumonia_bundle) as m:
        r = m.predict(cxr[0])
    rows = r.score_rows()
    assert [row.label for row in rows] == sorted(r.scores, key=lambda k: -r.scores[k])
    assert r.decision() in ("below threshold", "POSITIVE: pneumonia")
    assert r.headline() == r.decision() or r.headline().startswith("Not assessed: ") and r.not_assessed
    assert r.overlay().kind == "heatmap" and r.overlay().data.shape == (512, 512)
    assert set(r.save_outputs(tmp_path)) == {"heatmap_file"} and r.to_dict()["decision"] == r.headline()
    with open_bundle(ecg_bundle) as m:
        e = m.predict(str(shared / "ecg" / "cinc2017-af" / "A00004.hea"))
    assert e.headline().startswith(e.label.upper()) and e.overlay().kind == "beats"
    assert e.finding_labels() == [e.label] and not e.sr_references_image and e.save_outputs(tmp_path) == {}
    with open_bundle(seg_bundle) as m:
        s = m.predict(str(shared / "segmentation" / "isbi2012-em" / "image" / "24.png"))
    assert s.overlay().kind == "mask" and np.array_equal(s.overlay().data, s.mask) and s.sr_procedure is None
    assert s.save_outputs(tmp_path)["mask_file"].suffix == ".png"


def test_ecg_scores_weigh_windows_by_their_beats_once(ecg_bundle, shared):
    """The engine's record score, the validation datasets' and the recipe's are one computation."""
    from medexport.engine import open_bundle
    from medexport.engine.tasks import item_scores
    from medexport.export.datasets import load_dataset

    record = shared / "ecg" / "mitdb" / "100.hea"
    with open_bundle(ecg_bundle, backend="onnxruntime") as m:
        result = m.predict(str(record))
        ds = load_dataset(str(record), m.manifest.preprocess, labels=m.manifest.labels)
        per_item = ds.item_scores(m.scores(ds.inputs))
        weights = m.task.row_weights(ds.inputs)
    assert len(ds.inputs) > 1 and weights.min() > 0 and weights.max() <= m.manifest.preprocess.beats
    assert np.allclose(per_item[0], [result.scores[k] for k in m.manifest.labels], atol=1e-5)
