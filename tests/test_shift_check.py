"""The shift-aware check (models/recipes/shift_check.py) on real Kermany films and the shipped
pneumonia-cxr weights: a card's numbers must say what a new site would see, not only a patient split."""
import numpy as np
import pytest

from medexport.engine.compare import auroc
from medexport.engine.errors import ConfigurationError
from medexport.models import create_model, get_config
from medexport.models.recipes import shift_check


@pytest.fixture(scope="module")
def films(shared):
    from medexport.models.recipes.pneumonia_cxr import list_files, load_images

    files, labels = list_files()
    return files, labels, load_images(files)


def test_traits_see_collimation_and_exposure(films):
    """A real film with black collimation bars has more dark border and less lit extent; the
    histogram traits are the film's own percentiles."""
    _, _, images = films
    film = images[0].astype(np.float32) / 255
    framed = film.copy()
    framed[:, :30] = 0
    framed[:, -30:] = 0
    t = shift_check.image_traits(np.stack([film, framed]))
    names = list(shift_check.IMAGE_TRAITS)
    assert t[1, names.index("dark border share")] > t[0, names.index("dark border share")] + 0.3
    assert t[1, names.index("content width")] < t[0, names.index("content width")] - 0.15
    assert t[0, names.index("grey p50")] == pytest.approx(np.percentile(film, 50), abs=1e-6)
    np.testing.assert_allclose(shift_check.image_traits(images[:2]), shift_check.image_traits(images[:2] / 255.0),
                               atol=1e-5)


def test_acquisition_part_is_whole_patients_both_classes_and_unlike_the_fit(films):
    from medexport.models.recipes.pneumonia_cxr import ACQ_FRACTION, patient_of, split

    files, labels, images = films
    parts = split(files, labels, images, seed=0)
    acq, fit = parts["acquisition"], parts["fit"]
    assert not set(acq) & set(fit) and not set(parts["validation"]) & set(fit)
    assert not {patient_of(files[i]) for i in acq} & {patient_of(files[i]) for i in fit}
    for cls in (0, 1):  # both classes, at the stated share of each
        share = (labels[acq] == cls).sum() / (labels == cls).sum()
        assert ACQ_FRACTION <= share < ACQ_FRACTION + 0.03
    traits = shift_check.image_traits(images)
    border = list(shift_check.IMAGE_TRAITS).index("dark border share")
    assert np.median(traits[acq, border]) < 0.5 * np.median(traits[fit, border])  # a different acquisition


def test_perturbation_rows_degrade_the_films_as_the_robustness_report_does(films):
    """The check reuses the robustness report's perturbations: gamma 1.5 darkens, contrast x0.6
    flattens, every row is scored on the validation films and seeded by name (reruns agree)."""
    from medexport.models.perturbations import PERTURBATIONS

    _, labels, images = films
    idx = np.r_[0:20, len(labels) - 20:len(labels)]
    names = [f"film{i}" for i in idx]
    rows = shift_check.scores(lambda x: x.mean(axis=(1, 2)), {"validation": images[idx], "acquisition": images[idx]},
                              {"validation": labels[idx], "acquisition": labels[idx]}, names)
    clean = rows["validation"]["scores"]
    assert (rows["perturbations"]["gamma_1.5"]["scores"] < clean).all()
    sd = shift_check.perturbed(images[idx], names, PERTURBATIONS["contrast_x0.6"]).std(axis=(1, 2))
    assert (sd < (images[idx] / 255.0).std(axis=(1, 2))).all()
    again = shift_check.scores(lambda x: x.mean(axis=(1, 2)), {"validation": images[idx], "acquisition": images[idx]},
                               {"validation": labels[idx], "acquisition": labels[idx]}, names)
    np.testing.assert_array_equal(again["perturbations"]["gaussian_noise"]["scores"],
                                  rows["perturbations"]["gaussian_noise"]["scores"])


def test_gate_refuses_a_model_that_falls_under_shift():
    """A score that ranks the validation part well and the acquisition part at chance is refused,
    with the drop named; the same score everywhere passes."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100), np.ones(100)].astype(int)
    good, noise = y + rng.normal(0, 0.3, 200), rng.normal(0, 1, 200)
    pert = {"gamma_1.5": {"labels": y, "scores": good, "description": "gamma 1.5"}}
    falls = shift_check.metrics({"validation": {"labels": y, "scores": good},
                                 "acquisition": {"labels": y, "scores": noise}, "perturbations": pert}, 0.5, n_boot=200)
    with pytest.raises(ConfigurationError, match="falls by 0.[34].* on the acquisition-held-out part"):
        shift_check.refuse_if_shifted(falls)
    holds = shift_check.metrics({"validation": {"labels": y, "scores": good},
                                 "acquisition": {"labels": y, "scores": good}, "perturbations": pert}, 0.5, n_boot=200)
    assert shift_check.gate(holds) == []
    assert "| acquisition-held-out part (trained without it) | 200 (100) |" in shift_check.markdown(holds)


def test_shipped_weights_reproduce_the_cards_shift_check(films):
    """The shipped record carries the shift check, the card shows it beside validation, the model
    passed the gate, and the shipped weights give the recorded AUROC on the acquisition-held-out part."""
    from medexport.models.recipes.pneumonia_cxr import predict, split

    files, labels, images = films
    config = get_config("pneumonia-cxr")
    record = config.training_record()
    checked = record["shift_check"]
    assert shift_check.gate(checked) == []
    acq = split(files, labels, images, seed=record["recipe"]["seed"])["acquisition"]
    assert len(acq) == checked["acquisition"]["n"]
    value = auroc(labels[acq], predict(create_model("pneumonia-cxr"), images[acq]))
    assert value == pytest.approx(checked["acquisition"]["auroc"]["value"], abs=5e-4)
    card = config.card_path.read_text()
    assert "## Shift check" in card and f"{checked['acquisition']['auroc']['value']:.3f}" in card
