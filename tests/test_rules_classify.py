"""Classifying a series image by image: order, references, SeriesLevel vetoes, explain."""

from __future__ import annotations

import json
from typing import Any

from dcmsortd.rules.engine import Classification, RuleSet, parse_rules


def rules(*items: dict[str, Any]) -> RuleSet:
    return parse_rules(json.dumps(list(items)), "test")


def has(name: str, value: str = ".") -> dict[str, Any]:
    return {"tag": [name], "value": value}


def test_types_keep_order_of_first_appearance_without_duplicates() -> None:
    ruleset = rules({"type": "A", "rules": [has("X")]}, {"type": "B", "rules": [has("Y")]},
                    {"type": "A", "rules": [has("Y")]})
    first = ruleset.classify({"Y": "1"}, {}, [], [])
    assert first == Classification(["B", "A"], frozenset())
    second = ruleset.classify({"X": "1", "Y": "1"}, {}, first.types, first.vetoed)
    assert second.types == ["B", "A"]


def test_types_from_earlier_images_stay() -> None:
    ruleset = rules({"type": "A", "rules": [has("X")]}, {"type": "B", "rules": [has("Y")]})
    assert ruleset.classify({"Y": "1"}, {}, ["A", "OLD"], []).types == ["A", "OLD", "B"]


def test_notrule_holds_when_the_rule_as_a_whole_fails() -> None:
    ruleset = rules(
        {"type": "AB", "id": "AB", "rules": [has("A"), has("B")]},
        {"type": "NOT-AB", "rules": [{"notrule": "AB"}]},
    )
    # A holds, B does not: AB fails as a whole, so NOT-AB holds (entry by entry negation
    # would have failed on A).
    assert ruleset.classify({"A": "1"}, {}, [], []).types == ["NOT-AB"]
    assert ruleset.classify({"A": "1", "B": "1"}, {}, [], []).types == ["AB"]


def test_rule_reference_evaluates_the_rule_not_its_type() -> None:
    ruleset = rules(
        {"type": "SIEMENS", "id": "S", "rules": [has("Manufacturer", "^SIEMENS")]},
        {"type": "T1", "rules": [{"rule": "S"}, has("SequenceName", "tfl")]},
    )
    assert ruleset.classify({"Manufacturer": "SIEMENS", "SequenceName": "*tfl3d1"}, {}, [],
                            []).types == ["SIEMENS", "T1"]
    # The type SIEMENS from an earlier image does not make the reference hold for this one.
    assert ruleset.classify({"SequenceName": "*tfl3d1"}, {}, ["SIEMENS"], []).types == [
        "SIEMENS"]


def test_reference_to_a_later_rule_and_negate_on_a_reference() -> None:
    ruleset = rules(
        {"type": "FIRST", "rules": [{"rule": "LATER", "negate": "yes"}]},
        {"type": "LATER", "id": "LATER", "rules": [has("X")]},
    )
    assert ruleset.classify({}, {}, [], []).types == ["FIRST"]
    assert ruleset.classify({"X": "1"}, {}, [], []).types == ["LATER"]


def test_classify_type_sees_types_added_earlier_in_the_same_pass() -> None:
    ruleset = rules(
        {"type": "GE", "rules": [has("Manufacturer", "^GE")]},
        {"type": "GE-CT", "rules": [{"tag": ["ClassifyType"], "operator": "contains",
                                     "value": "GE"}, has("Modality", "CT")]},
    )
    assert ruleset.classify({"Manufacturer": "GE", "Modality": "CT"}, {}, [], []).types == [
        "GE", "GE-CT"]


def test_classify_type_from_the_record_is_ignored_in_favour_of_current() -> None:
    ruleset = rules({"type": "Y", "rules": [{"tag": ["ClassifyType"], "operator": "contains",
                                             "value": "X"}]})
    assert ruleset.classify({"ClassifyType": ["X"]}, {}, [], []).types == []
    assert ruleset.classify({"ClassifyType": []}, {}, ["X"], []).types == ["X", "Y"]


def test_a_type_given_by_a_later_rule_is_seen_on_a_second_pass() -> None:
    """The result is a fixed point: re-sending the image changes nothing."""
    ruleset = rules(
        {"type": "EARLY", "rules": [{"tag": ["ClassifyType"], "operator": "contains",
                                     "value": "LATE"}]},
        {"type": "LATE", "rules": [has("X")]},
    )
    result = ruleset.classify({"X": "1"}, {}, [], [])
    assert result.types == ["LATE", "EARLY"]
    assert ruleset.classify({"X": "1"}, {}, result.types, result.vetoed) == result


SERIES_LEVEL: list[dict[str, Any]] = [
    {"type": "SIEMENS", "rules": [has("Manufacturer", "^SIEMENS")]},
    {"type": "FM", "check": "SeriesLevel", "rules": [
        {"tag": ["ClassifyType"], "operator": "contains", "value": "SIEMENS"},
        {"tag": ["0x0019", "0x100A"], "operator": "==", "value": 60}]},
]


