"""Is this study one the bundle is for? Its DICOM header against the bundle's ``intended_for``.

A picture (PNG, JPEG) or a non-DICOM ECG has no header: it is not checked, and the result says
so. A header value that contradicts the declaration gives ``outside_intended_use`` naming the
tag and the value; in strict mode (a clinic setting, ``--strict``) the study is refused instead.
A tag that is absent or empty contradicts nothing (many devices leave Body Part Examined empty).
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

