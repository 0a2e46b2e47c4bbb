"""Calibration / validation / golden data, read through the bundle's own preprocessing.

A DATA spec is one of:
- ``file.npz[:split[:count]]``: arrays ``{split}_images`` (N, H, W) uint8 and ``{split}_labels``
  (MedMNIST layout; split defaults to ``val``), or plain ``images`` / ``labels``;
- a folder of DICOM / PNG / JPEG files (images) or ECG records (WFDB .hea, aECG .xml, DICOM,
  CSV), labelled by an optional ``labels.csv`` (``file,label``) or a CinC-style
  ``REFERENCE.csv`` (``record,code``; codes N, A, O, ~ map to normal, af, other, noisy); an image
  folder without one is labelled by its class sub-folders when they are named after the model's
  labels (``NORMAL/``, ``PNEUMONIA/``: any case);
- a ``file.csv`` list with columns ``file,label``: studies anywhere, labelled; relative ``file``
  paths are resolved against the project's shared data folder (``$MEDEXPORT_DATA``), so a
  recipe can ship the exact list of films it held out;
- a single study file.
An ECG record yields several beat windows: ``groups`` maps each input row to its record.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medexport.engine.errors import ConfigurationError, InvalidInputError
from medexport.engine.io.image import read_image
from medexport.engine.labelled import STUDY_SUFFIXES, folder_studies, read_label_file, study_labels
from medexport.engine.labelled import label_table as _label_table
from medexport.engine.preprocess import image_to_tensor
from medexport.engine.tasks import item_scores
from medexport.engine.tasks.ecg_rhythm import EcgRhythmTask

def row_weights(inputs: np.ndarray) -> np.ndarray:
    """Beat windows (N, beats, features + mask) count by their beats; other rows equally."""
    return EcgRhythmTask.row_weights(inputs) if inputs.ndim == 3 else np.ones(len(inputs))


ECG_SUFFIXES = (".hea", ".xml", ".dcm", ".csv")


@dataclass(frozen=True)
class Dataset:
    inputs: np.ndarray  # (rows, ...) float32, preprocessed model inputs
    labels: np.ndarray | None  # (items,) int, or None when unlabelled
    names: tuple  # one per item, for reports (file name or npz index)
    groups: np.ndarray | None = None  # (rows,) item index of each input row; None: one row per item
    extras: dict | None = None  # segmentation: per-item "origins", "shapes" and "masks" (truth);
    # detection: per-item "geometry" (Letterbox) and "truth" ((boxes, label indices) or None)
    notes: tuple = ()  # what reading left out, for the build log (label rows without a study)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def row_groups(self) -> np.ndarray:
        return np.arange(len(self.inputs)) if self.groups is None else self.groups

    def item_scores(self, scores: np.ndarray) -> np.ndarray:
        """Per-item scores: rows of one item averaged, weighted as the engine's task weighs them
        (beat windows by their beats)."""
        if self.groups is None:
            return scores
        return item_scores(scores, self.groups, row_weights(self.inputs), len(self.names))


def subset(total: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded random subset (sorted), so that ``limit`` items represent the whole
    set: the first N of a sorted dataset can be all one class."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


def _volume_dataset(spec, preprocess, labels, limit, perturb) -> Dataset:
    from .volume_data import volume_dataset

    return volume_dataset(spec, preprocess, limit, perturb)


# preprocessing kinds with their own labelled-data reader (the others: pictures, DICOM, .npz, HC18)
_KIND_READERS = {
    "ecg": lambda spec, pp, labels, limit, perturb: _ecg_dataset(Path(spec), pp, labels, limit, perturb),
    "tiles": lambda spec, pp, labels, limit, perturb: _tile_dataset(Path(spec), pp, limit, perturb),
    "detect": lambda spec, pp, labels, limit, perturb: _detection_dataset(str(spec), pp, labels, limit, perturb),
    "volume": _volume_dataset,
}


def load_dataset(spec: str, preprocess, *, labels: tuple = (), limit: int | None = None, perturb=None) -> Dataset:
    """Read ``spec`` (see module doc; a list of specs is concatenated), preprocess every item as
    the engine will; ``limit`` keeps a seeded random subset. ``perturb`` (``robustness.Perturb``)
    changes each study as read, before preprocessing, and its spatial truth with it."""
    if isinstance(spec, (list, tuple)):
        if len(spec) == 1:  # the same seeded subset, without reading the items it leaves out
            return load_dataset(spec[0], preprocess, labels=labels, limit=limit, perturb=perturb)
        parts = [load_dataset(s, preprocess, labels=labels, perturb=perturb) for s in spec]
        return _limit(concat(parts), limit)
    reader = _KIND_READERS.get(getattr(preprocess, "kind", "image"))
    if reader is not None:
        return reader(spec, preprocess, labels, limit, perturb)
    hc18 = _hc18_spec(str(spec))
    if hc18 is not None:
        return _hc18_dataset(*hc18, preprocess, limit, perturb)
    path_text, _, rest = str(spec).partition(".npz:")
    if rest or str(spec).endswith(".npz"):
        path = Path(path_text if rest else spec)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        split, _, count = rest.partition(":")
        n = int(count) if count else limit
        return _from_npz(path, split or "val", preprocess, n if limit is None else min(n or limit, limit), perturb)
    path = Path(spec)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _from_list(path, preprocess, labels, limit, perturb)
    if path.is_dir():
        return _from_folder(path, preprocess, labels, limit, perturb)
    if path.is_file():
        return _from_files([path], preprocess, None, perturb)
    raise ConfigurationError(f"data {spec!r} does not exist",
                             expected="an .npz[:split[:count]], a folder of studies, or a study file")


def concat(parts: list[Dataset]) -> Dataset:
    has_labels = all(p.labels is not None for p in parts)
    offsets = np.cumsum([0] + [len(p) for p in parts])
    grouped = any(p.groups is not None for p in parts)
    extras = None
    if all(p.extras for p in parts):  # per-item lists (segmentation): concatenate, None if any part lacks one
        extras = {k: None if any(p.extras[k] is None for p in parts) else [v for p in parts for v in p.extras[k]]
                  for k in parts[0].extras}
    return Dataset(np.concatenate([p.inputs for p in parts]),
                   np.concatenate([p.labels for p in parts]) if has_labels else None,
                   tuple(n for p in parts for n in p.names),
                   np.concatenate([p.row_groups + o for p, o in zip(parts, offsets)]) if grouped else None, extras,
                   tuple(n for p in parts for n in p.notes))


def _limit(ds: Dataset, limit: int | None) -> Dataset:
    """A seeded random subset of items (all rows of each kept item)."""
    keep = subset(len(ds), limit)
    if len(keep) == len(ds):
        return ds
    rows = np.flatnonzero(np.isin(ds.row_groups, keep))
    remap = {old: new for new, old in enumerate(keep)}
    extras = None if ds.extras is None else {k: None if v is None else [v[i] for i in keep] for k, v in ds.extras.items()}
    return Dataset(ds.inputs[rows], None if ds.labels is None else ds.labels[keep],
                   tuple(ds.names[i] for i in keep),
                   None if ds.groups is None else np.array([remap[g] for g in ds.groups[rows]]), extras, ds.notes)


def _ecg_dataset(path: Path, preprocess, label_names: tuple, limit: int | None, perturb=None) -> Dataset:
    from medexport.engine.io.ecg import read_ecg
    from medexport.engine.tasks.ecg_rhythm import record_windows

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in ECG_SUFFIXES)
        table = _label_table(path, label_names)
    elif path.exists() or path.with_suffix(".hea").is_file():
        files, table = [path], None
    else:
        raise ConfigurationError(f"ECG data {path} does not exist", expected="a folder of records or one record")
    files = [files[i] for i in subset(len(files), limit)]
    inputs, groups, names, labels = [], [], [], []
    for f in files:
        try:
            record = read_ecg(f)
            rows, _ = record_windows(record if perturb is None else perturb.record(record, f.stem), preprocess)
        except InvalidInputError:
            continue  # records without enough beats cannot be scored by the model either
        inputs.append(rows)
        groups += [len(names)] * len(rows)
        names.append(f.stem)
        if table is not None:
            if f.stem not in table:
                raise ConfigurationError(f"no label for record {f.stem}", fix="add it to labels.csv / REFERENCE.csv")
            labels.append(table[f.stem])
    if not inputs:
        raise ConfigurationError(f"{path} holds no readable ECG record with enough beats")
    return Dataset(np.concatenate(inputs), np.array(labels) if table is not None else None, tuple(names),
                   np.array(groups))


def _tile_dataset(path: Path, spec, limit: int | None, perturb=None) -> Dataset:
    """Images tiled as the engine tiles them; masks from a sibling ``label/`` folder (ISBI layout:
    ``image/N.png`` + ``label/N.png``, foreground = 0) or ``masks/`` (foreground > 0)."""
    from medexport.engine.preprocess import image_to_tiles

    folder = path / "image" if (path / "image").is_dir() else path
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in STUDY_SUFFIXES),
                   key=lambda p: (len(p.stem), p.stem)) if folder.is_dir() else [path]
    files = [files[i] for i in subset(len(files), limit)]
    root = path if path.is_dir() else path.parent.parent  # a single file inside image/
    label_dir = next((root / d for d in ("label", "masks") if (root / d).is_dir()), None)
    rows, groups, origins, shapes, masks = [], [], [], [], []
    for k, f in enumerate(files):
        pixels = read_image(f, frame=0).pixels
        pixels = pixels if perturb is None else perturb.pixels(pixels, f.name)
        tiles, org = image_to_tiles(pixels, spec)
        rows.append(tiles)
        groups += [k] * len(tiles)
        origins.append(org)
        shapes.append(pixels.shape)
        if label_dir is not None:
            raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(label_dir / f.name))
            mask = raw == 0 if label_dir.name == "label" else raw > 0
            masks.append(mask if perturb is None else perturb.mask(mask, f.name))
    extras = {"origins": origins, "shapes": shapes, "masks": masks if label_dir is not None else None}
    return Dataset(np.concatenate(rows), np.zeros(len(files), np.int64) if label_dir is not None else None,
                   tuple(f.name for f in files), np.array(groups), extras)


def _from_npz(path: Path, split: str, preprocess, limit: int | None, perturb=None) -> Dataset:
    if not path.is_file():
        raise ConfigurationError(f"{path} does not exist", fix="check the path of the .npz file")
    data = np.load(path)
    key = f"{split}_images" if f"{split}_images" in data else "images"
    if key not in data:
        raise ConfigurationError(f"{path} has no '{split}_images' or 'images' array (has {sorted(data.files)})",
                                 fix="name the split, e.g. file.npz:train")
    idx = subset(len(data[key]), limit)
    images = data[key][idx]
    label_key = key.replace("images", "labels")
    labels = data[label_key][idx].reshape(len(images), -1)[:, 0].astype(np.int64) if label_key in data else None
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    names = tuple(f"{path.name}:{split}[{i}]" for i in idx)
    pixels = [img.astype(np.float32) / scale for img in images]
    if perturb is not None:
        pixels = [perturb.pixels(p, name) for p, name in zip(pixels, names)]
    inputs = np.concatenate([image_to_tensor(p, preprocess)[0] for p in pixels])
    return Dataset(inputs, labels, names)


def _from_folder(folder: Path, preprocess, label_names: tuple, limit: int | None, perturb=None) -> Dataset:
    every = folder_studies(folder)
    files = [every[i] for i in subset(len(every), limit)]
    labels = study_labels(folder, every, label_names)
    ds = _from_files(files, preprocess, None if labels is None else labels.table, perturb)
    return ds if labels is None else replace(ds, notes=tuple(labels.notes()))


def _from_list(path: Path, preprocess, label_names: tuple, limit: int | None, perturb=None) -> Dataset:
    """Studies listed in a ``file,label`` CSV; relative files live under the shared data folder."""
    from medexport.models.data import shared_data

    rows = list(read_label_file(path, label_names).items())
    if not rows:
        raise ConfigurationError(f"{path} lists no studies", expected="a header 'file,label' and one row per study")
    root = None
    files = []
    for name, _ in rows:
        file = Path(name)
        if not file.is_absolute():
            root = root or shared_data()
            file = root / file
        if not file.is_file():
            raise ConfigurationError(f"{path}: listed study {name} does not exist (looked for {file})",
                                     fix="fix the row, or set MEDEXPORT_DATA to the folder the list is relative to")
        files.append(file)
    keep = subset(len(files), limit)
    return _from_files([files[i] for i in keep], preprocess, {files[i]: rows[i][1] for i in keep}, perturb)


def _from_files(files: list, preprocess, table: dict | None, perturb=None) -> Dataset:
    inputs = []
    for f in files:
        try:
            pixels = read_image(f, frame=0).pixels
            pixels = pixels if perturb is None else perturb.pixels(pixels, Path(f).name)
            inputs.append(image_to_tensor(pixels, preprocess)[0])
        except InvalidInputError as exc:
            raise ConfigurationError(f"dataset item {f} cannot be used: {exc}", fix="remove it from the data folder") from None
    labels = None if table is None else np.array([table[f] for f in files], np.int64)
    return Dataset(np.concatenate(inputs), labels, tuple(Path(f).name for f in files))


CALIB_CHECK_STUDIES = 300  # the calibration studies compared with validation (build's default --calib-size)


def check_calib_val(calib_spec, val: Dataset, preprocess, labels: tuple = (), emit=print) -> None:
    """Refuse calibration data that is mostly the validation data (the same studies, whatever the
    paths: compared by their preprocessed inputs), which would make the validation meaningless;
    report a smaller overlap through ``emit``."""
    calib = load_dataset(calib_spec, preprocess, labels=labels, limit=CALIB_CHECK_STUDIES)
    digest = lambda row: hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest()  # noqa: E731
    seen = {digest(r) for r in calib.inputs}
    shared = sorted({val.names[g] for r, g in zip(val.inputs, val.row_groups) if digest(r) in seen})
    if not shared:
        return
    found = (f"{len(shared)} of {len(val)} validation studies are also among {len(calib)} calibration studies "
             f"(first: {', '.join(shared[:5])})")
    if len(shared) * 2 >= min(len(val), len(calib)):
        raise ConfigurationError(f"--calib {calib_spec} and --val are the same data: {found}",
                                 expected="validation studies the model was neither trained nor calibrated on",
                                 fix="give --val a held-out split (e.g. file.npz:val with --calib file.npz:train)")
    emit(f"[build] WARNING: {found}: their validation figures are optimistic")


def _detection_dataset(spec: str, preprocess, label_names: tuple, limit: int | None, perturb=None) -> Dataset:
    """Colour studies letterboxed as the engine does. ``folder:split[:count]`` reads a Pascal VOC
    folder (``JPEGImages/``, ``Annotations/``, ``{split}.txt``, e.g. ``detection/bccd:val``): the
    boxes of the model's labels become ``extras["truth"]`` in source pixels. A study file or a
    folder of pictures gives unlabelled items."""
    from medexport.engine.preprocess import check_colour_image, letterbox

    folder, split, count = _voc_spec(spec)
    if split is not None:
        ids = (folder / f"{split}.txt").read_text().split()
        files = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
    elif folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in STUDY_SUFFIXES)
    elif folder.is_file():
        files = [folder]
    else:
        raise ConfigurationError(f"detection data {spec!r} does not exist",
                                 expected="a VOC folder with its split (e.g. detection/bccd:val), a folder of "
                                          "pictures or a study file")
    n = count if limit is None else min(count or limit, limit)
    files = [files[i] for i in subset(len(files), n)]
    if not files:
        raise ConfigurationError(f"{spec} holds no pictures", fix="point to a folder of studies")
    inputs, geometry, truth = [], [], []
    for f in files:
        try:
            pixels = read_image(f, frame=0, colour=True).pixels
            pixels = pixels if perturb is None else perturb.pixels(pixels, f.name)
            check_colour_image(pixels, preprocess)  # what the engine would refuse cannot be golden either
            tensor, geo = letterbox(pixels, preprocess)
        except InvalidInputError as exc:
            raise ConfigurationError(f"dataset item {f} cannot be used: {exc}", fix="remove it from the data") from None
        inputs.append(tensor)
        geometry.append(geo)
        xml = folder / "Annotations" / f"{f.stem}.xml"
        boxes = _voc_boxes(xml, label_names) if split is not None and label_names else None
        if boxes is not None and perturb is not None:
            boxes = (perturb.boxes(boxes[0], pixels.shape, f.name), boxes[1])
        truth.append(boxes)
    labelled = all(t is not None for t in truth)
    return Dataset(np.concatenate(inputs), np.zeros(len(files), np.int64) if labelled else None,
                   tuple(f.name for f in files), None, {"geometry": geometry, "truth": truth if labelled else None})


def _voc_spec(spec: str) -> tuple[Path, str | None, int | None]:
    """``folder[:split[:count]]`` (a path that exists as given is taken whole)."""
    if Path(spec).exists():
        return Path(spec), None, None
    head, _, tail = spec.rpartition(":")
    count = None
    if head and tail.isdigit():
        count, (head, _, tail) = int(tail), head.rpartition(":")
    if head and Path(head).is_dir() and (Path(head) / f"{tail}.txt").is_file():
        return Path(head), tail, count
    raise ConfigurationError(f"detection data {spec!r} does not exist",
                             expected="a VOC folder and split (folder:split[:count], split listed in folder/split.txt), "
                                      "a folder of pictures or a study file")


def _voc_boxes(xml: Path, label_names: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) x0, y0, x1, y1 source pixels, label indices (N,)) of one VOC annotation file."""
    import xml.etree.ElementTree as ET

    if not xml.is_file():
        raise ConfigurationError(f"no annotation {xml}", fix="every listed image needs its Annotations/<id>.xml")
    boxes, labels = [], []
    for obj in ET.parse(xml).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in label_names:
            raise ConfigurationError(f"{xml}: object {name!r} is not one of the model's labels {list(label_names)}",
                                     fix="annotate with the model's label names")
        b = obj.find("bndbox")
        boxes.append([float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(label_names.index(name))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64)
HC18_TABLE = "pixel_size_and_hc.csv"


def _hc18_spec(spec: str) -> tuple | None:
    """``folder[:split[:count]]`` for an HC18 folder (one holding pixel_size_and_hc.csv), else None."""
    folder, _, rest = spec.partition(":")
    if not (Path(folder) / HC18_TABLE).is_file():
        return None
    split, _, count = rest.partition(":")
    if split not in ("", "train", "val", "all") or (count and not count.isdigit()):
        raise ConfigurationError(f"HC18 data spec {spec!r}", expected="FOLDER[:train|val|all[:count]]",
                                 fix="e.g. segmentation/hc18:val (the recipe's split by pregnancy)")
    return Path(folder), split or "val", int(count) if count else None


def _hc18_dataset(folder: Path, split: str, count: int | None, preprocess, limit: int | None, perturb=None) -> Dataset:
    """HC18 frames through the bundle's preprocessing, with truth for the HC guard: filled outline
    masks, pixel sizes and HC (mm) per item (``extras``); train / val is the recipe's split by pregnancy."""
    from medexport.models.recipes.fetal_head_us import hc18_items, hc18_split, read_item

    items = hc18_items(str(folder))
    train, held = hc18_split(items)
    chosen = {"train": train, "val": held, "all": list(items)}[split]
    n = count if limit is None else min(count or limit, limit)
    chosen = [chosen[i] for i in subset(len(chosen), n)]
    inputs, extras = [], {"masks": [], "shapes": [], "geometries": [], "pixel_mm": [], "hc_mm": []}
    for it in chosen:
        pixels, mask = read_item(folder, it)
        if perturb is not None:
            pixels, mask = perturb.pixels(pixels, it.name), perturb.mask(mask, it.name)
        tensor, geometry = image_to_tensor(pixels, preprocess)
        inputs.append(tensor)
        for key, value in (("masks", mask), ("shapes", mask.shape), ("geometries", geometry),
                           ("pixel_mm", it.pixel_mm), ("hc_mm", it.hc_mm)):
            extras[key].append(value)
    return Dataset(np.concatenate(inputs), np.zeros(len(chosen), np.int64), tuple(it.name for it in chosen), None, extras)
