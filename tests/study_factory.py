"""Real DICOM objects of each kind the demo bundles take, made from the real data in the shared data
folder: chest films (Kermany paediatric AP), fetal ultrasound (HC18, calibrated), blood smears (BCCD)
and 12-lead ECGs (pydicom's waveform_ecg.dcm). Each is a pydicom Dataset with fresh UIDs and the
patient attributes it is given, ready for C-STORE or ``model.predict()`` (after ``save_as``)."""
from __future__ import annotations

import copy
import csv
import functools
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
KINDS = ("chest_film", "ultrasound", "smear", "ecg")


def data_root() -> Path:
    from medexport.models.data import shared_data

    return Path(shared_data())


@functools.lru_cache(maxsize=None)
def _files(kind: str) -> tuple:
    root = data_root()
    if kind == "chest_film":
        return tuple(sorted((root / "images" / "kermany-cxr224" / "train").glob("*/*.jpeg")))
    if kind == "ultrasound":
        return tuple(sorted(p for p in (root / "segmentation" / "hc18" / "images").glob("*_HC.png")))
    return tuple(sorted((root / "detection" / "bccd" / "JPEGImages").glob("*.jpg")))


def _pick(kind: str, i: int) -> Path:
    files = _files(kind)
    return files[(i * 7919) % len(files)]  # a prime stride: NORMAL and PNEUMONIA films alike


@functools.lru_cache(maxsize=None)
def _hc18_pixel_mm() -> dict:
    with open(data_root() / "segmentation" / "hc18" / "pixel_size_and_hc.csv", newline="") as fh:
        return {row["filename"]: float(row["pixel size(mm)"]) for row in csv.DictReader(fh)}


def _pixels(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert(mode), dtype=np.uint8)


def patient_age(birth_date: str, on: date) -> str:
    """(0010,1010) Patient's Age on ``on`` for a DICOM DA birth date: "018M" under two years, else "005Y"."""
    born = datetime.strptime(birth_date, "%Y%m%d").date()
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    return f"{months:03d}M" if months < 24 else f"{months // 12:03d}Y"


def _patient_study(ds: Dataset, i: int, patient_id: str, patient_name: str, birth_date: str) -> Dataset:
    """Patient and study attributes, fresh Study / Series / SOP Instance UIDs, dated today."""
    today = date.today()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, patient_name, birth_date
    ds.PatientAge = patient_age(birth_date, today)
    ds.PatientSex = "F" if i % 2 else "M"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = datetime.now().strftime("%H%M%S")
    ds.AccessionNumber, ds.StudyID = f"ACC{i:06d}", f"{i % 10**6}"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    return ds


def _sync_meta(ds: Dataset) -> Dataset:
    """File meta naming the dataset's SOP class and instance (save_as completes the rest)."""
    ds.ensure_file_meta()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


def _image(sop_class: str, modality: str, pixels: np.ndarray, photometric: str, i: int, patient_id: str,
           patient_name: str, birth_date: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = sop_class, modality
    ds.Manufacturer = "study_factory"
    _patient_study(ds, i, patient_id, patient_name, birth_date)
    ds.set_pixel_data(pixels, photometric, 8, generate_instance_uid=False)
    return _sync_meta(ds)


def chest_film(i: int, patient_id: str, patient_name: str, birth_date: str) -> Dataset:
    """A CR chest film, AP, MONOCHROME2: Kermany's paediatric film number ``i`` (cycling)."""
    ds = _image(CR_IMAGE, "CR", _pixels(_pick("chest_film", i), "L"), "MONOCHROME2", i, patient_id, patient_name,
                birth_date)
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "AP"
    ds.SeriesDescription = "CHEST AP"
    return ds


def ultrasound(i: int, patient_id: str, patient_name: str, birth_date: str) -> Dataset:
    """A US frame of HC18 with its pixel size as a (0018,6011) Sequence of Ultrasound Regions (cm)."""
    path = _pick("ultrasound", i)
    pixels = _pixels(path, "L")
    ds = _image(US_IMAGE, "US", pixels, "MONOCHROME2", i, patient_id, patient_name, birth_date)
    delta_cm = _hc18_pixel_mm()[path.name] / 10.0
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = pixels.shape[1] - 1, pixels.shape[0] - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = delta_cm
    ds.SequenceOfUltrasoundRegions = [region]
    ds.SeriesDescription = "fetal head, transthalamic plane"
    return ds


def smear(i: int, patient_id: str, patient_name: str, birth_date: str) -> Dataset:
    """A BCCD blood smear (RGB) as a Secondary Capture image (Modality OT) in the slide coordinate system."""
    import highdicom as hd

    pixels = _pixels(_pick("smear", i), "RGB")
    specimen = hd.SpecimenDescription(specimen_id=f"SMEAR{i:06d}", specimen_uid=generate_uid())
    sc = hd.sc.SCImage(pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
                       coordinate_system="SLIDE", study_instance_uid=generate_uid(),
                       series_instance_uid=generate_uid(), series_number=1, sop_instance_uid=generate_uid(),
                       instance_number=1, manufacturer="study_factory", container_identifier=f"SLIDE{i:06d}",
                       specimen_descriptions=[specimen])
    _patient_study(sc, i, patient_id, patient_name, birth_date)
    sc.SeriesDescription = "peripheral blood smear"
    return _sync_meta(sc)


@functools.lru_cache(maxsize=1)
def _ecg_template() -> Dataset:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    del ds.WaveformAnnotationSequence  # 77 annotation items make the SR writer 4x slower
    return ds


def ecg(i: int, patient_id: str, patient_name: str, birth_date: str) -> Dataset:
    """pydicom's 12-lead resting ECG (without its annotations) as a new study."""
    ds = copy.deepcopy(_ecg_template())
    return _sync_meta(_patient_study(ds, i, patient_id, patient_name, birth_date))


MAKERS = {"chest_film": chest_film, "ultrasound": ultrasound, "smear": smear, "ecg": ecg}


def birth_date(kind: str, i: int) -> str:
    """A distinctive birth date per (kind, i): children of 2-3 years for chest films (the pneumonia
    model's 1-5), adults born 1955-1999 for the rest."""
    if kind == "chest_film":
        born = date.today() - timedelta(days=2 * 366 + i % 360)
    else:
        born = date(1955 + KINDS.index(kind) * 11, 1, 1) + timedelta(days=i * 3 % 4000)
    return born.strftime("%Y%m%d")


def mixed(n: int, patient_prefix: str) -> list[Dataset]:
    """``n`` studies cycling chest film, ultrasound, smear, ECG; study ``i``'s patient is
    ``{prefix}{i:04d}`` named ``{prefix}FAM{i:04d}^GIVEN{i:04d}``, born on a distinctive date."""
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        out.append(MAKERS[kind](i, f"{patient_prefix}{i:04d}", f"{patient_prefix}FAM{i:04d}^GIVEN{i:04d}",
                                birth_date(kind, i)))
    return out


def kind_of(ds: Dataset) -> str:
    """Which of :data:`KINDS` a factory object is."""
    return {"CR": "chest_film", "US": "ultrasound", "OT": "smear", "ECG": "ecg"}[str(ds.Modality)]
