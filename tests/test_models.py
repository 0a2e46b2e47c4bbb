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


def test_shipped_weights_reproduce_the_card(shared):
    """Recompute validation AUROC / sensitivity / specificity from the weights in the repo."""

    from medexport.models.recipes.pneumonia_cxr import load_split, predict

    config = get_config("pneumonia-cxr")
    record = config.training_record()
    images, labels = load_split("val")
    scores = predict(create_model("pneumonia-cxr"), images)
    threshold = record["thresholds"]["pneumonia"]
    v = record["validation"]
    assert auroc(labels, scores) == pytest.approx(v["auroc"]["value"], abs=5e-4)
    sens, spec = sens_spec(labels, scores, threshold)
    assert sens == pytest.approx(v["sensitivity"]["value"], abs=5e-4)
    assert spec == pytest.approx(v["specificity"]["value"], abs=5e-4)
    assert v["auroc"]["value"] > 0.944  # the published ResNet-18 baseline (on test)
    card = config.card_path.read_text()
    assert f"{v['auroc']['value']:.3f}" in card and "not a medical device" in card.lower()
    assert config.weights_path.stat().st_size < 5e6


def test_cam_equals_logits_after_pooling():
    """CAM maps averaged over space give back the logits: the map explains exactly this score."""
    import torch

    model = create_model("pneumonia-cxr")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits, cam = model.forward_with_cam(x)
        np.testing.assert_allclose(cam.mean(dim=(2, 3)).numpy(), logits.numpy(), atol=1e-5)
        np.testing.assert_allclose(model(x).numpy(), logits.numpy(), atol=1e-6)


def test_densenet121_shape():
    import torch

    model = create_model("densenet121-cxr")
    with torch.no_grad():
        logits, cam = model.forward_with_cam(torch.zeros(1, 1, 224, 224))
    assert logits.shape == (1, 14) and cam.shape == (1, 14, 7, 7)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(6.95e6, rel=0.02)
