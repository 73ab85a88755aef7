"""The event objects: ``series-complete`` and ``study-complete``, made from records (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from dcmsortd.completion.tracker import SeriesRef, StudyRef

SERIES_COMPLETE = "series-complete"
STUDY_COMPLETE = "study-complete"


def iso(wall: float) -> str:
    """ISO 8601 local time with its UTC offset, to the millisecond."""
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


def _types(record: Mapping[str, Any]) -> list[str]:
    found = record.get("ClassifyType")
    return [str(t) for t in found] if isinstance(found, list) else []


def series_event(ref: SeriesRef, record: Mapping[str, Any], event_id: str,
                 wall: float) -> dict[str, Any]:
    """The event of a complete series; ``record`` is its record as written on disk."""
    return {
        "event": SERIES_COMPLETE,
        "id": event_id,
        "time": iso(wall),
        "StudyInstanceUID": str(record.get("StudyInstanceUID", ref.study_uid)),
        "SeriesInstanceUID": str(record.get("SeriesInstanceUID", ref.series_uid)),
        "PatientID": str(record.get("PatientID", "")),
        "ClassifyType": _types(record),
        "NumFiles": str(record.get("NumFiles", "0")),
        "folder": ref.series_dir,
        "record": ref.record,
    }


def _num(record: Mapping[str, Any]) -> int:
    try:
        return int(str(record.get("NumFiles", "0")))
    except ValueError:
        return 0


def study_event(ref: StudyRef, records: Sequence[Mapping[str, Any]], event_id: str,
                wall: float) -> dict[str, Any]:
    """The event of a complete study from the records of its series (as on disk).

    ``series`` lists their SeriesInstanceUIDs (sorted), ``ClassifyType`` is the union of
    their types (in order of first appearance), ``NumFiles`` the sum (a text, like the
    records'), ``PatientID`` the first record's that has one.
    """
    types: list[str] = []
    for record in records:
        types += [t for t in _types(record) if t not in types]
    patients = [str(r["PatientID"]) for r in records if r.get("PatientID")]
    return {
        "event": STUDY_COMPLETE,
        "id": event_id,
        "time": iso(wall),
        "StudyInstanceUID": ref.study_uid,
        "series": sorted(str(r.get("SeriesInstanceUID", "")) for r in records),
        "PatientID": patients[0] if patients else "",
        "ClassifyType": types,
        "NumFiles": str(sum(_num(r) for r in records)),
        "folder": ref.study_dir,
    }
