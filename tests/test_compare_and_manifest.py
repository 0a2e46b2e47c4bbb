"""Metrics (against brute force) and the manifest's refusal of what it does not know."""
import itertools

import numpy as np
import pytest

from medexport.engine.compare import auroc, binary_metrics, bootstrap_ci, sens_spec
from medexport.engine.errors import BundleError
from medexport.engine.manifest import Manifest


def brute_auroc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    pairs = list(itertools.product(pos, neg))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes ties
    assert auroc(y, s) == pytest.approx(brute_auroc(y, s))


def test_sensitivity_specificity():
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    assert sens_spec(y, s, 0.5) == (pytest.approx(2 / 3), 0.5)


def test_bootstrap_interval_brackets_value():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.5 * y
    m = binary_metrics(y, s, 0.75, n_boot=300)
    lo, hi = m["auroc"]["ci95"]
    assert lo < m["auroc"]["value"] < hi and hi - lo < 0.2
    assert bootstrap_ci(lambda a: a.mean(), np.ones(10)) == (1.0, 1.0)


def test_manifest_round_trip_and_refusals(pneumonia_bundle):
    text = (pneumonia_bundle / "manifest.json").read_text()
    m = Manifest.from_json(text)
    assert Manifest.from_json(m.to_json()) == m
    import json

    data = json.loads(text)
    data["preprocess"]["resample"] = "lanczos"
    with pytest.raises(BundleError, match="preprocess.resample is 'lanczos'"):
        Manifest.from_dict(data)
    data = json.loads(text)
    data["surprise"] = 1
    with pytest.raises(BundleError, match=r"unknown key\(s\) \['surprise'\]"):
        Manifest.from_dict(data)
    with pytest.raises(BundleError, match="not valid JSON"):
        Manifest.from_json("{")


def test_ecg_bundle_from_another_detector_is_refused():
    """A bundle trained on another R-peak detector would get different beats: refused, with the fix."""
    from medexport.engine.manifest import EcgPreprocess

    with pytest.raises(BundleError, match="wfdb.xqrs.*rebuild the bundle"):
        EcgPreprocess(detector="wfdb.xqrs")
