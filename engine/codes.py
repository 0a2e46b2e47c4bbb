"""Standard codes for what models report, so a DICOM SR says 'Pneumonia' in SNOMED CT, not only
in a private scheme. Results look their labels up here (``Result.label_codes``); a label without
a standard code keeps the private scheme ``99MEDEXPORT``.

Every standard code below is in DICOM PS3.16 (and pydicom's ``pydicom.sr.codedict``, where the
CID is named): tests/test_sr_content.py checks them against pydicom's dictionary.
"""
from __future__ import annotations

PRIVATE_SCHEME = "99MEDEXPORT"

# (code value, coding scheme designator, code meaning)
IMAGE_FINDINGS = {
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
    "normal": ("17621005", "SCT", "Normal"),
    "effusion": ("60046008", "SCT", "Pleural effusion"),
    "cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "nodule": ("427359005", "SCT", "Solitary nodule of lung"),
    "atelectasis": ("46621007", "SCT", "Atelectasis"),
}
BLOOD_CELLS = {
    "rbc": ("41898006", "SCT", "Erythrocyte"),
    "wbc": ("52501007", "SCT", "Leukocyte"),
    "platelets": ("16378004", "SCT", "Platelet"),
}
ECG_RHYTHMS = {
    "af": ("49436004", "SCT", "Atrial fibrillation"),
    "normal": ("426783006", "SCT", "Sinus rhythm"),
}

# Fetal biometry as in the obstetric ultrasound report (TID 5000 family, TID 5008 Fetal Biometry
# Group): the measurements of CID 12005 "Fetal Biometry Measurements" (LOINC), keyed by the
# FetalHeadResult measurement name before its unit suffix
FETAL_BIOMETRY = {
    "head_circumference": ("11984-2", "LN", "Head Circumference"),
    "biparietal_diameter": ("11820-8", "LN", "Biparietal Diameter"),
    "occipitofrontal_diameter": ("11851-3", "LN", "Occipital-Frontal Diameter"),
    "gestational_age": ("18185-9", "LN", "Gestational Age"),  # CID 12019 OB-GYN Summary
}
GA_BY_HC_HADLOCK = ("11932-1", "LN", "HC, Hadlock 1984")  # CID 12013 Gestational Age Equations and Tables

# UCUM units by a measurement name's suffix (pixels: a UCUM annotation, there is no pixel unit)
UNITS = {"_mm": ("mm", "UCUM", "millimeter"), "_weeks": ("wk", "UCUM", "week"), "_px": ("{pixel}", "UCUM", "pixel")}
NO_UNITS = ("1", "UCUM", "no units")

# ECG (TID 3713 ECG Global Measurements; CID 3001 ECG Leads, MDC)
HEART_RATE = ("8867-4", "LN", "Heart rate")
BEATS_PER_MINUTE = ("{H.B.}/min", "UCUM", "BPM")
LEAD_ID = ("122148", "DCM", "Lead ID")
ECG_LEADS = {
    "i": ("2:1", "MDC", "Lead I"), "ii": ("2:2", "MDC", "Lead II"), "iii": ("2:61", "MDC", "Lead III"),
    "avr": ("2:62", "MDC", "aVR, augmented voltage, right"), "avl": ("2:63", "MDC", "aVL, augmented voltage, left"),
    "avf": ("2:64", "MDC", "aVF, augmented voltage, foot"),
    "v1": ("2:3", "MDC", "Lead V1"), "v2": ("2:4", "MDC", "Lead V2"), "v3": ("2:5", "MDC", "Lead V3"),
    "v4": ("2:6", "MDC", "Lead V4"), "v5": ("2:7", "MDC", "Lead V5"), "v6": ("2:8", "MDC", "Lead V6"),
}
# the ECG's RR statistics (engine/ecg_beats.py) have no standard code: private, unitless
RR_STATISTICS = {"rr_cv": "RR interval coefficient of variation", "rmssd_norm": "RR normalised RMSSD",
                 "pnn50": "RR share of successive differences > 50 ms", "n_beats": "Number of beats"}

# volumes (TID 1500 / 1411, DICOM SEG): hippocampus-mr's labels are parts of one hippocampus (CID 7140
# structure, its part as a topographical modifier, CID 2); segments are in category CID 7150
HIPPOCAMPUS = ("5366008", "SCT", "Hippocampus")
HIPPOCAMPUS_PARTS = {"anterior": HIPPOCAMPUS, "posterior": HIPPOCAMPUS}
PART_MODIFIERS = {"anterior": ("255549009", "SCT", "Anterior"), "posterior": ("255551008", "SCT", "Posterior")}
ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")
VOLUME = ("118565006", "SCT", "Volume")
MILLILITRE = ("ml", "UCUM", "mL")

# findings and how sure the model is
FINDING = ("121071", "DCM", "Finding")
NOT_EVALUATED = ("373121007", "SCT", "Not Evaluated")  # CID 3703: the finding of a flagged study
NUMBER_OF_SIMILAR_FINDINGS = ("111406", "DCM", "Number of similar findings")  # detections per label
COMMENT = ("121106", "DCM", "Comment")  # a TEXT item: a warning in words, never cut


def code_for(table: dict, label: str) -> tuple[str, str, str]:
    """The standard code for ``label`` in ``table``, else a private code that keeps the label."""
    return table.get(label.strip().lower(), (label, PRIVATE_SCHEME, label))
