"""Study: does an RR-irregularity rule on top of ``ecg-rhythm`` recover AF the network calls other or noisy?

    python -m medexport.models.recipes.ecg_rr_rule [--epochs 50] [--folds 5] [--oof saved.pkl]

The rule (parameters: ``rmssd_min``, ``pnn50_min``, ``af_min``): a record the network calls
`other` or `noisy`, with `af` its second-highest score at or above ``af_min``, is called AF when
its RR irregularity is high (normalised RMSSD >= ``rmssd_min`` and pNN50 >= ``pnn50_min``; the
record features the beat tokens and the result already carry). Measured nested over the recipe's
own folds: for each fold the parameters are chosen on the other folds' out-of-fold predictions
(every shift condition of ``ecg_shift`` pooled), the highest mean AF sensitivity whose mean
specificity falls by at most the budget, then applied to the fold. No test split is used.
Nothing here changes the shipped model; the study says whether the rule earns a manifest field.
"""
from __future__ import annotations

import argparse
import itertools
import pickle
import time

import numpy as np

from . import ecg_shift

AF, OTHER, NOISY = 1, 2, 3
GRID = tuple(itertools.product((0.08, 0.10, 0.12, 0.15, 0.18, 0.22, 0.26), (0.0, 0.3, 0.4, 0.5, 0.6), (0.0, 0.1, 0.2)))
BUDGETS = (0.01, 0.02)  # largest allowed fall in mean AF specificity on the fitting folds


def record_irregularity(tokens: np.ndarray) -> np.ndarray:
    """(rr_cv, rmssd_norm, pnn50) of a record: the last three RR features of its beat tokens."""
    return tokens[0, -3:].astype(np.float64) if len(tokens) else np.zeros(3)


def apply_rule(probs: np.ndarray, irregularity: np.ndarray, rule: tuple | None) -> np.ndarray:
    """Class per record: argmax, switched to AF where ``rule`` = (rmssd_min, pnn50_min, af_min) holds."""
    pred = probs.argmax(1)
    if rule is None:
        return pred
    rmssd_min, pnn50_min, af_min = rule
    second = np.argsort(probs, 1)[:, -2]
    flip = (np.isin(pred, (OTHER, NOISY)) & (second == AF) & (probs[:, AF] >= af_min)
            & (irregularity[:, 1] >= rmssd_min) & (irregularity[:, 2] >= pnn50_min))
    return np.where(flip, AF, pred)


def mean_rates(oof: dict, irregular: dict, labels: np.ndarray, idx: np.ndarray, rule) -> tuple[float, float]:
    """Mean AF sensitivity and specificity over the shift conditions on records ``idx``."""
    sens, spec, y = [], [], labels[idx]
    for name in oof:
        pred = apply_rule(oof[name][idx], irregular[name][idx], rule)
        sens.append(np.mean(pred[y == AF] == AF))
        spec.append(np.mean(pred[y != AF] != AF))
    return float(np.mean(sens)), float(np.mean(spec))


def choose_rule(oof: dict, irregular: dict, labels: np.ndarray, idx: np.ndarray, budget: float):
    """The grid's rule with the best (sensitivity, specificity) whose specificity falls by <= ``budget``; None if none gains."""
    base = mean_rates(oof, irregular, labels, idx, None)
    best, key = None, base
    for rule in GRID:
        sens, spec = mean_rates(oof, irregular, labels, idx, rule)
        if spec >= base[1] - budget and (sens, spec) > key:
            best, key = rule, (sens, spec)
    return best


def nested(oof: dict, irregular: dict, labels: np.ndarray, fold_of: np.ndarray, budget: float) -> tuple[dict, list]:
    """Per condition, the rule's predictions with each fold's rule chosen on the other folds."""
    pred = {name: np.zeros(len(labels), int) for name in oof}
    rules = []
    for f in sorted(set(fold_of.tolist())):
        rule = choose_rule(oof, irregular, labels, np.flatnonzero(fold_of != f), budget)
        rules.append(rule)
        te = fold_of == f
        for name in oof:
            pred[name][te] = apply_rule(oof[name][te], irregular[name][te], rule)
    return pred, rules


def report(oof: dict, irregular: dict, labels: np.ndarray, fold_of: np.ndarray) -> str:
    def cell(m):
        return f"{m['k']}/{m['n']} {m['value']:.3f} ({m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})"

    lines = []
    for budget in BUDGETS:
        pred, rules = nested(oof, irregular, labels, fold_of, budget)
        lines.append(f"\nspecificity budget {budget}; rule per fold (rmssd_min, pnn50_min, af_min): {rules}")
        lines.append("| condition | AF sensitivity before -> after | AF specificity before -> after | noisy recall before -> after | other recall before -> after |")
        lines.append("|---|---|---|---|---|")
        for name in oof:
            b, a = ecg_shift.af_rates(labels, oof[name].argmax(1)), ecg_shift.af_rates(labels, pred[name])
            other = [np.mean(p[labels == OTHER] == OTHER) for p in (oof[name].argmax(1), pred[name])]
            lines.append(f"| {name} | {cell(b['af_sensitivity'])} -> {cell(a['af_sensitivity'])} | "
                         f"{cell(b['af_specificity'])} -> {cell(a['af_specificity'])} | "
                         f"{cell(b['noisy_recall'])} -> {cell(a['noisy_recall'])} | {other[0]:.3f} -> {other[1]:.3f} |")
    for name in oof:
        pred = oof[name].argmax(1)
        missed = (labels == AF) & (pred != AF)
        second = np.argsort(oof[name], 1)[:, -2]
        lines.append(f"{name}: {int(missed.sum())} AF missed, called N/A/O/~ {np.bincount(pred[missed], minlength=4).tolist()}, "
                     f"AF second in {int((second[missed] == AF).sum())}; their RMSSD {np.round(np.sort(irregular[name][missed, 1]), 2).tolist()}; "
                     f"non-AF RMSSD median/90th pct {np.round(np.quantile(irregular[name][labels != AF, 1], [0.5, 0.9]), 3).tolist()}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oof", default=None, help="a pickle of {labels, oof, fold_of, irregular} from an earlier run")
    parser.add_argument("--save", default=None, help="write that pickle here")
    args = parser.parse_args()
    if args.oof:
        with open(args.oof, "rb") as fh:
            saved = pickle.load(fh)
    else:
        import torch

        from . import ecg_rhythm

        torch.set_num_threads(2)
        start, s = time.time(), ecg_rhythm.spec()
        labels, conditions, copies = ecg_rhythm.prepared(args.seed, s)
        oof, fold_of = ecg_rhythm.cross_validate(conditions, labels, copies, args.folds, args.epochs, args.seed, s)
        saved = {"labels": labels, "oof": oof, "fold_of": fold_of, "seconds": time.time() - start,
                 "irregular": {name: np.array([record_irregularity(t) for t in toks]) for name, toks in conditions.items()}}
        if args.save:
            with open(args.save, "wb") as fh:
                pickle.dump(saved, fh)
    print(report(saved["oof"], saved["irregular"], saved["labels"], saved["fold_of"]))


if __name__ == "__main__":
    main()
