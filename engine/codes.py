"""Standard codes for what models report, so a DICOM SR says 'Pneumonia' in SNOMED CT, not only
in a private scheme. Results look their labels up here (``Result.label_codes``); a label without
a standard code keeps the private scheme ``99MEDEXPORT``."""
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


def code_for(table: dict, label: str) -> tuple[str, str, str]:
    """The standard code for ``label`` in ``table``, else a private code that keeps the label."""
    return table.get(label.strip().lower(), (label, PRIVATE_SCHEME, label))
