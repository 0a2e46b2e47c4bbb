"""What the result panel and the PDF show as a table (Qt-free): column headers that fit the result's
kind (findings and scores, detections and counts, measurements and units) and the rows under them."""
from __future__ import annotations

from dataclasses import dataclass

FINDING_HEADERS = ("finding", "score", "threshold")
DETECTION_HEADERS = ("label (count)", "mean box score", "box threshold")
MEASUREMENT_HEADERS = ("measurement", "value", "unit")

# measurement key prefix -> the name a sonographer reads; key suffix -> unit
MEASUREMENT_NAMES = {"head_circumference": "Head circumference (HC)", "biparietal_diameter": "Biparietal diameter (BPD)",
                     "occipitofrontal_diameter": "Occipitofrontal diameter (OFD)",
                     "gestational_age": "Gestational age (GA, Hadlock)"}
UNITS = {"_mm": "mm", "_px": "pixels", "_weeks": "weeks", "_ml": "mL"}
DECIMALS = {"mL": 2}  # a hippocampus is 1-2 mL: tenths would hide the difference between two runs
VOLUME_SUFFIX = "_volume_ml"  # a volume task's "<label>_volume_ml" and "total_volume_ml"


@dataclass(frozen=True)
class Table:
    headers: tuple
    rows: tuple  # tuples of cell texts, one per header
    hits: tuple  # per row: whether it is (part of) the decision


def result_table(result) -> Table:
    """The table for ``result`` by its ``table_kind``: measurements and units, detections and counts,
    or findings with their scores and operating thresholds."""
    if result.table_kind == "measurements":
        rows = [_measurement(key, value) for key, value in result.measurements.items()]
        return Table(MEASUREMENT_HEADERS, tuple(rows), (False,) * len(rows))
    headers = DETECTION_HEADERS if result.table_kind == "detections" else FINDING_HEADERS
    score_rows = result.score_rows()
    rows = tuple((r.label, f"{r.score:.3f}", "-" if r.threshold is None else f"{r.threshold:.3f}") for r in score_rows)
    return Table(headers, rows, tuple(r.hit for r in score_rows))


def _measurement(key: str, value) -> tuple:
    name = next((n for prefix, n in MEASUREMENT_NAMES.items() if key.startswith(prefix)), key)
    if key.endswith(VOLUME_SUFFIX):
        name = f"{key.removesuffix(VOLUME_SUFFIX).replace('_', ' ').capitalize()} volume"
    unit = next((u for suffix, u in UNITS.items() if key.endswith(suffix)), "")
    if value is None:
        return name, "outside the formula's range", ""
    return name, f"{value:.{DECIMALS.get(unit, 1)}f}", unit
