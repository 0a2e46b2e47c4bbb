"""What a user opened: images, ECGs and volumes, folders grouped by DICOM series; one batch table.

Shared by the CLI's ``predict`` and the viewer, so that a folder gives the same studies and the
same CSV in both. A NIfTI file, and a folder whose files are one CT or MR series of slices
stacked along their normal (checked from the headers, as ``read_volume`` checks them), is one
"volume" study; any other series stays a list of 2-D images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .cautions import join_warnings
from .errors import InvalidInputError, MedError
from .io.nifti import is_nifti
from .io.volume import SKIPPED
from .volume import ORIENTATION, POSITION, SPACING, SliceHeader, arrange, numbers

ECG_SUFFIXES = (".hea", ".dat", ".mat", ".xml", ".csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WAVEFORM_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.9."  # waveform storage SOP classes
VOLUME_MODALITIES = ("CT", "MR")  # a folder holding one series of these opens as a volume


@dataclass
class Study:
    path: str
    kind: str  # image | ecg | volume
    title: str
    series: str = ""
    frames: int = 1
    header: dict = field(default_factory=dict)  # overlay facts (no patient name is logged)
    data: object = None  # ImageStudy | EcgRecord | VolumeStudy once loaded
    frame: int = 0
    lead: str | None = None  # ECG lead to analyse; None: the bundle's default (lead II)
    geometry: SliceHeader | None = None  # a CT / MR slice's geometry: for gathering a series into a volume

    _loaded_frame: int = -1

    def load(self):
        """Read pixels / signals on first use (raises MedError with a clear message)."""
        if self.kind == "ecg":
            if self.data is None:
                from .io.ecg import read_ecg

                self.data = read_ecg(self.path)
        elif self.kind == "volume":
            if self.data is None:
                from .io.volume import read_volume

                self.data = read_volume(self.path)
        elif self.data is None or self._loaded_frame != self.frame:
            from .io.image import luma, read_image

            frame = self.frame if self.frames > 1 else None
            try:
                self.data = read_image(self.path, frame=frame)
            except InvalidInputError as grey_error:
                try:  # a colour picture (blood smear): shown as grey; colour models read its colour
                    self.data = luma(read_image(self.path, frame=frame, colour=True))
                except InvalidInputError:
                    raise grey_error from None
            self._loaded_frame = self.frame
        return self.data

    @property
    def predict_options(self) -> dict:
        if self.kind == "ecg":
            return {"lead": self.lead} if self.lead else {}
        return {"frame": self.frame} if self.frames > 1 else {}


def kind_of(path: Path) -> str | None:
    """'image', 'ecg', 'dicom', 'volume' (NIfTI) or None (not something the app opens), from suffix and DICOM header."""
    suffix = path.suffix.lower()
    if is_nifti(str(path)):
        return "volume"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in (".hea", ".xml", ".csv"):
        return "ecg"
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if head[128:132] == b"DICM" or suffix in (".dcm", ".dicom"):
        return "dicom"
    return None


def study_for(path: Path) -> Study:
    kind = kind_of(path)
    if kind == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise InvalidInputError(f"{path} could not be parsed as DICOM ({exc})") from None
        sop = str(ds.get("SOPClassUID", ""))
        is_ecg = "WaveformSequence" in ds or sop.startswith(WAVEFORM_SOP_PREFIX)
        header = {k: _text(ds.get(k)) for k in ("PatientName", "PatientID", "StudyDate", "Modality",
                                                "SeriesDescription", "SeriesInstanceUID", "InstanceNumber",
                                                "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")}
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{path}: (0028,0008) Number of Frames is not a whole number",
                                    expected="a positive integer", fix="the file is damaged: ask for it again") from None
        return Study(str(path), "ecg" if is_ecg else "image", path.name, header.get("SeriesDescription", ""),
                     frames, header, geometry=None if is_ecg or frames > 1 else _slice_header(ds, path))
    if kind is None:
        raise InvalidInputError(f"{path} is not an image or ECG (or volume) this app opens",
                                expected="DICOM, PNG/JPEG, WFDB (.hea), aECG (.xml), CSV or NIfTI (.nii, .nii.gz)")
    if kind == "volume":
        return Study(str(path), kind, path.name, "NIfTI volume", header=_nifti_window(path))
    return Study(str(path), kind, path.name)


def _slice_header(ds, path: Path) -> SliceHeader | None:
    """A CT / MR slice's geometry from its header, or None (another modality, or a tag missing or malformed)."""
    if str(ds.get("Modality", "")).upper() not in VOLUME_MODALITIES:
        return None
    try:
        return SliceHeader(str(path), int(ds.Rows), int(ds.Columns),
                           numbers(ds.get("ImagePositionPatient"), 3, POSITION, str(path)),
                           numbers(ds.get("ImageOrientationPatient"), 6, ORIENTATION, str(path)),
                           numbers(ds.get("PixelSpacing"), 2, SPACING, str(path), positive=True))
    except (InvalidInputError, AttributeError, TypeError, ValueError):
        return None