def test_series_level_type_holds_while_every_image_holds() -> None:
    ruleset = rules(*SERIES_LEVEL)
    record = {"Manufacturer": "SIEMENS"}
    first = ruleset.classify(record, {(0x19, 0x100A): 60}, [], [])
    assert first == Classification(["SIEMENS", "FM"], frozenset())
    second = ruleset.classify(record, {(0x19, 0x100A): "60"}, first.types, first.vetoed)
    assert second == first


def test_series_level_type_is_removed_and_vetoed_when_one_image_fails() -> None:
    ruleset = rules(*SERIES_LEVEL)
    record = {"Manufacturer": "SIEMENS"}
    first = ruleset.classify(record, {(0x19, 0x100A): 60}, [], [])
    failed = ruleset.classify(record, {(0x19, 0x100A): 59}, first.types, first.vetoed)
    assert failed == Classification(["SIEMENS"], frozenset({"FM"}))
    # Never comes back, also when the vetoes come from disk after a restart.
    again = ruleset.classify(record, {(0x19, 0x100A): 60}, failed.types, {"FM"})
    assert again == failed


def test_series_level_failing_on_the_first_image_vetoes_it() -> None:
    ruleset = rules(*SERIES_LEVEL)
    first = ruleset.classify({"Manufacturer": "SIEMENS"}, {}, [], [])
    assert first == Classification(["SIEMENS"], frozenset({"FM"}))
    assert ruleset.classify({"Manufacturer": "SIEMENS"}, {(0x19, 0x100A): 60}, first.types,
                            first.vetoed).types == ["SIEMENS"]


def test_a_vetoed_type_is_never_added_by_any_rule_and_is_dropped_from_current() -> None:
    ruleset = rules({"type": "A", "check": "SeriesLevel", "rules": [has("X")]},
                    {"type": "A", "rules": [has("Y")]})
    assert ruleset.classify({"Y": "1"}, {}, [], []) == Classification([], frozenset({"A"}))
    assert ruleset.classify({"X": "1"}, {}, ["A", "B"], {"A"}).types == ["B"]


def test_image_level_rule_for_a_series_level_type_added_earlier_is_removed_on_failure() -> None:
    ruleset = rules({"type": "A", "rules": [has("Y")]},
                    {"type": "A", "check": "SeriesLevel", "rules": [has("X")]})
    assert ruleset.classify({"Y": "1"}, {}, [], []) == Classification([], frozenset({"A"}))


def test_empty_rule_set_keeps_current() -> None:
    assert rules().classify({}, {}, ["A"], []).types == ["A"]


def test_explain_names_the_failing_entry_and_its_value() -> None:
    ruleset = rules(
        {"type": "SIEMENS", "id": "S", "rules": [has("Manufacturer", "^SIEMENS")]},
        {"type": "ABCD-T1", "id": "T1", "rules": [
            {"rule": "S"},
            {"tag": ["SliceThickness"], "operator": "approx", "value": 1, "approxLevel": 0.4},
            {"tag": ["ImageType"], "operator": "contains", "value": "DERIVED", "negate": "yes"}]},
        {"type": "GE-ONLY", "rules": [{"rule": "S", "negate": "yes"}]},
    )
    record = {"Manufacturer": "SIEMENS", "SliceThickness": "1.6",
              "ImageType": "['ORIGINAL', 'PRIMARY']"}
    reports = ruleset.explain(record, {}, [], [])
    assert [r.held for r in reports] == [True, False, False]
    t1 = reports[1]
    assert (t1.id, t1.type) == ("T1", "ABCD-T1")
    assert [e.held for e in t1.entries] == [True, False, True]
    failed = t1.failed
    assert failed is not None and failed.number == 2
    assert failed.test == '["SliceThickness"] approx 1 (within 0.4)'
    assert failed.found == "'1.6'"
    assert "fails at entry 2" in t1.summary() and "'1.6'" in t1.summary()
    assert reports[2].entries[0].test == "not rule 'S'"
    assert reports[2].entries[0].found == "it holds"
    assert json.loads(json.dumps([r.as_json() for r in reports]))[1]["entries"][1] == {
        "number": 2, "held": False, "test": '["SliceThickness"] approx 1 (within 0.4)',
        "found": "'1.6'"}


def test_explain_shows_absent_values_and_nested_failures() -> None:
    ruleset = rules(
        {"type": "S", "id": "S", "rules": [has("Manufacturer", "^SIEMENS")]},
        {"type": "T", "rules": [{"rule": "S"}]},
    )
    reports = ruleset.explain({}, {}, [], [])
    assert reports[0].failed is not None and reports[0].failed.found == "absent"
    assert reports[1].failed is not None
    assert reports[1].failed.found == (
        "it fails at entry 1: [\"Manufacturer\"] regexp '^SIEMENS', found absent")


def test_explain_marks_vetoed_types() -> None:
    ruleset = rules(*SERIES_LEVEL)
    reports = ruleset.explain({"Manufacturer": "SIEMENS"}, {(0x19, 0x100A): 60}, ["SIEMENS"],
                              {"FM"})
    assert reports[1].vetoed and reports[1].held
    assert "vetoed" in reports[1].summary()
