"""Golden inputs: the real studies a bundle carries to prove, on any machine, that each
artifact still agrees with the source model.

They cover the input space, not just the training distribution: the model's own kind of
study first, then studies unlike its training data (other modalities, other devices), where
a quantized model is most likely to drift from the float one unnoticed.
"""
from __future__ import annotations

import numpy as np

from medexport.engine.errors import ConfigurationError, MedError

from .datasets import Dataset, load_dataset

GOLDEN_ROWS = 48
GOLDEN_INPUT_BYTES = 1 << 20  # at most ~1 MB of golden inputs stored (large tiles get fewer rows), never fewer than 2 rows
ROWS_PER_STUDY = 6  # an ECG record or a large image gives several rows: keep a few of each
AGREEMENT_BYTES = 64 << 20  # the build checks agreement on every study it read, up to this much input
UNLIKE_PREFIX = "unlike-training:"

# Real studies unlike any model's training data, by preprocessing kind (files that are missing
# or that the engine refuses, e.g. colour, are skipped). pydicom-data names, then shared-data paths.
UNLIKE_TRAINING = {
    "image": {
        "pydicom-data": ("MR2_UNCR.dcm", "emri_small.dcm", "liver.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm",
                         "mlut_18.dcm", "693_UNCR.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "JPEG2000_UNC.dcm"),
        "pydicom": ("CT_small.dcm", "MR_small.dcm"),
        "shared": ("segmentation/hc18/images/000_HC.png", "segmentation/hc18/images/100_HC.png",
                   "segmentation/isbi2012-em/image/3.png", "images/breastmnist_trainval.npz:val:4"),
    },
    "tiles": {
        "pydicom-data": ("MR2_UNCR.dcm", "RG1_UNCR.dcm"),
        "pydicom": ("CT_small.dcm",),
        "shared": ("segmentation/hc18/images/000_HC.png",),
    },
    # colour pictures and studies unlike blood smears (greyscale ones are read as grey RGB)
    "detect": {
        "pydicom-data": ("US1_UNCR.dcm", "MR2_UNCR.dcm", "RG1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm"),
        "pydicom": (),
        "shared": ("segmentation/hc18/images/000_HC.png", "segmentation/isbi2012-em/image/3.png",
                   "images/cxr-nih/00000001_000.png"),
    },
    "ecg": {
        "pydicom-data": (),
        "pydicom": ("waveform_ecg.dcm",),
        "shared": ("ecg/mitdb/100.hea", "ecg/ptbdb/s0010_re.hea", "ecg/cinc2021-12lead/E00001.hea",
                   "ecg/hl7-aecg/example_12lead.xml"),
    },
}


def golden_inputs(source, spec: str | None = None) -> tuple[Dataset, np.ndarray]:
    """The agreement set and which of its rows the bundle stores.

    Every artifact is held to its tolerance on all rows of the agreement set (``spec`` or the
    model's default studies, then the studies unlike the training data, a few rows each, round
    robin); the bundle's golden.npz keeps the first rows of that order within its size budget, for
    the on-target self-test. At 224 px the budget holds about five rows: the build must not check
    only those (an INT8 artifact drifting 0.12 on an adult film passed that way)."""
    own = _own_studies(source, spec)
    unlike = unlike_training(source.preprocess)
    data = _concat_named([own] + unlike) if unlike else own
    # own and unlike studies alternate, so that a small budget still holds both kinds
    n_unlike = sum(len(u) for u in unlike)
    order = np.concatenate([2 * np.arange(len(own)), 2 * np.arange(n_unlike) + 1])
    rows = _round_robin(data, order)
    rows = rows[:max(2, AGREEMENT_BYTES // data.inputs[0].nbytes)]
    stored = np.arange(min(len(rows), GOLDEN_ROWS, max(2, GOLDEN_INPUT_BYTES // data.inputs[0].nbytes)))
    several = data.groups is not None
    names = tuple(data.names[data.row_groups[r]] + (f"#{r}" if several else "") for r in rows)
    return Dataset(data.inputs[rows], None, names), stored


def unlike_training(preprocess) -> list[Dataset]:
    """One small dataset per readable study unlike the training data (names prefixed)."""
    out = []
    for path in _unlike_paths(getattr(preprocess, "kind", "image")):
        try:
            data = load_dataset(path, preprocess)
        except MedError:  # a study the engine refuses (colour, too few beats...) cannot be golden
            continue
        names = tuple(UNLIKE_PREFIX + n for n in data.names)
        out.append(Dataset(data.inputs, None, names, data.groups))
    return out


def _own_studies(source, spec: str | None) -> Dataset:
    if spec:
        return load_dataset(spec, source.preprocess, limit=32)
    if source.default_golden:
        return load_dataset(list(source.default_golden), source.preprocess)
    from medexport.models.data import shared_data

    try:
        pngs = sorted((shared_data() / "images" / "cxr-nih").glob("*.png"))
    except ConfigurationError:
        pngs = []
    if not pngs:
        raise ConfigurationError("no golden inputs: the bundle needs a few real studies for on-target self-checks",
                                 fix="pass --golden DATA (a folder of studies or an .npz)")
    return load_dataset([str(p) for p in pngs], source.preprocess)


def _unlike_paths(kind: str) -> list[str]:
    from medexport.models.data import pydicom_data, shared_data

    table = UNLIKE_TRAINING.get(kind, {})
    paths = []
    dicom = pydicom_data()
    if dicom is not None:
        paths += [str(dicom / n) for n in table.get("pydicom-data", ()) if (dicom / n).is_file()]
    if table.get("pydicom"):
        from pydicom.data import get_testdata_file

        for name in table["pydicom"]:
            found = get_testdata_file(name, download=False)
            if found:
                paths.append(str(found))
    try:
        root = shared_data()
    except ConfigurationError:
        return paths
    for rel in table.get("shared", ()):
        file = rel.partition(".npz:")[0] + (".npz" if ".npz:" in rel else "")
        if (root / file).is_file():
            paths.append(str(root / rel))
    return paths


def _concat_named(parts: list[Dataset]) -> Dataset:
    """Concatenate datasets keeping one group per study (labels dropped: golden rows have none)."""
    inputs, names, groups = [], [], []
    for part in parts:
        inputs.append(part.inputs)
        groups.append(part.row_groups + len(names))
        names += list(part.names)
    return Dataset(np.concatenate(inputs), None, tuple(names), np.concatenate(groups))


def _round_robin(data: Dataset, order: np.ndarray) -> np.ndarray:
    """Row indices: at most ROWS_PER_STUDY per study, every study's first row before any second
    row, studies by ``order``."""
    groups = data.row_groups
    per_study = [np.flatnonzero(groups == g)[:ROWS_PER_STUDY] for g in range(len(data))]
    rank = np.concatenate([np.arange(len(r)) for r in per_study])
    priority = np.concatenate([np.full(len(r), order[g]) for g, r in enumerate(per_study)])
    return np.concatenate(per_study)[np.lexsort((priority, rank))]
