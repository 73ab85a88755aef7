"""The series record: first-image values, derived keys, re-sends, merge of two writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcmsortd.dicom.header import read_instance
from dcmsortd.model.instance import Instance
from dcmsortd.model.notice import Arrival
from dcmsortd.rules.engine import default_rules, parse_rules
from dcmsortd.sorting.series import SeriesState, apply_instance, merge, new_state
from realfiles import nibabel_data, pydicom_data, restamp

SERIES = "1.2.826.0.1.3680043.8.498.7.1"
RULES = default_rules()


def _series(tmp_path: Path, n: int, keys: frozenset[object] | None = None) -> list[Instance]:
    src = pydicom_data("MR_small.dcm")
    out = []
    for i in range(1, n + 1):
        path = restamp(src, tmp_path / f"{i}.dcm", "1.2.3", SERIES, f"{SERIES}.{i}",
                       InstanceNumber=i, SliceLocation=str(50 - i))
        out.append(read_instance(str(path), keys or RULES.tag_keys()))  # type: ignore[arg-type]
    return out


def _fold(instances: list[Instance], rules: object = RULES) -> SeriesState:
    arrival = Arrival("A", "B", "1.2.3.4", "/x")
    state = new_state(instances[0], arrival)
    for inst in instances:
        apply_instance(state, inst, rules)  # type: ignore[arg-type]
    return state


def test_first_image_stays_and_derived_keys_follow(tmp_path: Path) -> None:
    state = _fold(_series(tmp_path, 4))
    record = state.record()
    assert record["InstanceNumber"] == "1"
    assert record["SliceLocation"] == "46"  # smallest of 49, 48, 47, 46
    assert record["NumFiles"] == "4"
    assert record["IncomingConnection"] == {
        "AETitleCaller": "A", "AETitleCalled": "B", "CallerIP": "1.2.3.4"}
    assert isinstance(record["ClassifyType"], list) and record["ClassifyType"]
    assert record["StudyDescription"]  # 'missing' when absent, else the value


def test_resending_changes_nothing(tmp_path: Path) -> None:
    instances = _series(tmp_path, 5)
    once = _fold(instances)
    twice = _fold(instances + instances[::-1])
    assert json.dumps(once.record(), sort_keys=True) == json.dumps(twice.record(), sort_keys=True)
    assert not apply_instance(once, instances[2], RULES)


def test_diffusion_entries_once_per_image_in_instance_order(tmp_path: Path) -> None:
    files = [restamp(nibabel_data(n, tmp_path), tmp_path / f"d{i}.dcm", "1.2.3", SERIES,
                     f"{SERIES}.{i}", InstanceNumber=i)
             for i, n in ((2, "siemens_dwi_1000.dcm.gz"), (1, "siemens_dwi_0.dcm.gz"))]
    instances = [read_instance(str(f), RULES.tag_keys()) for f in files]
    record = _fold(instances + instances).record()
    info = record["siemensDiffusionInformation"]
    assert [e["InstanceNumber"] for e in info] == ["1", "2"]
    assert [e["B_value"] for e in info] == ["0", "1000"]
    assert "diffusion" in record["ClassifyType"]


def test_state_round_trips_through_its_json(tmp_path: Path) -> None:
    state = _fold(_series(tmp_path, 3))
    again = SeriesState.from_state(json.loads(json.dumps(state.to_state())))
    assert again.record() == state.record()
    assert again.accounted == state.accounted


def test_series_level_veto_survives_a_restart(tmp_path: Path) -> None:
    rules = parse_rules(json.dumps([
        {"type": "low", "check": "SeriesLevel",
         "rules": [{"tag": ["0x0020", "0x0013"], "operator": "<", "value": 3}]},
    ]), "test")
    instances = _series(tmp_path, 4, rules.tag_keys())  # type: ignore[arg-type]
    state = _fold(instances[:2], rules)
    assert state.classify == ["low"]
    apply_instance(state, instances[3], rules)  # InstanceNumber 4 fails: vetoed
    restarted = SeriesState.from_state(json.loads(json.dumps(state.to_state())))
    apply_instance(restarted, instances[2], rules)  # InstanceNumber 3 also fails
    assert restarted.classify == [] and "low" in restarted.vetoed


@pytest.mark.parametrize("split", [1, 2, 3])
def test_merge_of_two_writers_equals_one_writer(tmp_path: Path, split: int) -> None:
    instances = _series(tmp_path, 4)
    whole = _fold(instances)
    a, b = _fold(instances[:split]), _fold(instances[split:])
    merged = merge(a, b)
    assert merged.record() == whole.record() or (
        merged.accounted == whole.accounted
        and merged.record()["SliceLocation"] == whole.record()["SliceLocation"]
        and set(merged.classify) == set(whole.classify)
    )
    assert merged.record()["NumFiles"] == "4"
    assert merged.base == a.base
