"""Guards: what an artifact must keep of its source model's clinical performance.

One guard per metric. A task names the metrics that can guard it (``Task.metrics``, default
first); ``--metric`` chooses among them. A guard computes its metric, compares artifact and
source on labelled validation data, and returns a typed :class:`GuardReport` that ``build``
(refuse or keep), ``inspect`` and the bundle's report files read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from medexport.engine.compare import (auroc, binary_metrics, bootstrap_ci, chance_problem, dice, f1_per_class, iou,
                                      macro_f1, mean_average_precision)
from medexport.engine.errors import ConfigurationError


@dataclass(frozen=True)
class GuardReport:
    """A guard's verdict on one artifact: the stored JSON (``data``) and what it means."""

    metric: str
    passed: bool
    problems: tuple  # one sentence per budget missed
    data: dict  # written into the artifact's report as "validation"

    @property
    def text(self) -> str:
        return GUARDS_BY_REPORT[self.data["metric"]].describe(self.data)


class Guard:
    """Base: the metric, its default INT8 budget, and the comparison of artifact and source."""

    name: ClassVar[str]  # as --metric names it
    report_metric: ClassVar[str]  # as the stored report names it
    default_budget: ClassVar[float]

    def __init__(self, labels: tuple, postprocess, preprocess, *, max_drop: float | None = None,
                 max_decision_drop: float | None = None, n_boot: int = 1000):
        self.labels, self.postprocess, self.preprocess = labels, postprocess, preprocess
        self.max_drop, self.max_decision_drop, self.n_boot = max_drop, max_decision_drop, n_boot

    def value(self, val, rows: np.ndarray) -> float:
        """The guarded number for per-row scores ``rows`` of validation data ``val``."""
        raise NotImplementedError

    def report(self, val, source_rows: np.ndarray, rows: np.ndarray) -> GuardReport:
        raise NotImplementedError

    def source_problems(self, val, source_rows: np.ndarray) -> list[str]:
        """What is wrong with the source model itself on ``val`` (the build warns loudly); none by default."""
        return []

    @classmethod
    def describe(cls, data: dict) -> str:
        """One line for ``inspect`` from a stored report."""
        raise NotImplementedError

    @staticmethod
    def _budget(data: dict, key: str = "max_drop") -> str:
        return "" if data.get(key) is None else f"; budget {data[key]}"


