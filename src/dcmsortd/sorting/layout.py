"""Plan where an image goes: pure functions from header values to paths under ``site/``.

Every header value used as a path component goes through :func:`safe_component`, so no
value can climb out of its folder, hide itself or exceed a file name's length.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from dcmsortd.model.instance import Instance
from dcmsortd.model.notice import Arrival

MAX_COMPONENT_BYTES = 120
_HASH_CHARS = 8
# control (C0, DEL, C1), surrogate, line and paragraph separator characters
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_RECORD_SUFFIX = ".json"  # a record sits next to the folder of the same name


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _unsafe(ch: str) -> bool:
    return ch in "/\\" or unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _scrub(value: str) -> str:
    if value.isprintable() and "/" not in value and "\\" not in value:
        text = value.strip()  # the common case, without a look at each character
    else:
        text = "".join("_" if _unsafe(ch) else ch for ch in value).strip()
    if text.startswith("."):
        text = "_" + text.lstrip(".")
    return text


def _clip(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


@lru_cache(maxsize=4096)  # the same study, series, patient and callers come again and again
def safe_component(value: str, max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """Make ``value`` a safe single path component.

    No ``/``, ``\\``, NUL, control characters (C0, DEL, C1) or line separators, never
    ``.``/``..`` or a leading dot, never ending in ``.json`` (the name of the record next to
    a folder), at most ``max_bytes`` UTF-8 bytes, ``unknown`` when empty. A value that had to
    be changed (other than trimming surrounding blanks) or shortened gets ``-<8 hex of its
    SHA-256>`` appended, so two distinct values never share a folder. Ordinary UIDs, IDs and
    dates come out as is.
    """
    stripped = value.strip()
    text = _scrub(stripped)
    if not text:
        return "unknown"
    changed = text != stripped or text.lower().endswith(_RECORD_SUFFIX)
    if changed or len(text.encode("utf-8")) > max_bytes:
        suffix = "-" + _digest(value)
        text = _clip(text, max_bytes - len(suffix)) + suffix
    return text


def arrival_marker_name(arrival: Arrival, study_uid: str, series_uid: str) -> str:
    """``<caller> <called> <ip> <StudyInstanceUID> <SeriesInstanceUID>``, each part made safe.

    Each part is bounded (AE titles 32 bytes, ip 46, UIDs 64: the DICOM maxima and more) so
    that the whole name stays under the 255-byte limit of a file name.
    """
    return _marker_name(arrival.caller, arrival.called, arrival.ip, study_uid, series_uid)


def _marker_name(caller: str, called: str, ip: str, study_uid: str, series_uid: str) -> str:
    sender = (safe_component(caller, 32), safe_component(called, 32), safe_component(ip, 46))
    return " ".join(sender) + " " + marker_tail(study_uid, series_uid)


def marker_tail(study_uid: str, series_uid: str) -> str:
    """The part of an arrival marker's name that names the series: ``<study> <series>``."""
    return safe_component(study_uid, 64) + " " + safe_component(series_uid, 64)


@dataclass(frozen=True)
class Placement:
    """Every path (absolute) one image touches under ``<datadir>/site``."""

    study_dir: str
    series_dir: str
    link: str
    record: str
    arrived: str
    participant_dir: str | None
    participant_link: str | None
    sr_dir: str | None
    sr_link: str | None
    sr_listing: str | None

    @property
    def series_key(self) -> tuple[str, str]:
        return (os.path.basename(self.study_dir), os.path.basename(self.series_dir))


def plan(site: str, inst: Instance, arrival: Arrival) -> Placement:
    """Where ``inst`` (announced by ``arrival``) is filed below the ``site`` folder."""
    sr_vendor = inst.manufacturer if inst.sr is not None else None
    (study_dir, series_dir, record, arrived, participant_dir, participant_link,
     sr_dir) = _series_paths(site, inst.study_uid, inst.series_uid, inst.patient_id,
                             inst.study_date, inst.study_time, sr_vendor,
                             arrival.caller, arrival.called, arrival.ip)
    name = _safe_sop(inst.sop_uid)
    return Placement(
        study_dir=study_dir,
        series_dir=series_dir,
        link=os.path.join(series_dir, name),
        record=record,
        arrived=arrived,
        participant_dir=participant_dir,
        participant_link=participant_link,
        sr_dir=sr_dir,
        sr_link=None if sr_dir is None else os.path.join(sr_dir, name),
        sr_listing=None if sr_dir is None else sr_dir + ".json",
    )


def _safe_sop(sop_uid: str) -> str:
    """safe_component() of a SOP Instance UID, past its cache (each one comes once)."""
    return safe_component.__wrapped__(sop_uid)


@lru_cache(maxsize=1024)  # every image of a series, from one sender, has the same ones
def _series_paths(
    site: str, study_uid: str, series_uid: str, patient_id: str, study_date: str,
    study_time: str, sr_vendor: str | None, caller: str, called: str, ip: str,
) -> tuple[str, str, str, str, str | None, str | None, str | None]:
    """The paths a series' images share: folders, record, marker, participant, SR folder."""
    study = safe_component(study_uid)
    series = safe_component(series_uid)
    study_dir = os.path.join(site, "raw", study)
    series_dir = os.path.join(study_dir, series)
    participant_dir = participant_link = None
    if patient_id.strip():
        participant_dir = os.path.join(site, "participants", safe_component(patient_id))
        when = f"{study_date.strip() or 'unknown'}_{study_time.strip() or 'unknown'}"
        participant_link = os.path.join(participant_dir, safe_component(when))
    sr_dir = None
    if sr_vendor is not None:
        sr_dir = os.path.join(site, "srs", safe_component(sr_vendor), study)
    arrived = os.path.join(site, ".arrived", _marker_name(caller, called, ip, study, series))
    return (study_dir, series_dir, series_dir + ".json", arrived, participant_dir,
            participant_link, sr_dir)
