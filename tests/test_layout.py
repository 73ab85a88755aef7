from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.model.instance import Instance, SrEntry
from dcmsortd.model.notice import Arrival
from dcmsortd.sorting.layout import MAX_COMPONENT_BYTES, plan, safe_component


@pytest.mark.parametrize("value", ["1.2.840.113619.2.1", "ABCD0001", "20040826_185059",
                                   "Müller", "SIEMENS"])
def test_ordinary_values_are_kept(value: str) -> None:
    assert safe_component(value) == value


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_becomes_unknown(value: str) -> None:
    assert safe_component(value) == "unknown"


def test_control_only_value_is_replaced_and_hashed() -> None:
    out = safe_component("\x00")
    assert out.startswith("_-") and len(out) == 10


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_any_value_is_one_safe_component(value: str) -> None:
    out = safe_component(value)
    assert out and out not in (".", "..")
    assert not out.startswith(".")
    assert "/" not in out and "\\" not in out
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in out)
    assert len(out.encode("utf-8")) <= MAX_COMPONENT_BYTES
    assert os.path.basename(out) == out


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_distinct_values_stay_distinct(a: str, b: str) -> None:
    if a.strip() != b.strip() and a.strip() and b.strip():
        assert safe_component(a) != safe_component(b)


def _inst(**kw: object) -> Instance:
    base: dict[str, object] = dict(
        path="/data/site/archive/f", study_uid="1.2.3", series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5", modality="MR", patient_id="P1", study_date="20240101",
        study_time="101010", manufacturer="SIEMENS", fields={},
    )
    base.update(kw)
    return Instance(**base)  # type: ignore[arg-type]


def test_plan_contract_paths() -> None:
    where = plan("/d/site", _inst(), Arrival("A", "B", "1.1.1.1", "/data/site/archive/f"))
    assert where.link == "/d/site/raw/1.2.3/1.2.3.4/1.2.3.4.5"
    assert where.record == "/d/site/raw/1.2.3/1.2.3.4.json"
    assert where.participant_link == "/d/site/participants/P1/20240101_101010"
    assert where.arrived == "/d/site/.arrived/A B 1.1.1.1 1.2.3 1.2.3.4"
    assert where.sr_link is None


def test_plan_without_patient_or_dates_and_sr_without_manufacturer() -> None:
    sr = SrEntry("1.2.3.4.5", {"SOPInstanceUID": "1.2.3.4.5"})
    where = plan("/d/site", _inst(patient_id="", manufacturer="", sr=sr),
                 Arrival("A", "B", "1.1.1.1", "/x"))
    assert where.participant_link is None
    assert where.sr_link == "/d/site/srs/unknown/1.2.3/1.2.3.4.5"
    assert where.sr_listing == "/d/site/srs/unknown/1.2.3.json"
    where = plan("/d/site", _inst(study_date="", study_time=""), Arrival("A", "B", "c", "/x"))
    assert where.participant_link == "/d/site/participants/P1/unknown_unknown"


@pytest.mark.parametrize("pid", ["../../../tmp/pwned", "a/b", "..", ".hidden", "x" * 300,
                                 "a\x01\x1fb", "Ünïcødé/..", "\\..\\..\\x"])
def test_hostile_patient_ids_stay_inside_participants(pid: str) -> None:
    where = plan("/d/site", _inst(patient_id=pid), Arrival("A", "B", "c", "/x"))
    assert where.participant_dir is not None
    parent = os.path.dirname(os.path.normpath(where.participant_dir))
    assert parent == "/d/site/participants"


def test_arrival_marker_keeps_64_character_uids_and_stays_a_valid_name() -> None:
    uid = "1.3.12.2.1107.5.2.43.166018.30000018091013193045400000010123456"
    assert len(uid) <= 64
    where = plan("/d/site", _inst(study_uid=uid, series_uid=uid + "9"[: 64 - len(uid)]),
                 Arrival("A" * 300, "B", "::ffff:127.0.0.1", "/x"))
    name = os.path.basename(where.arrived)
    assert name.split(" ")[3] == uid
    assert len(name.encode()) <= 255
