"""Is this study one the bundle is for? Its DICOM header against the bundle's ``intended_for``.

A picture (PNG, JPEG) or a non-DICOM ECG has no header: it is not checked, and the result says
so. A header value that contradicts the declaration gives ``outside_intended_use`` naming the
tag and the value; in strict mode (a clinic setting, ``--strict``) the study is refused instead.
A tag that is absent or empty contradicts nothing (many devices leave Body Part Examined empty).
A volume is also checked by its geometry, header or not (NIfTI): the millimetres it covers and its
voxel size against the ranges measured on the training volumes (``check_extent``).
"""
from __future__ import annotations

import re

from .cautions import ResultWarning
from .errors import InvalidInputError

# (declaration field, DICOM keyword, tag, what the study is, what the model is for): plain words first
_TAGS = (("modalities", "Modality", "(0008,0060)", "the study is {}", "{} studies"),
         ("body_parts", "BodyPartExamined", "(0018,0015)", "the study shows the {}", "the {}"),
         ("view_positions", "ViewPosition", "(0018,5101)", "the view is {}", "{} views"))
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


class OutsideIntendedUseError(InvalidInputError):
    """A study the bundle is not for, refused in strict mode."""


def has_header(meta: dict) -> bool:
    """Whether the study came with a DICOM header (pictures and WFDB / CSV ECGs do not)."""
    return "Modality" in meta or "TransferSyntaxUID" in meta or "SOPClassUID" in meta


def age_in_years(value: str) -> float | None:
    """(0010,1010) Patient's Age ("005Y", "018M", "030D"); None when absent or malformed."""
    m = _AGE.match(str(value).strip().upper())
    return None if m is None else int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2)]


def contradictions(intended, meta: dict) -> list[str]:
    """One sentence per header value that contradicts ``intended`` (a manifest.IntendedUse): in plain
    words first ("the view is PA; this model is for AP views"), then the tag and its value."""
    found = []
    for name, keyword, tag, study, wanted in _TAGS:
        allowed = getattr(intended, name)
        value = str(meta.get(keyword, "")).strip().upper()
        if allowed and value and value not in allowed:
            words = (lambda t: t.lower()) if name == "body_parts" else (lambda t: t)
            found.append(f"{study.format(words(value))}; this model is for "
                         f"{wanted.format(' or '.join(words(a) for a in allowed))} ({tag} {keyword} is {value!r})")
    if intended.age_years is not None:
        age = age_in_years(meta.get("PatientAge", ""))
        lo, hi = intended.age_years
        if age is not None and not lo <= age <= hi:
            found.append(f"the patient is {age:.1f} years old; this model is for ages {lo:g}-{hi:g} years "
                         f"((0010,1010) PatientAge is {meta['PatientAge']!r})")
    return found


# what a study's kind says by itself: any ECG reader's record is an ECG, whatever its format
IMPLIED_MODALITY = {"ecg": "ECG"}


def check_intended_use(intended, meta: dict, *, strict: bool = False, study_kind: str = "image") -> list[ResultWarning]:
    """Warnings for one study; raises :class:`OutsideIntendedUseError` in strict mode."""
    if not intended.restricted:
        return []
    if not has_header(meta):
        implied = IMPLIED_MODALITY.get(study_kind)
        only_modality = not (intended.body_parts or intended.view_positions or intended.age_years is not None)
        if implied and only_modality:  # a WFDB / CSV / aECG record: its modality is all there is to check
            return contradictions_as_warnings(intended, {"Modality": implied}, strict)
        if strict:
            raise OutsideIntendedUseError(
                "the study has no DICOM header, so its modality, body part and age cannot be checked",
                expected=f"a DICOM study ({intended.describe()})",
                fix="open the DICOM file from the PACS, or run without strict mode")
        return [ResultWarning("no_intended_use_check", "no DICOM header (a picture or a non-DICOM file): "
                              f"modality, body part and age were not checked; this model is for {intended.describe()}")]
    return contradictions_as_warnings(intended, meta, strict)


