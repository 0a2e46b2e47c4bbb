"""Robustness report: the guard's metric when the studies are degraded as real ones are.

Each perturbation is a small named function with its parameters stated. It changes a study as
read (pixels in [0, 1] or an ECG record in mV), before the engine's own preprocessing; the
validation data are then read through that preprocessing (``datasets.load_dataset``) and scored
by each artifact with the task's guard (``guards.Guard.value``): the same path as validation.
Randomness (noise, phases) is seeded per perturbation and study, so a rerun gives the same numbers.
"""
from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from medexport.engine.errors import ConfigurationError
# the perturbations live with the recipes that train against them (models/perturbations.py)
from medexport.models.perturbations import (DEFAULT_SEED, ECG_PERTURBATIONS, IMAGE_PERTURBATIONS,  # noqa: F401
                                            PERTURBATIONS, Perturbation, perturbations_for)

DEFAULT_STUDIES = 200  # validation studies per perturbation (a seeded subset, the same for every row)


# ---------------------------------------------------------------- what datasets.load_dataset calls

@dataclass(frozen=True)
class Perturb:
    """The hook ``datasets.load_dataset(perturb=...)`` calls on each study as read, and on its
    spatial truth so that masks and boxes follow a rotation."""

    perturbation: Perturbation
    seed: int = DEFAULT_SEED

    def pixels(self, pixels: np.ndarray, item: str) -> np.ndarray:
        return self.perturbation.apply(pixels, item, self.seed)

    def record(self, record, item: str):
        return self.perturbation.apply(record, item, self.seed)

    def mask(self, mask: np.ndarray, item: str) -> np.ndarray:
        """A truth mask turned with the pixels (nearest neighbour); unchanged otherwise."""
        if not self.perturbation.rotation:
            return mask
        from PIL import Image

        img = Image.fromarray(np.asarray(mask, np.uint8) * 255).rotate(self.perturbation.rotation,
                                                                        resample=Image.NEAREST)
        return np.asarray(img) > 127

    def boxes(self, boxes: np.ndarray, shape: tuple, item: str) -> np.ndarray:
        """Truth boxes (x0, y0, x1, y1) turned with the pixels: each object taken as the ellipse
        inscribed in its box (cells are round), the box of the rotated ellipse, clipped to the image."""
        if not self.perturbation.rotation or len(boxes) == 0:
            return boxes
        h, w = shape[:2]
        a = np.deg2rad(self.perturbation.rotation)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
        ox, oy = w / 2, h / 2  # PIL turns counter-clockwise on screen (y down) about the centre
        nx = ox + (cx - ox) * np.cos(a) + (cy - oy) * np.sin(a)
        ny = oy - (cx - ox) * np.sin(a) + (cy - oy) * np.cos(a)
        hx = np.sqrt((rx * np.cos(a)) ** 2 + (ry * np.sin(a)) ** 2)
        hy = np.sqrt((rx * np.sin(a)) ** 2 + (ry * np.cos(a)) ** 2)
        out = np.stack([nx - hx, ny - hy, nx + hx, ny + hy], axis=1)
        return np.clip(out, 0, [w, h, w, h])


# ---------------------------------------------------------------- the report

def measure(spec, source, guard, runs: dict, score: Callable, *, studies: int = DEFAULT_STUDIES,
            seed: int = DEFAULT_SEED, emit=print) -> dict:
    """Per artifact key in ``runs`` (key -> run function): the guard's metric on ``studies`` validation
    studies clean and under every perturbation of the task's study kind. ``score(run, dataset)``
    turns a dataset into per-row scores (the build's own path)."""
    from medexport.engine.tasks import task_class

    from .datasets import load_dataset

    kind = task_class(source.task).study_kind
    started = time.perf_counter()
    clean = load_dataset(spec, source.preprocess, labels=source.labels, limit=studies)
    if clean.labels is None:
        raise ConfigurationError(f"validation data {spec} has no labels; the robustness report needs them",
                                 fix="use labelled --val data")
    out = {key: {"metric": guard.report_metric, "studies": len(clean), "seed": seed,
                 "clean": _value(guard, clean, score(run, clean)), "rows": []} for key, run in runs.items()}
    for p in perturbations_for(kind):
        data = load_dataset(spec, source.preprocess, labels=source.labels, limit=studies, perturb=Perturb(p, seed))
        for key, run in runs.items():
            value = _value(guard, data, score(run, data))
            out[key]["rows"].append({"perturbation": p.name, "description": p.description, "params": dict(p.params),
                                     "value": value, "drop": round(out[key]["clean"] - value, 4), "n": len(data)})
        emit(f"[build]   {p.name}: " + ", ".join(f"{k} {o['rows'][-1]['value']:.4f}" for k, o in out.items()))
    seconds = round(time.perf_counter() - started, 1)
    for o in out.values():
        o["seconds"] = seconds
    return out


def _value(guard, data, rows) -> float:
    return round(float(guard.value(data, rows)), 4)


def table_lines(report: dict) -> list[str]:
    """The robustness table of one artifact, as ``inspect`` prints it."""
    lines = [f"  {'perturbation':<16} {report['metric']:>9} {'drop':>8} {'n':>5}  what",
             f"  {'clean':<16} {report['clean']:9.4f} {'':>8} {report['studies']:5d}"]
    for r in report["rows"]:
        lines.append(f"  {r['perturbation']:<16} {r['value']:9.4f} {r['drop']:+8.4f} {r['n']:5d}  {r['description']}")
    return lines


def markdown_table(reports: dict) -> str:
    """The model card's table: one column per artifact, one row per perturbation."""
    keys = list(reports)
    first = reports[keys[0]]
    head = "| perturbation | " + " | ".join(f"{k} {first['metric']} (drop)" for k in keys) + " |"
    lines = [head, "|---|" + "---|" * len(keys),
             "| clean | " + " | ".join(f"{reports[k]['clean']:.3f}" for k in keys) + " |"]
    for i, row in enumerate(first["rows"]):
        cells = [f"{reports[k]['rows'][i]['value']:.3f} ({reports[k]['rows'][i]['drop']:+.3f})" for k in keys]
        lines.append(f"| {row['perturbation']}: {row['description']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bundle_markdown(path) -> str:
    """The card's table for a built bundle (``python -m medexport.export.robustness BUNDLE``)."""
    from medexport.engine.bundle_read import read_manifest

    from .render import read_reports

    manifest, _, root = read_manifest(path, verify=True)
    reports = {k: r["robustness"] for k, r in read_reports(manifest, root).items() if r.get("robustness")}
    if not reports:
        raise ConfigurationError(f"{path} has no robustness report", fix="build it with --val DATA --robustness")
    first = next(iter(reports.values()))
    return (f"{markdown_table(reports)}\n\n{first['metric']} on {first['studies']} validation studies "
            f"(seed {first['seed']}), built {manifest.provenance.get('built_at')}")


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(f"{arg}\n{bundle_markdown(arg)}\n")