class AurocGuard(Guard):
    """Thresholded findings: AUROC may drop by ``max_drop``; sensitivity and specificity at the
    operating threshold (the decisions a clinician sees) by ``max_decision_drop``."""

    name = report_metric = "auroc"
    default_budget = 0.005

    def value(self, val, rows):
        scores, thresholds = val.item_scores(rows), self.postprocess.thresholds
        return float(np.mean([auroc(val.labels == self.labels.index(k), scores[:, self.labels.index(k)])
                              for k in thresholds]))

    def source_problems(self, val, source_rows):
        """A source no better than chance on the validation data (AUROC 95 % CI reaching 0.5)."""
        scores = val.item_scores(source_rows)
        found = []
        for label, threshold in self.postprocess.thresholds.items():
            k = self.labels.index(label)
            metrics = binary_metrics((val.labels == k).astype(int), scores[:, k], threshold, n_boot=self.n_boot)
            found += [p for p in [chance_problem(metrics, label)] if p]
        return found

    def report(self, val, source_rows, rows):
        src_all, art_all = val.item_scores(source_rows), val.item_scores(rows)
        per_label, flips, drops, decision_drops = {}, [], [], []
        for label, threshold in self.postprocess.thresholds.items():
            k = self.labels.index(label)
            truth = (val.labels == k).astype(int)
            src = binary_metrics(truth, src_all[:, k], threshold, n_boot=self.n_boot)
            art = binary_metrics(truth, art_all[:, k], threshold, n_boot=self.n_boot)
            drop = round(src["auroc"]["value"] - art["auroc"]["value"], 4)
            drops.append(drop)
            decision = {m: round(src[m]["value"] - art[m]["value"], 4) for m in ("sensitivity", "specificity")}
            decision_drops += list(decision.values())
            per_label[label] = {"source": src, "artifact": art, "auroc_drop": drop, "decision_drop": decision}
            changed = (src_all[:, k] >= threshold) != (art_all[:, k] >= threshold)
            flips += [{"item": val.names[i], "label": label, "source_score": round(float(src_all[i, k]), 4),
                       "artifact_score": round(float(art_all[i, k]), 4), "truth": int(truth[i])}
                      for i in np.flatnonzero(changed)]
        worst = max(drops) if drops else 0.0
        worst_decision = max(decision_drops) if decision_drops else 0.0
        problems = []
        if self.max_drop is not None and worst > self.max_drop:
            problems.append(f"on validation AUROC drops by {worst:.4f} (budget {self.max_drop})")
        if self.max_decision_drop is not None and worst_decision > self.max_decision_drop:
            problems.append(f"sensitivity/specificity at the threshold drop by up to {worst_decision:.4f} "
                            f"(budget {self.max_decision_drop}); {len(flips)} decisions flip")
        data = {"metric": "auroc", "n": int(len(val.labels)), "per_label": per_label, "auroc_drop": worst,
                "max_drop": self.max_drop, "decision_drop": worst_decision, "max_decision_drop": self.max_decision_drop,
                "passed": not problems, "decision_flips": flips, "n_flips": len(flips)}
        return GuardReport("auroc", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        parts = [f"{label}: AUROC {m['source']['auroc']['value']:.4f}->{m['artifact']['auroc']['value']:.4f}, "
                 f"sens {m['source']['sensitivity']['value']:.3f}->{m['artifact']['sensitivity']['value']:.3f}, "
                 f"spec {m['source']['specificity']['value']:.3f}->{m['artifact']['specificity']['value']:.3f}"
                 for label, m in v["per_label"].items()]
        budget = "" if v["max_drop"] is None else f"; budget AUROC {v['max_drop']}, decisions {v['max_decision_drop']}"
        return "; ".join(parts) + f"; {v['n_flips']} flips of {v['n']}{budget}"


class F1Guard(Guard):
    """Argmax decisions (rhythm classes, classifiers without thresholds): macro F1 may drop by
    ``max_drop``."""

    name = "f1"
    report_metric = "macro_f1"
    default_budget = 0.02

    def value(self, val, rows):
        return macro_f1(val.labels, val.item_scores(rows).argmax(1), len(self.labels))

    def report(self, val, source_rows, rows):
        n = len(self.labels)
        src_pred, art_pred = val.item_scores(source_rows).argmax(1), val.item_scores(rows).argmax(1)

        def summary(pred):
            lo, hi = bootstrap_ci(lambda y, p: macro_f1(y, p, n), val.labels, pred, n=self.n_boot)
            return {"macro_f1": {"value": round(macro_f1(val.labels, pred, n), 4), "ci95": [round(lo, 4), round(hi, 4)]},
                    "f1": {lab: round(float(v), 4) for lab, v in zip(self.labels, f1_per_class(val.labels, pred, n))}}

        src, art = summary(src_pred), summary(art_pred)
        drop = round(src["macro_f1"]["value"] - art["macro_f1"]["value"], 4)
        flips = [{"item": val.names[i], "source": self.labels[src_pred[i]], "artifact": self.labels[art_pred[i]],
                  "truth": self.labels[val.labels[i]]} for i in np.flatnonzero(src_pred != art_pred)]
        problems = ([f"on validation macro F1 drops by {drop:.4f} (budget {self.max_drop}); {len(flips)} items change"]
                    if self.max_drop is not None and drop > self.max_drop else [])
        data = {"metric": "macro_f1", "n": int(len(val.labels)), "source": src, "artifact": art, "f1_drop": drop,
                "max_drop": self.max_drop, "passed": not problems, "decision_flips": flips, "n_flips": len(flips)}
        return GuardReport("f1", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        src, art = v["source"]["macro_f1"]["value"], v["artifact"]["macro_f1"]["value"]
        return f"macro F1 {src:.4f}->{art:.4f}; {v['n_flips']} flips of {v['n']}{cls._budget(v)}"


class DiceGuard(Guard):
    """Segmentation: mean Dice against the truth may drop by ``max_drop``; masks are blended
    from tiles exactly as the engine does."""

    name = report_metric = "dice"
    default_budget = 0.01

    def _masks(self, val, rows) -> list[np.ndarray]:
        from medexport.engine.preprocess import blend_tiles

        threshold = next(iter(self.postprocess.thresholds.values()))
        return [blend_tiles(rows[val.groups == k][:, 0], origins, shape, self.preprocess.overlap) >= threshold
                for k, (origins, shape) in enumerate(zip(val.extras["origins"], val.extras["shapes"]))]

    def value(self, val, rows):
        return float(np.mean([dice(m, t) for m, t in zip(self._masks(val, rows), val.extras["masks"])]))

    def report(self, val, source_rows, rows):
        truth = val.extras["masks"]
        src, art = self._masks(val, source_rows), self._masks(val, rows)

        def summary(masks):
            out = {}
            for name, fn in (("dice", dice), ("iou", iou)):
                values = np.array([fn(m, t) for m, t in zip(masks, truth)])
                lo, hi = bootstrap_ci(lambda v: v.mean(), values, n=self.n_boot)
                out[name] = {"value": round(float(values.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
            return out

        s, a = summary(src), summary(art)
        drop = round(s["dice"]["value"] - a["dice"]["value"], 4)
        changed = [float((x != y).mean()) for x, y in zip(src, art)]
        problems = ([f"on validation Dice drops by {drop:.4f} (budget {self.max_drop})"]
                    if self.max_drop is not None and drop > self.max_drop else [])
        data = {"metric": "dice", "n": len(truth), "source": s, "artifact": a, "dice_drop": drop,
                "max_drop": self.max_drop, "passed": not problems,
                "agreement_dice": round(float(np.mean([dice(x, y) for x, y in zip(src, art)])), 4),
                "changed_pixels": round(float(np.mean(changed)), 5), "n_flips": int(sum(c > 0 for c in changed)),
                "decision_flips": [{"item": n, "changed_pixels": round(c, 5)}
                                   for n, c in zip(val.names, changed) if c > 0]}
        return GuardReport("dice", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        return (f"Dice {v['source']['dice']['value']:.4f}->{v['artifact']['dice']['value']:.4f}, agreement Dice "
                f"{v['agreement_dice']:.4f}, {v['changed_pixels'] * 100:.3f} % pixels changed, n={v['n']}"
                f"{cls._budget(v)}")


class MapGuard(Guard):
    """Detection: mean AP at IoU 0.5 (VOC all-point, per class, then the mean) against the truth
    boxes may drop by ``max_drop``; boxes are decoded exactly as the engine decodes them, and the
    per-label counts at the operating thresholds are compared item by item."""

    name = report_metric = "map"
    default_budget = 0.02

    def _detections(self, val, rows) -> list:
        from medexport.engine.tasks.detection import decode

        n = len(self.labels)
        out = []
        for row, geometry in zip(rows, val.extras["geometry"]):
            boxes, labels, scores = decode(row, n, self.preprocess.size)
            out.append((geometry.to_source(boxes), labels, scores))
        return out

    def _counts(self, detections) -> np.ndarray:
        t = np.array([self.postprocess.thresholds.get(k, 0.5) for k in self.labels])
        return np.array([np.bincount(lab[s >= t[lab]], minlength=len(self.labels)) for _, lab, s in detections])

    def value(self, val, rows):
        return mean_average_precision(self._detections(val, rows), val.extras["truth"], len(self.labels))["mean"]["value"]

    def report(self, val, source_rows, rows):
        truth = val.extras["truth"]
        src_det, art_det = self._detections(val, source_rows), self._detections(val, rows)

        def summary(dets):
            m = mean_average_precision(dets, truth, len(self.labels), n_boot=self.n_boot)
            return {"map": m["mean"], "ap": {label: m[k] for k, label in enumerate(self.labels)}}

        src, art = summary(src_det), summary(art_det)
        drop = round(src["map"]["value"] - art["map"]["value"], 4)
        src_counts, art_counts = self._counts(src_det), self._counts(art_det)
        flips = [{"item": val.names[i], "source_counts": dict(zip(self.labels, src_counts[i].tolist())),
                  "artifact_counts": dict(zip(self.labels, art_counts[i].tolist()))}
                 for i in np.flatnonzero((src_counts != art_counts).any(axis=1))]
        problems = ([f"on validation mAP@0.5 drops by {drop:.4f} (budget {self.max_drop})"]
                    if self.max_drop is not None and drop > self.max_drop else [])
        data = {"metric": "map", "iou": 0.5, "n": len(truth), "source": src, "artifact": art, "map_drop": drop,
                "max_drop": self.max_drop, "passed": not problems, "decision_flips": flips, "n_flips": len(flips),
                "count_changes": int(np.abs(src_counts - art_counts).sum())}
        return GuardReport("map", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        aps = ", ".join(f"{k} {v['source']['ap'][k]['value']:.3f}->{v['artifact']['ap'][k]['value']:.3f}"
                        for k in v["source"]["ap"])
        return (f"mAP@0.5 {v['source']['map']['value']:.4f}->{v['artifact']['map']['value']:.4f} ({aps}); counts "
                f"change on {v['n_flips']} of {v['n']} items{cls._budget(v)}")



@dataclass
class PairedMaps:
    """A map guard's measures of the float source and the artifact, side by side."""

    src: dict
    art: dict
    drop: float  # mean Dice, source - artifact
    rise: float  # mean error, artifact - source
    problems: list
    changed: list  # per item: the share of pixels / voxels whose label changed
    source_errors: np.ndarray
    artifact_errors: np.ndarray


def dice_and_error(guard, val, source_rows, rows, error_key: str) -> PairedMaps:
    """Dice and a per-item error (``guard._measure``) of source and artifact with bootstrap CIs, the
    Dice budget checked; the caller checks its own error budget."""
    (sd, se, sm), (ad, ae, am) = guard._measure(val, source_rows), guard._measure(val, rows)

    def summary(values: np.ndarray) -> dict:
        lo, hi = bootstrap_ci(lambda v: v.mean(), values, n=guard.n_boot)
        return {"value": round(float(values.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}

    src, art = {"dice": summary(sd), error_key: summary(se)}, {"dice": summary(ad), error_key: summary(ae)}
    drop = round(src["dice"]["value"] - art["dice"]["value"], 4)
    rise = round(art[error_key]["value"] - src[error_key]["value"], 4)
    problems = []
    if guard.max_drop is not None and drop > guard.max_drop:
        problems.append(f"on validation Dice drops by {drop:.4f} (budget {guard.max_drop})")
    changed = [float((a != b).mean()) for a, b in zip(sm, am)]
    return PairedMaps(src, art, drop, rise, problems, changed, se, ae)

class HcGuard(Guard):
    """Fetal head biometry: Dice against the filled outline may drop by ``max_drop`` (default
    0.01) and the mean absolute HC difference from the sonographer's HC may rise by at most
    ``HC_BUDGET_MM`` (0.5 mm), masks and ellipses computed on the source grid as the engine does."""

    name = report_metric = "dice_hc"
    default_budget = 0.01
    HC_BUDGET_MM = 0.5

    def _measure(self, val, rows) -> tuple[np.ndarray, np.ndarray, list]:
        """Per item: Dice, |HC - truth| in mm (a frame without an ellipse counts its whole HC), masks."""
        from medexport.engine.ellipse import boundary_points, head_measurements
        from medexport.engine.errors import InvalidInputError
        from medexport.engine.preprocess import map_to_source

        threshold = next(iter(self.postprocess.thresholds.values()))
        x = val.extras
        dices, errors, masks = [], [], []
        for k, geometry in enumerate(x["geometries"]):
            prob = map_to_source(rows[k, 0], geometry)
            mask = prob >= threshold
            masks.append(mask)
            dices.append(dice(mask, x["masks"][k]))
            try:
                hc = head_measurements(boundary_points(prob, threshold), (x["pixel_mm"][k],) * 2)["head_circumference_mm"]
            except InvalidInputError:
                hc = 0.0
            errors.append(abs(hc - x["hc_mm"][k]))
        return np.array(dices), np.array(errors), masks

    def value(self, val, rows):
        return float(self._measure(val, rows)[0].mean())

    def report(self, val, source_rows, rows):
        p = dice_and_error(self, val, source_rows, rows, "hc_mae_mm")
        src, art, drop, rise, problems, changed = p.src, p.art, p.drop, p.rise, p.problems, p.changed
        if self.max_drop is not None and rise > self.HC_BUDGET_MM:
            problems.append(f"on validation the HC mean absolute difference rises by {rise:.2f} mm "
                            f"(budget {self.HC_BUDGET_MM} mm)")
        moved = np.abs(p.artifact_errors - p.source_errors)
        data = {"metric": "dice_hc", "n": len(val.names), "source": src, "artifact": art, "dice_drop": drop,
                "hc_mae_increase_mm": rise, "max_drop": self.max_drop,
                "max_hc_increase_mm": None if self.max_drop is None else self.HC_BUDGET_MM, "passed": not problems,
                "changed_pixels": round(float(np.mean(changed)), 5), "n_flips": int(sum(c > 0 for c in changed)),
                "decision_flips": [{"item": n, "changed_pixels": round(c, 5), "hc_error_change_mm": round(float(m), 2)}
                                   for n, c, m in zip(val.names, changed, moved) if m > 1.0]}
        return GuardReport("dice_hc", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        budget = "" if v.get("max_drop") is None else f"; budget Dice {v['max_drop']}, HC +{v['max_hc_increase_mm']} mm"
        return (f"Dice {v['source']['dice']['value']:.4f}->{v['artifact']['dice']['value']:.4f}, HC MAE "
                f"{v['source']['hc_mae_mm']['value']:.2f}->{v['artifact']['hc_mae_mm']['value']:.2f} mm, "
                f"{v['changed_pixels'] * 100:.3f} % pixels changed, n={v['n']}{budget}")


GUARDS: dict[str, type[Guard]] = {g.name: g for g in (AurocGuard, F1Guard, DiceGuard, MapGuard, HcGuard)}
GUARDS_BY_REPORT: dict[str, type[Guard]] = {g.report_metric: g for g in GUARDS.values()}


def guard_class(task_cls, postprocess, metric: str | None = None) -> type[Guard]:
    """The guard for a task: ``metric`` if the task allows it, else the task's default."""
    name = metric or task_cls.default_metric(postprocess)
    if name not in task_cls.metrics:
        raise ConfigurationError(f"metric {name!r} does not apply to task {task_cls.name!r}",
                                 expected=f"one of {', '.join(task_cls.metrics)}")
    if name == "auroc" and not postprocess.thresholds:
        raise ConfigurationError("metric 'auroc' guards thresholded findings, and this model has no thresholds",
                                 fix="use --metric f1, or give --threshold")
    return GUARDS[name]


def describe_report(data: dict | None) -> str:
    """The validation line ``inspect`` prints for an artifact's stored report."""
    if not data:
        return "- (build with --val to measure)"
    return GUARDS_BY_REPORT[data["metric"]].describe(data)


class VolumeDiceGuard(Guard):
    """Volume segmentation: the mean Dice of the labels (each label's Dice, averaged) may drop by
    ``max_drop`` (default 0.01) and the mean absolute total-volume error (a share of the true total)
    may rise by ``VOLUME_BUDGET`` (0.01), label maps blended from windows exactly as the engine does."""

    name = report_metric = "dice_volume"
    default_budget = 0.01
    VOLUME_BUDGET = 0.01

    def _measure(self, val, rows) -> tuple[np.ndarray, np.ndarray, list]:
        """Per volume: mean Dice over the labels, |total - true total| / true total, the label map."""
        from medexport.engine.tasks.volume_segmentation import labels_from

        x, n = val.extras, len(self.labels)
        dices, errors, maps = [], [], []
        for k, (meta, truth) in enumerate(zip(x["metas"], x["masks"])):
            pred = labels_from(iter(rows[val.groups == k]), meta, self.preprocess)
            maps.append(pred)
            dices.append(np.mean([dice(pred == i + 1, truth == i + 1) for i in range(n)]))
            true_total = max(int((truth > 0).sum()), 1)
            errors.append(abs(int((pred > 0).sum()) - int((truth > 0).sum())) / true_total)
        return np.array(dices), np.array(errors), maps

    def value(self, val, rows):
        return float(self._measure(val, rows)[0].mean())

    def report(self, val, source_rows, rows):
        p = dice_and_error(self, val, source_rows, rows, "volume_error")
        src, art, drop, rise, problems, changed = p.src, p.art, p.drop, p.rise, p.problems, p.changed
        if self.max_drop is not None and rise > self.VOLUME_BUDGET:
            problems.append(f"on validation the mean total-volume error rises by {rise * 100:.2f} % of the volume "
                            f"(budget {self.VOLUME_BUDGET * 100:g} %)")
        data = {"metric": "dice_volume", "n": len(val.names), "source": src, "artifact": art, "dice_drop": drop,
                "volume_error_increase": rise, "max_drop": self.max_drop,
                "max_volume_error_increase": None if self.max_drop is None else self.VOLUME_BUDGET,
                "passed": not problems, "changed_voxels": round(float(np.mean(changed)), 5),
                "n_flips": int(sum(c > 0 for c in changed)),
                "decision_flips": [{"item": n, "changed_voxels": round(c, 5)}
                                   for n, c in zip(val.names, changed) if c > 0]}
        return GuardReport("dice_volume", not problems, tuple(problems), data)

    @classmethod
    def describe(cls, v):
        budget = ("" if v.get("max_drop") is None
                  else f"; budget Dice {v['max_drop']}, volume error +{v['max_volume_error_increase'] * 100:g} %")
        return (f"Dice {v['source']['dice']['value']:.4f}->{v['artifact']['dice']['value']:.4f}, volume error "
                f"{v['source']['volume_error']['value'] * 100:.2f}->{v['artifact']['volume_error']['value'] * 100:.2f} %, "
                f"{v['changed_voxels'] * 100:.3f} % voxels changed, n={v['n']}{budget}")


GUARDS[VolumeDiceGuard.name] = VolumeDiceGuard
GUARDS_BY_REPORT[VolumeDiceGuard.report_metric] = VolumeDiceGuard