def contradictions_as_warnings(intended, meta: dict, strict: bool) -> list[ResultWarning]:
    found = contradictions(intended, meta)
    if found and strict:
        raise OutsideIntendedUseError("; ".join(found), expected=intended.describe(),
                                      fix="open a study this model is for, or run without strict mode "
                                          "(the answer will carry a warning)")
    return [ResultWarning("outside_intended_use", f"{text}: the answer may be meaningless") for text in found]



# what routes a study to a bundle (the listener): the kind of study (modality) and what it shows (body
# part); how it was taken (view) and the patient's age stay warnings on the result, as for any study
ROUTING_FIELDS = ("modalities", "body_parts")


def routing_mismatch(intended, meta: dict) -> str | None:
    """Why a study whose header is ``meta`` should not go to a bundle intended for ``intended``
    (a manifest.IntendedUse), None when it should. A bundle that declares modalities takes only
    those, and a study without (0008,0060) Modality is none of them; an empty or absent
    (0018,0015) Body Part Examined contradicts nothing (many devices leave it empty)."""
    from dataclasses import replace

    if intended.modalities and not str(meta.get("Modality", "")).strip():
        return f"(0008,0060) Modality is absent; this model is for {' or '.join(intended.modalities)} studies"
    routing = replace(intended, view_positions=(), age_years=None)
    found = contradictions(routing, meta)
    return "; ".join(found) if found else None


def extent_mismatch(intended, shape: tuple, spacing: tuple, axes: str) -> str | None:
    """Why a volume of ``shape`` voxels of ``spacing`` mm (both in the model's ``axes``, e.g. 'RAS')
    is not one the bundle is for (``intended.extent_mm``, ``intended.spacing_mm``); None when it is.
    Plain words first, then the ranges it falls outside."""
    extent = tuple(float(n) * float(s) for n, s in zip(shape, spacing))
    wanted, wrong = [], []
    if intended.extent_mm is not None:
        wanted.append("volumes of about " + " x ".join(f"{(lo + hi) / 2:.0f}" for lo, hi in intended.extent_mm) + " mm")
        if not all(lo <= e <= hi for e, (lo, hi) in zip(extent, intended.extent_mm)):
            wrong.append("its extent is outside " + " x ".join(f"{lo:g}-{hi:g}" for lo, hi in intended.extent_mm) + " mm")
    if intended.spacing_mm is not None:
        lo, hi = intended.spacing_mm
        wanted.append(f"voxels of {lo:g}-{hi:g} mm")
        if not all(lo <= s <= hi for s in spacing):
            wrong.append(f"its voxel size is outside {lo:g}-{hi:g} mm")
    if not wrong:
        return None
    about = f" ({intended.note})" if intended.note else ""
    return (f"a volume of {' x '.join(str(int(n)) for n in shape)} voxels of {' x '.join(f'{s:.3g}' for s in spacing)} mm "
            f"({' x '.join(f'{e:.0f}' for e in extent)} mm in {axes} axes); this model is for "
            f"{' with '.join(wanted)}{about}: {' and '.join(wrong)}")


def check_extent(intended, shape: tuple, spacing: tuple, axes: str, *, strict: bool = False) -> list[ResultWarning]:
    """``outside_intended_use`` for a volume whose extent or voxel size the bundle is not for
    (a whole-brain series given to a model of crops); raises :class:`OutsideIntendedUseError` in strict mode."""
    found = extent_mismatch(intended, shape, spacing, axes)
    if found is None:
        return []
    if strict:
        raise OutsideIntendedUseError(found, expected=intended.describe(),
                                      fix="crop the volume to what this model is for (see its card), "
                                          "or run without strict mode (the answer will carry a warning)")
    return [ResultWarning("outside_intended_use", f"{found}: the answer may be meaningless")]
