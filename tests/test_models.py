"""Registered models, and shipped weights that reproduce their model card's numbers."""
import numpy as np
import pytest

from medexport.engine.compare import auroc, sens_spec
from medexport.engine.errors import ConfigurationError
from medexport.models import create_model, get_config, list_models


def test_registry_lists_and_suggests():
    assert {"pneumonia-cxr", "densenet121-cxr"} <= set(list_models())
    with pytest.raises(ConfigurationError, match="Did you mean 'pneumonia-cxr'"):
        get_config("pneumonia-cx")


def _listed(path):
    import csv

    with open(path, newline="") as fh:
        return [(r["file"], r["label"]) for r in csv.DictReader(fh)]


def test_shipped_weights_reproduce_the_card(shared):
    """Recompute validation AUROC / sensitivity / specificity from the weights in the repo, on the
    patient-held-out films the recipe listed, preprocessed by the build's own dataset reader."""
    from medexport.engine.manifest import ImagePreprocess
    from medexport.export.datasets import load_dataset
    from medexport.models.recipes.pneumonia_cxr import VAL_CSV, predict

    config = get_config("pneumonia-cxr")
    record = config.training_record()
    val = load_dataset(str(VAL_CSV), ImagePreprocess(**config.preprocess), labels=config.labels)
    assert val.inputs.shape == (record["data"]["val"], 1, 224, 224)
    images = np.rint((val.inputs[:, 0] * 0.25 + 0.5) * 255).astype(np.uint8)  # predict() takes the 8-bit grid
    scores = predict(create_model("pneumonia-cxr"), images)
    threshold = record["thresholds"]["pneumonia"]
    v = record["validation"]
    assert auroc(val.labels, scores) == pytest.approx(v["auroc"]["value"], abs=5e-4)
    sens, spec = sens_spec(val.labels, scores, threshold)
    assert sens == pytest.approx(v["sensitivity"]["value"], abs=5e-4)
    assert spec == pytest.approx(v["specificity"]["value"], abs=5e-4)
    assert v["auroc"]["value"] > 0.968  # Kermany et al. 2018 (pretrained Inception-v3, on test)
    card = config.card_path.read_text()
    assert f"{v['auroc']['value']:.3f}" in card and "not a medical device" in card.lower()
    assert config.weights_path.stat().st_size < 5e6


def test_validation_part_holds_out_whole_patients(shared):
    """No patient (personNNN / IM-XXXX) has films on both sides of the split."""
    from medexport.models.recipes.pneumonia_cxr import CALIB_CSV, VAL_CSV, list_files, patient_of, patient_split

    files, labels = list_files()
    fit, held = patient_split(files, labels, 0.2, seed=get_config("pneumonia-cxr").training_record()["recipe"]["seed"])
    assert not {patient_of(files[i]) for i in fit} & {patient_of(files[i]) for i in held}
    assert patient_of(files[0].with_name("NORMAL2-IM-0115-0001.jpeg")) == patient_of(files[0].with_name("IM-0115-0002.jpeg"))
    listed = {f for f, _ in _listed(VAL_CSV)}
    assert listed == {f"images/kermany-cxr224/train/{files[i].parent.name}/{files[i].name}" for i in held}
    assert not listed & {f for f, _ in _listed(CALIB_CSV)}  # INT8 calibrates on fit films only


def test_csv_list_is_a_labelled_dataset(shared, tmp_path):
    """A file,label CSV: relative rows under the shared data, absolute rows as given, labels by name."""
    from medexport.engine.manifest import ImagePreprocess
    from medexport.export.datasets import load_dataset

    config = get_config("pneumonia-cxr")
    nih = sorted((shared / "images" / "cxr-nih").glob("*.png"))[0]
    listing = tmp_path / "list.csv"
    listing.write_text(f"file,label\nimages/kermany-cxr224/train/NORMAL/IM-0115-0001.jpeg,normal\n{nih},pneumonia\n")
    ds = load_dataset(str(listing), ImagePreprocess(**config.preprocess), labels=config.labels)
    assert ds.labels.tolist() == [0, 1] and ds.names == ("IM-0115-0001.jpeg", nih.name)
    assert ds.inputs.shape == (2, 1, 224, 224)
    listing.write_text("file,label\nimages/kermany-cxr224/train/NORMAL/missing.jpeg,normal\n")
    with pytest.raises(ConfigurationError, match="missing.jpeg does not exist"):
        load_dataset(str(listing), ImagePreprocess(**config.preprocess), labels=config.labels)
    listing.write_text(f"file,label\n{nih},effusion\n")
    with pytest.raises(ConfigurationError, match="'effusion' is not one of the model's labels"):
        load_dataset(str(listing), ImagePreprocess(**config.preprocess), labels=config.labels)


def test_cam_equals_logits_after_pooling():
    """CAM maps averaged over space give back the logits: the map explains exactly this score."""
    import torch

    model = create_model("pneumonia-cxr")
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        logits, cam = model.forward_with_cam(x)
        np.testing.assert_allclose(cam.mean(dim=(2, 3)).numpy(), logits.numpy(), atol=1e-5)
        np.testing.assert_allclose(model(x).numpy(), logits.numpy(), atol=1e-5)
    assert cam.shape == (2, 2, 7, 7)


def test_densenet121_shape():
    import torch

    model = create_model("densenet121-cxr")
    with torch.no_grad():
        logits, cam = model.forward_with_cam(torch.zeros(1, 1, 224, 224))
    assert logits.shape == (1, 14) and cam.shape == (1, 14, 7, 7)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(6.95e6, rel=0.02)
