"""Shift-aware check for every recipe: does the validation number predict what a new site sees?

Besides the patient-held-out part, a recipe reports (a) its metric under the robustness
perturbations of ``models/perturbations.py`` (the functions of the build's robustness report) and (b) its
metric on a part held out by *acquisition traits* (exposure / histogram, collimation, burned-in
markers), which the model is trained without, and the gap between the two. ``gate`` refuses a
model whose score falls sharply under shift; ``markdown`` writes the card's side-by-side table.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from medexport.engine.compare import binary_metrics
from medexport.engine.errors import ConfigurationError

MAX_DROP = 0.03  # AUROC points a released model may lose on the acquisition-held-out part / a perturbation
MAX_BALANCED_DROP = 0.05  # balanced accuracy at the shipped threshold (a shifted score scale shows here)
IMAGE_TRAITS = ("grey mean", "grey sd", "grey p05", "grey p50", "grey p95", "dark border share",
                "bright border share", "content height", "content width")


def image_traits(images: np.ndarray) -> np.ndarray:
    """(N, len(IMAGE_TRAITS)) acquisition traits of greyscale films in [0, 1] (uint8 is scaled):
    the grey-level histogram, the share of near-black / near-white pixels in the outer 10 % ring
    (collimation, burned-in text markers) and the extent of the exposed content (rows / columns
    whose mean is above a quarter of the film's mean)."""
    x = np.asarray(images, np.float32)
    x = x / 255.0 if np.asarray(images).dtype == np.uint8 else x
    n, h, w = x.shape
    ring = np.ones((h, w), bool)
    ring[h // 10:h - h // 10, w // 10:w - w // 10] = False
    flat = x.reshape(n, -1)
    p05, p50, p95 = np.percentile(flat, [5, 50, 95], axis=1)
    mean = flat.mean(1)
    border = x[:, ring]
    lit_rows = (x.mean(2) > 0.25 * mean[:, None]).mean(1)
    lit_cols = (x.mean(1) > 0.25 * mean[:, None]).mean(1)
    return np.stack([mean, flat.std(1), p05, p50, p95, (border < 0.06).mean(1), (border > 0.94).mean(1),
                     lit_rows, lit_cols], 1)


def acquisition_axis(traits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-film position on the main axis of acquisition variation: the first principal component of
    the robustly standardised traits after removing each class's median, so that the axis follows how
    films were taken, not the diagnosis."""
    z = (traits - np.median(traits, 0)) / np.maximum(np.subtract(*np.percentile(traits, [75, 25], 0)), 1e-6)
    for cls in np.unique(labels):
        z[labels == cls] -= np.median(z[labels == cls], 0)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    axis = vt[0] * np.sign(vt[0][np.argmax(np.abs(vt[0]))])
    return z @ axis


def holdout_by_traits(position: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the acquisition-held-out part: per class, whole patient groups from the high end of
    ``position`` (group median) until ``fraction`` of that class's films, so both classes are present
    in the same proportion as in the data and no patient is split."""
    held = np.zeros(len(labels), bool)
    for cls in np.unique(labels):
        in_cls = labels == cls
        names = np.unique(groups[in_cls])
        order = names[np.argsort([-np.median(position[in_cls & (groups == g)]) for g in names], kind="stable")]
        for g in order:
            if held[in_cls].sum() >= fraction * in_cls.sum():
                break
            held |= in_cls & (groups == g)
    return np.flatnonzero(held)


def trait_summary(traits: np.ndarray, parts: dict) -> str:
    """Markdown table: the median of every trait in each named part (index arrays)."""
    lines = ["| trait | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
    for j, name in enumerate(IMAGE_TRAITS):
        lines.append(f"| {name} | " + " | ".join(f"{np.median(traits[idx, j]):.3f}" for idx in parts.values()) + " |")
    return "\n".join(lines)


def perturbed(images: np.ndarray, names: list[str], perturbation, seed: int = 0) -> np.ndarray:
    """Films in [0, 1] degraded by one ``models.perturbations`` perturbation (seeded per film by name,
    as in the build's robustness report), same shape."""
    x = np.asarray(images, np.float32)
    x = x / 255.0 if np.asarray(images).dtype == np.uint8 else x
    return np.stack([perturbation.apply(img, name, seed) for img, name in zip(x, names)])


def scores(score: Callable, images: dict, labels: dict, names: list[str], seed: int = 0) -> dict:
    """Labels and scores of every row of the check. ``score(images01) -> scores``; ``images`` /
    ``labels``: arrays of the parts ``validation`` (patient-held-out) and ``acquisition``
    (trait-held-out); ``names``: the validation films' names (seed the perturbations)."""
    from ..perturbations import IMAGE_PERTURBATIONS

    out = {k: {"labels": np.asarray(labels[k]), "scores": score(images[k])} for k in ("validation", "acquisition")}
    out["perturbations"] = {p.name: {"labels": out["validation"]["labels"], "description": p.description,
                                     "scores": score(perturbed(images["validation"], names, p, seed))}
                            for p in IMAGE_PERTURBATIONS}
    return out


def metrics(rows: dict, threshold: float, n_boot: int = 2000) -> dict:
    """Metrics with 95 % CIs (AUROC bootstrap, proportions Wilson) of every row of :func:`scores`, and
    the gaps: validation AUROC minus the acquisition part's, and minus the worst perturbation's."""
    def one(r):
        return binary_metrics(r["labels"], r["scores"], threshold, n_boot=n_boot)

    out = {"validation": one(rows["validation"]), "acquisition": one(rows["acquisition"]),
           "perturbations": {k: {"description": r["description"], **one(r)} for k, r in rows["perturbations"].items()}}
    out["gap"] = gaps(out)
    return out


def gaps(out: dict) -> dict:
    """Validation AUROC minus the acquisition part's and the worst perturbation's; the largest fall
    in balanced accuracy at the threshold over every shift row."""
    worst = min(out["perturbations"], key=lambda k: out["perturbations"][k]["auroc"]["value"])
    base = out["validation"]["auroc"]["value"]
    shifted = [out["acquisition"], *out["perturbations"].values()]
    return {"acquisition_auroc_drop": round(base - out["acquisition"]["auroc"]["value"], 4),
            "worst_perturbation": worst,
            "worst_perturbation_auroc_drop": round(base - out["perturbations"][worst]["auroc"]["value"], 4),
            "worst_balanced_accuracy_drop": round(max(balanced_accuracy(out["validation"]) - balanced_accuracy(m)
                                                      for m in shifted), 4)}


def balanced_accuracy(m: dict) -> float:
    return (m["sensitivity"]["value"] + m["specificity"]["value"]) / 2


def gate(result: dict, max_drop: float = MAX_DROP, max_balanced_drop: float = MAX_BALANCED_DROP) -> list[str]:
    """Why the model must not be released (empty: it may): an AUROC drop above ``max_drop`` on the
    acquisition-held-out part or under any perturbation, or a balanced-accuracy drop at the shipped
    threshold above ``max_balanced_drop`` on any shift row."""
    g, problems = gaps(result), []
    if g["worst_balanced_accuracy_drop"] > max_balanced_drop:
        problems.append(f"balanced accuracy at the threshold falls by {g['worst_balanced_accuracy_drop']:.3f} "
                        "on a shift row (the score scale moves)")
    if g["acquisition_auroc_drop"] > max_drop:
        problems.append(f"AUROC falls by {g['acquisition_auroc_drop']:.3f} on the acquisition-held-out part")
    if g["worst_perturbation_auroc_drop"] > max_drop:
        problems.append(f"AUROC falls by {g['worst_perturbation_auroc_drop']:.3f} under {g['worst_perturbation']}")
    return problems


def refuse_if_shifted(result: dict, max_drop: float = MAX_DROP) -> None:
    problems = gate(result, max_drop)
    if problems:
        raise ConfigurationError("the model's score falls sharply under shift: " + "; ".join(problems),
                                 expected=f"an AUROC drop of at most {max_drop} and a balanced-accuracy drop of "
                                          f"at most {MAX_BALANCED_DROP} on every shift-check row",
                                 fix="train for transfer (augmentation, normalisation) or pass --allow-shift-drop "
                                     "to write the weights for inspection (not for release)")


def _cell(m: dict, key: str) -> str:
    lo, hi = m[key]["ci95"]
    return f"{m[key]['value']:.3f} ({lo:.3f}-{hi:.3f})"


def markdown(result: dict) -> str:
    """The card's table: validation and every shift row side by side (value, 95 % CI)."""
    rows = [("patient-held-out validation", result["validation"]),
            ("acquisition-held-out part (trained without it)", result["acquisition"])]
    from ..perturbations import IMAGE_PERTURBATIONS

    order = [p.name for p in IMAGE_PERTURBATIONS]  # a record read back from JSON has its keys sorted
    named = sorted(result["perturbations"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    rows += [(f"validation, {p['description']}", p) for _, p in named]
    lines = ["| part | n (pneumonia) | AUROC | accuracy | sensitivity | specificity |", "|---|---|---|---|---|---|"]
    for label, m in rows:
        lines.append(f"| {label} | {m['n']} ({m['n_positive']}) | " +
                     " | ".join(_cell(m, k) for k in ("auroc", "accuracy", "sensitivity", "specificity")) + " |")
    return "\n".join(lines)
