"""What one received image contributes: the typed result of reading its header.

``header.read_instance`` produces it (possibly in a worker process, so every field is
plain, picklable data); ``series`` folds it into the series record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A rules tag reference in canonical form: a DICOM keyword ("EchoTime") or a tuple of ints:
# (g, e) an element, (g, e, i) item i of a multi-valued element,
# (g1, e1, g2, e2) an element in the first item of a sequence, (g1, e1, g2, e2, g3, e3) two levels.
TagKey = str | tuple[int, ...]

# A value as the rules see it: text, a number, or a list of those (multi-valued elements).
RuleValue = str | int | float | list[Any]


@dataclass(frozen=True)
class DiffusionEntry:
    """One image's Siemens diffusion information (values as the CSA header holds them)."""

    sop_uid: str
    instance_number: str
    b_value: str
    directionality: str
    gradient_direction: list[str] | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "B_value": self.b_value,
            "DiffusionDirectionality": self.directionality,
            "SOPInstanceUID": self.sop_uid,
            "InstanceNumber": self.instance_number,
        }
        if self.gradient_direction is not None:
            out["DiffusionGradientDirection"] = list(self.gradient_direction)
        return out


@dataclass(frozen=True)
class SrEntry:
    """One structured report, as listed in ``srs/<Manufacturer>/<StudyInstanceUID>.json``."""

    sop_uid: str
    fields: Mapping[str, str]  # SOPInstanceUID, SOPClassUID, ContentDate, ContentTime,
    # DocumentTitle, PatientID, StudyInstanceUID (absent ones left out)


@dataclass(frozen=True)
class Instance:
    """One image's header, reduced to what the sorter and the rules need."""

    path: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    patient_id: str  # "" when absent
    study_date: str  # "" when absent
    study_time: str  # "" when absent
    manufacturer: str  # "" when absent
    # Series-record fields this image provides, contract keys -> str values
    # (everything except IncomingConnection, NumFiles, ClassifyType, siemensDiffusionInformation).
    fields: Mapping[str, str]
    diffusion: DiffusionEntry | None = None
    sr: SrEntry | None = None
    # Values of the tags the rules reference and the record does not hold (absent = missing).
    rule_values: Mapping[TagKey, RuleValue] = field(default_factory=dict)
    # False: a later image of a series this process had read before; ``fields`` then holds
    # only what changes per image (the record keeps the first image's values).
    complete: bool = True
    # False: an image header (Rows) in a file without pixel data (stripped by an exporter or
    # anonymizer); it is sorted like any other, and the sorter logs a warning.
    pixel_data: bool = True
    # The file meta's (0002,0016) SourceApplicationEntityTitle (storescp writes the calling
    # AE title there), unpadded; None when absent. Read for every image, not only the first.
    source_ae: str | None = None
