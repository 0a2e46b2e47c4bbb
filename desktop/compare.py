"""Model > Compare with... (Qt-free): a candidate bundle beside the chosen one on the open studies.

The viewer's side of ``medexport shadow`` (issue 30): both bundles run on the same open studies
through the engine's pipeline; each study becomes the engine's shadow record
(engine/shadow.py), the changed decisions and the agreement (Cohen's kappa, flips, score shift,
Dice of masks, differences of measurements) come from the same functions the CLI's report uses,
and the changes are written as the CLI's ``changes.csv``. Nothing is recorded in the audit log:
a comparison delivers no result.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from medexport.engine.errors import ConfigurationError
from medexport.engine.shadow import CHANGE_COLUMNS, agreement, change_row, record


@dataclass
class Comparison:
    """Both bundles' records on the open studies, and the studies either refused."""

    current: str  # "model version (artifact)"
    candidate: str
    records: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # {"file", "current_error", "candidate_error"}

    @property
    def changes(self) -> list[dict]:
        """changes.csv rows (engine/shadow.CHANGE_COLUMNS) of the studies whose decision would change."""
        return [change_row(r) for r in self.records if r["changed"]]

    @property
    def agreement(self) -> dict:
        return agreement(self.records)

    def summary_lines(self) -> list[str]:
        """Who was compared, how many decisions change, agreement per label, masks, measurements."""
        a = self.agreement
        lines = [f"Current: {self.current}", f"Candidate: {self.candidate}",
                 f"{len(self.changes)} of {len(self.records)} decisions would change"
                 + (f"; {len(self.errors)} studies refused by either bundle" if self.errors else "")]
        for label, x in a["per_label"].items():
            shift = "" if x["mean_score_shift"] is None else f", mean score shift {x['mean_score_shift']:+.4f}"
            lines.append(f"{label}: Cohen's kappa {x['kappa']}; {x['to_positive']} would become positive, "
                         f"{x['to_negative']} negative{shift}")
        if "mask_dice" in a:
            lines.append(f"masks: Dice between the two mean {a['mask_dice']['mean']}, lowest {a['mask_dice']['min']}")
        for k, d in a["measurement_differences"].items():
            lines.append(f"{k}: candidate - current mean {d['mean']:+.3f}, largest {d['max_abs']:.3f}")
        return lines

    def csv_bytes(self) -> bytes:
        """The changes as ``medexport shadow`` writes OUT/changes.csv: one row per changed study."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CHANGE_COLUMNS)
        writer.writeheader()
        writer.writerows(self.changes)
        return buf.getvalue().encode("utf-8")


def _who(model) -> str:
    return f"{model.manifest.model_id} {model.manifest.model_version} ({model.artifact.key})"


def compare(state, candidate_path, kind: str, cancel=None, progress=None) -> Comparison:
    """Run the chosen ``kind`` model and the bundle at ``candidate_path`` (opened under the viewer's
    trust policy) on the open studies of that kind; blocking (call from a worker thread)."""
    from medexport.engine import open_bundle
    from medexport.engine.pipeline import run

    from .state import Cancelled
    from .trust import model_options

    studies = [s for s in state.studies if s.kind == kind]
    if not studies:
        raise ConfigurationError(f"no {kind} study is open", expected="the studies to compare the two bundles on",
                                 fix="open studies first (File > Open files... or Open folder...)")
    entry = state.model_for(studies[0])
    current = state.engine(entry)
    with open_bundle(candidate_path, **model_options()) as candidate:
        if candidate.task.study_kind != kind:
            raise ConfigurationError(f"{candidate_path} reads {candidate.task.study_kind} studies and the current "
                                     f"model {entry.title} reads {kind} studies", expected="two versions of one model",
                                     fix="compare a candidate with the model it would replace")
        if candidate.sha256 == current.sha256:
            raise ConfigurationError(f"{candidate_path} is the current bundle itself (SHA-256 {current.sha256[:12]}...)",
                                     expected="another bundle", fix="pick the new version to compare with")
        runs = []
        for i, model in enumerate((current, candidate)):
            rows = []
            stream = run(model, studies, lambda s, m=model: m.prepare(s.path, **state.options_for(s, entry)),
                         lambda s, m=model: m.predict(s.path, **state.options_for(s, entry)), cancel=cancel)
            for study, result, error in stream:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                rows.append((study, result, error))
                if progress:
                    progress(i * len(studies) + len(rows), 2 * len(studies))
            runs.append(rows)
        out = Comparison(_who(current), _who(candidate))
        for (study, a, ea), (_, b, eb) in zip(*runs):
            if ea or eb:
                out.errors.append({"file": study.path, "current_error": ea, "candidate_error": eb})
            else:
                out.records.append(record(study.path, a, b))
    return out


def write_changes(comparison: Comparison, path) -> Path:
    """The changes CSV as a new file (``name (2).csv`` where ``path`` exists; engine/atomic.py)."""
    from medexport.engine.atomic import write_new

    return write_new(Path(path), comparison.csv_bytes())
