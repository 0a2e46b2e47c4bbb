"""What a user opened: images and ECGs, folders grouped by DICOM series; one batch table.

Shared by the CLI's ``predict`` and the viewer, so that a folder gives the same studies and the
same CSV in both."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .cautions import join_warnings
from .errors import InvalidInputError, MedError

ECG_SUFFIXES = (".hea", ".dat", ".mat", ".xml", ".csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WAVEFORM_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.9."  # waveform storage SOP classes


@dataclass
class Study:
    path: str
    kind: str  # image | ecg
    title: str
    series: str = ""
    frames: int = 1
    header: dict = field(default_factory=dict)  # overlay facts (no patient name is logged)
    data: object = None  # ImageStudy | EcgRecord once loaded
    frame: int = 0
    lead: str | None = None  # ECG lead to analyse; None: the bundle's default (lead II)

    _loaded_frame: int = -1

    def load(self):
        """Read pixels / signals on first use (raises MedError with a clear message)."""
        if self.kind == "ecg":
            if self.data is None:
                from .io.ecg import read_ecg

                self.data = read_ecg(self.path)
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
    """'image', 'ecg' or None (not something the app opens), from suffix and DICOM header."""
    suffix = path.suffix.lower()
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
        return Study(str(path), "ecg" if is_ecg else "image", path.name, header.get("SeriesDescription", ""),
                     int(ds.get("NumberOfFrames", 1) or 1), header)
    if kind is None:
        raise InvalidInputError(f"{path} is not an image or ECG this app opens",
                                expected="DICOM, PNG/JPEG, WFDB (.hea), aECG (.xml) or CSV")
    return Study(str(path), kind, path.name)


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
        studies += found
        if p.is_dir() and not found:
            problems.append(f"{p} holds no image or ECG this app opens")
    return studies, problems


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
