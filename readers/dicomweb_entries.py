"""How a PACS series appears in the slide list: its id and readable names.

QIDO-RS answers are DICOM JSON (tag -> {"vr", "Value": [...]}). A series becomes
``{"path": "<study>/<series>", "name": ..., "group": ...}``: the name is the patient,
accession number and series description where the PACS has them, the group (the study
the viewer groups series by) the patient and accession number. Series whose UIDs are
not plain ``[0-9.]`` UIDs are left out: ids must stay safe to put in a URL path.
"""

from __future__ import annotations

import re
from typing import Any

NAME_FIELDS = ("00100010", "00080050", "0008103E")  # PatientName, AccessionNumber, SeriesDescr.
STUDY, SERIES, MODALITY, SERIES_NUMBER = "0020000D", "0020000E", "00080060", "00200011"
UID = re.compile(r"[0-9.]{1,64}")


def value_of(attrs: dict[str, Any], tag: str) -> Any:
    values = (attrs.get(tag) or {}).get("Value") or [None]
    return values[0]


def list_entry(attrs: dict[str, Any]) -> dict[str, object] | None:
    """A list entry for one QIDO series answer (None when its UIDs are not usable ids)."""
    study, series = value_of(attrs, STUDY), value_of(attrs, SERIES)
    if not (isinstance(study, str) and isinstance(series, str)
            and UID.fullmatch(study) and UID.fullmatch(series)):
        return None
    patient = value_of(attrs, NAME_FIELDS[0])
    if isinstance(patient, dict):  # PN in DICOM JSON: {"Alphabetic": "Doe^Jane"}
        patient = patient.get("Alphabetic")
    patient = " ".join(str(patient).split("^")).strip() if patient else ""
    accession, description = value_of(attrs, NAME_FIELDS[1]), value_of(attrs, NAME_FIELDS[2])
    parts = [p for p in (patient, accession, description) if p]
    if not parts:
        number = value_of(attrs, SERIES_NUMBER)
        parts = [f"series {number}" if number is not None else f"series {series}"]
    name = " · ".join(str(p)[:64] for p in parts)
    entry: dict[str, object] = {"path": f"{study}/{series}", "name": name, "size": 0}
    study_parts = [str(p)[:64] for p in (patient, accession) if p]
    if study_parts:  # the viewer groups series by study folder; this names the group
        entry["group"] = " · ".join(study_parts)
    return entry