def _nifti_window(path: Path) -> dict:
    """A NIfTI's own display window (cal_min / cal_max) in the DICOM header's terms; {} when unset.
    NIfTI states no modality."""
    from .io.nifti import nifti_errors

    with nifti_errors(str(path)):
        import nibabel

        header = nibabel.load(path).header
        low, high = float(header["cal_min"]), float(header["cal_max"])
    if not high > low:
        return {}
    return {"WindowCenter": f"{(low + high) / 2:g}", "WindowWidth": f"{high - low:g}",
            "WindowCenterWidthExplanation": "NIfTI cal_min / cal_max"}


def open_paths(paths) -> tuple[list[Study], list[str]]:
    """Studies for files and folders (recursively; DICOM grouped by series, then instance number).
    Files that cannot be opened are reported, not fatal."""
    studies, problems = [], []
    for raw in paths:
        p = Path(raw)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        found = []
        for f in files:
            if p.is_dir() and (f.suffix.lower() in (".dat", ".mat", ".atr") or f.name.startswith(".")):
                continue  # WFDB signal/annotation files are opened through their .hea
            try:
                found.append(study_for(f))
            except MedError as exc:
                if not p.is_dir():
                    problems.append(str(exc))
        found.sort(key=lambda s: (s.header.get("SeriesInstanceUID", ""), _int(s.header.get("InstanceNumber")), s.path))
        studies += _volumes(found) if p.is_dir() else found
        if p.is_dir() and not found:
            problems.append(f"{p} holds no image or ECG (or volume) this app opens")
    return studies, problems


def _volumes(found: list[Study]) -> list[Study]:
    """``found`` with each folder that holds one CT / MR series of slices (and nothing else this app
    opens) as one volume study, where the headers make a regular volume; other studies as they are."""
    by_folder: dict[Path, list[Study]] = {}
    for s in found:
        by_folder.setdefault(Path(s.path).parent, []).append(s)
    volumes = {}
    for folder, members in by_folder.items():
        series = {s.header.get("SeriesInstanceUID", "") for s in members}
        if len(members) < 2 or len(series) != 1 or any(s.geometry is None for s in members):
            continue
        if len(members) != sum(1 for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                               and f.name not in SKIPPED):
            continue  # other files beside the series: read_volume reads a folder whole
        try:
            arrange([s.geometry for s in members], f"the folder {folder}")
        except InvalidInputError:
            continue  # not one regular volume (a gap, a tilt, mixed sizes): its slices open as images
        first = members[0]
        volumes[folder] = Study(str(folder), "volume", folder.name,
                                f"{first.series} ({len(members)} slices)".strip(), header=first.header)
    out, placed = [], set()
    for s in found:
        folder = Path(s.path).parent
        if folder not in volumes:
            out.append(s)
        elif folder not in placed:
            out.append(volumes[folder])
            placed.add(folder)
    return out


def _text(value) -> str:
    """A header value as text; several values (VM > 1) joined by a backslash, as DICOM stores them."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def batch_row(study: Study, result, error: str | None) -> dict:
    """One row of the batch table: the study, the decision and scores, or the reason it failed."""
    row = {"file": Path(study.path).name, "path": study.path, "kind": study.kind, "error": error or ""}
    if result is not None:
        t = result.timings_ms
        row.update(model=f"{result.model_id} {result.model_version}", backend=result.backend,
                   precision=result.precision, decision=result.headline(), input_sha256=result.input_sha256,
                   total_ms=round(t["total"], 1), infer_ms=round(t["infer"], 2),
                   warning_codes=" ".join(w.code for w in result.warnings), warnings=join_warnings(result.warnings))
        if study.kind == "volume":  # one row per series: which one (NIfTI: none)
            row["series_uid"] = result.input_meta.get("SeriesInstanceUID", "")
        row.update({f"score_{k}": round(float(v), 4) for k, v in result.scores.items()})
    return row


def write_batch_csv(rows: list[dict], path: Path, replace: bool = False) -> Path:
    """The batch table as a new CSV file (a taken name gets a number), or replacing ``path`` when
    ``replace`` (the user said so: ``--overwrite``)."""
    import csv
    import io

    from .atomic import write_new, write_replacing

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return (write_replacing if replace else write_new)(Path(path), buf.getvalue().encode())
