"""Every operator, every tag form, negation and the value views, through one-entry rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dcmsortd.rules.engine import RuleSet, parse_rules
from dcmsortd.rules.ops import as_items, as_number, as_text, parse_list_text


def rules(*items: dict[str, Any]) -> RuleSet:
    return parse_rules(json.dumps(list(items)), "test")


def holds(entry: dict[str, Any], record: dict[str, Any] | None = None,
          values: dict[Any, Any] | None = None) -> bool:
    """Whether a rule made of this one entry gives its type."""
    ruleset = rules({"type": "X", "rules": [entry]})
    return "X" in ruleset.classify(record or {}, values or {}, [], []).types


# --- value views -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "number"), [
    ("2.46", 2.46), (" 60 ", 60.0), ("-1e3", -1000.0), (".5", 0.5), ("+7.", 7.0), (3, 3.0),
    (2.5, 2.5), ("", None), ("abc", None), ("1_000", None), ("nan", None), ("inf", None),
    (float("nan"), None), ("0x10", None), ("[1, 2]", None), (True, None), (None, None),
    ([1], None), (10**400, None),
])
def test_as_number(value: Any, number: float | None) -> None:
    assert as_number(value) == number


@pytest.mark.parametrize(("text", "items"), [
    ("[0, 256, 256, 0]", ("0", "256", "256", "0")),
    ("['ORIGINAL', 'PRIMARY', 'M', 'ND']", ("ORIGINAL", "PRIMARY", "M", "ND")),
    ("[]", ()),
    ('["it\'s", \'a, b\']', ("it's", "a, b")),
    ("[0.085000, 1.102000]", ("0.085000", "1.102000")),
    ("['a' 'b']", None),
    ("[[1, 2], [3]]", None),
    ("not a list", None),
    ("[unclosed", None),
])
def test_parse_list_text(text: str, items: tuple[str, ...] | None) -> None:
    assert parse_list_text(text) == items


def test_views_of_lists() -> None:
    assert as_text(["ORIGINAL", "PRIMARY"]) == "['ORIGINAL', 'PRIMARY']"
    assert as_text([0, 256]) == "[0, 256]"
    assert as_text(12) == "12"
    assert as_items(["a"]) == ("a",)
    assert as_items("plain") is None


# --- regexp (the default) ----------------------------------------------------------------

def test_regexp_is_the_default_and_searches() -> None:
    entry = {"tag": ["Manufacturer"], "value": "^GE MEDICAL"}
    assert holds(entry, {"Manufacturer": "GE MEDICAL SYSTEMS"})
    assert not holds(entry, {"Manufacturer": "SIEMENS"})
    assert holds({"tag": ["SeriesDescription"], "value": "T1"}, {"SeriesDescription": "ABCD_T1"})


def test_regexp_is_case_sensitive_unless_asked() -> None:
    assert not holds({"tag": ["Manufacturer"], "value": "^siemens"}, {"Manufacturer": "SIEMENS"})
    assert holds({"tag": ["Manufacturer"], "value": "(?i)^siemens"}, {"Manufacturer": "SIEMENS"})


def test_regexp_on_a_list_searches_its_text() -> None:
    entry = {"tag": ["0x0008", "0x0008"], "value": "'MOSAIC'"}
    assert holds(entry, values={(8, 8): ["ORIGINAL", "PRIMARY", "MOSAIC"]})
    assert holds({"tag": ["ImageType"], "value": "MOSAIC"},
                 {"ImageType": "['ORIGINAL', 'PRIMARY', 'MOSAIC']"})


def test_regexp_with_a_number_value() -> None:
    assert holds({"tag": ["SeriesNumber"], "value": 12}, {"SeriesNumber": "12"})


def test_regexp_with_a_tag_value_searches_that_text_literally() -> None:
    entry = {"tag": ["ProtocolName"], "value": ["SeriesDescription"]}
    assert holds(entry, {"SeriesDescription": "t1.mprage"}, {"ProtocolName": "ABCD t1.mprage"})
    assert not holds(entry, {"SeriesDescription": "t1.mprage"}, {"ProtocolName": "t1xmprage"})
    assert not holds(entry, {}, {"ProtocolName": "anything"})  # value tag absent: fails


# --- contains ----------------------------------------------------------------------------

def test_contains_substring_of_text() -> None:
    entry = {"tag": ["SeriesDescription"], "operator": "contains", "value": "rest"}
    assert holds(entry, {"SeriesDescription": "BOLD resting"})
    assert not holds(entry, {"SeriesDescription": "BOLD task"})


def test_contains_is_membership_in_lists() -> None:
    entry = {"tag": ["0x0008", "0x0008"], "operator": "contains", "value": "M"}
    assert holds(entry, values={(8, 8): ["ORIGINAL", "PRIMARY", "M", "ND"]})
    assert not holds(entry, values={(8, 8): ["ORIGINAL", "PRIMARY", "MOSAIC"]})


def test_contains_parses_list_shaped_record_text() -> None:
    entry = {"tag": ["ImageType"], "operator": "contains", "value": "DERIVED"}
    assert holds(entry, {"ImageType": "['DERIVED', 'PRIMARY']"})
    assert not holds(entry, {"ImageType": "['ORIGINAL', 'PRIMARY', 'NOT_DERIVED']"})


def test_contains_numbers_in_lists() -> None:
    entry = {"tag": ["AcquisitionMatrix"], "operator": "contains", "value": 256}
    assert holds(entry, {"AcquisitionMatrix": "[0, 256, 256, 0]"})
    assert holds(entry, values={"AcquisitionMatrix": [0, 256.0, 256, 0]})
    assert not holds(entry, {"AcquisitionMatrix": "[0, 128, 128, 0]"})


def test_contains_on_classify_type() -> None:
    ruleset = rules(
        {"type": "SIEMENS", "rules": [{"tag": ["Manufacturer"], "value": "^SIEMENS"}]},
        {"type": "Y", "rules": [{"tag": ["ClassifyType"], "operator": "contains",
                                 "value": "SIEMENS"}]},
    )
    assert ruleset.classify({"Manufacturer": "SIEMENS"}, {}, [], []).types == ["SIEMENS", "Y"]
    assert ruleset.classify({"Manufacturer": "GE"}, {}, [], []).types == []


# --- numeric -----------------------------------------------------------------------------

@pytest.mark.parametrize(("operator", "found", "value", "result"), [
    ("==", "60", 60, True), ("==", "60.0", "60", True), ("==", 60, 61, False),
    ("!=", "60", 61, True), ("!=", "60", 60, False),
    ("<", "2.46", 3, True), ("<", "3", 3, False), ("<", 3.5, "3", False),
    (">", "1000", 999.5, True), (">", "999", 999, False),
])
def test_numeric_operators(operator: str, found: Any, value: Any, result: bool) -> None:
    entry = {"tag": ["EchoTime"], "operator": operator, "value": value}
    assert holds(entry, {"EchoTime": found}) is result


@pytest.mark.parametrize("operator", ["==", "!=", "<", ">", "approx"])
@pytest.mark.parametrize("found", ["", "abc", "[1, 2]", "nan", "1/2"])
def test_numeric_operators_fail_on_non_numbers(operator: str, found: str) -> None:
    assert not holds({"tag": ["EchoTime"], "operator": operator, "value": 1}, {"EchoTime": found})


@pytest.mark.parametrize("operator", ["==", "!=", "<", ">", "approx", "regexp", "contains"])
def test_every_operator_fails_on_an_absent_tag(operator: str) -> None:
    assert not holds({"tag": ["EchoTime"], "operator": operator, "value": 1})


def test_private_element_compared_numerically() -> None:
    entry = {"tag": ["0x0019", "0x100A"], "operator": "==", "value": 60}
    assert holds(entry, values={(0x19, 0x100A): 60})
    assert holds(entry, values={(0x19, 0x100A): "60"})
    assert not holds(entry, values={(0x19, 0x100A): 59})


# --- approx ------------------------------------------------------------------------------

def test_approx_numbers_with_level() -> None:
    entry = {"tag": ["SliceThickness"], "operator": "approx", "value": 1, "approxLevel": "0.4"}
    assert holds(entry, {"SliceThickness": "1.3"})
    assert holds(entry, {"SliceThickness": "0.6"})
    assert not holds(entry, {"SliceThickness": "1.5"})


def test_approx_default_level_is_tight() -> None:
    entry = {"tag": ["EchoTime"], "operator": "approx", "value": "2.46"}
    assert holds(entry, {"EchoTime": "2.46005"})
    assert not holds(entry, {"EchoTime": "2.461"})


def test_approx_lists_of_equal_length() -> None:
    entry = {"tag": ["AcquisitionMatrix"], "operator": "approx", "value": [0, 256, 256, 0],
             "approxLevel": 1}
    assert holds(entry, {"AcquisitionMatrix": "[0, 256, 255, 0]"})
    assert not holds(entry, {"AcquisitionMatrix": "[0, 256, 250, 0]"})
    assert not holds(entry, {"AcquisitionMatrix": "[0, 256, 256]"})
    assert not holds(entry, {"AcquisitionMatrix": "256"})


def test_approx_list_of_numeric_strings_is_a_literal() -> None:
    entry = {"tag": ["PixelSpacing"], "operator": "approx", "value": ["0.5", "0.5"],
             "approxLevel": 0.01}
    assert holds(entry, values={"PixelSpacing": ["0.5", "0.505"]})


def test_approx_between_two_tags() -> None:
    entry = {"tag": ["0x0020", "0x0037", "4"], "operator": "approx",
             "value": ["0x0020", "0x0037", "1"], "approxLevel": 0.01}
    assert holds(entry, values={(0x20, 0x37, 4): "0.999", (0x20, 0x37, 1): "1.0"})
    assert not holds(entry, values={(0x20, 0x37, 4): "0.5", (0x20, 0x37, 1): "1.0"})
    assert not holds(entry, values={(0x20, 0x37, 4): "0.5"})  # value tag absent: fails


def test_numeric_compare_between_two_tags() -> None:
    entry = {"tag": ["RepetitionTime"], "operator": ">", "value": ["EchoTime"]}
    assert holds(entry, {"RepetitionTime": "2000", "EchoTime": "30"})
    assert not holds(entry, {"RepetitionTime": "20", "EchoTime": "30"})
    assert not holds(entry, {"RepetitionTime": "20"})


# --- exist / notexist --------------------------------------------------------------------

def test_exist_and_notexist() -> None:
    exist = {"tag": ["PatientID"], "operator": "exist"}
    notexist = {"tag": ["PatientID"], "operator": "notexist"}
    assert holds(exist, {"PatientID": ""}) and not holds(exist)
    assert holds(notexist) and not holds(notexist, {"PatientID": "x"})
    assert holds({**notexist, "negate": "yes"}, {"PatientID": "x"})


# --- negation ----------------------------------------------------------------------------

def test_negate_yes_inverts_and_no_does_not() -> None:
    entry = {"tag": ["ImageType"], "operator": "contains", "value": "DERIVED"}
    record = {"ImageType": "['DERIVED', 'PRIMARY']"}
    assert holds({**entry, "negate": "no"}, record)
    assert not holds({**entry, "negate": "yes"}, record)


def test_negated_entry_on_absent_tag_holds() -> None:
    """An SR without ImageType 'does not contain DERIVED'."""
    entry = {"tag": ["ImageType"], "operator": "contains", "value": "DERIVED", "negate": "yes"}
    assert holds(entry, {"Modality": "SR"})


# --- tag forms ---------------------------------------------------------------------------

def test_name_looks_in_the_record_first_then_the_dataset() -> None:
    entry = {"tag": ["EchoTime"], "operator": "==", "value": 2}
    assert holds(entry, {"EchoTime": "2"}, {"EchoTime": "5"})
    assert holds(entry, {}, {"EchoTime": "2"})
    assert not holds(entry, {"EchoTime": "5"}, {"EchoTime": "2"})


def test_tuple_tags_look_in_the_values_only() -> None:
    entry = {"tag": ["0x0008", "0x0070"], "value": "SIEMENS"}
    assert holds(entry, values={(8, 0x70): "SIEMENS"})
    assert not holds(entry, {"Manufacturer": "SIEMENS"})


@pytest.mark.parametrize(("tag", "key"), [
    (["0x0020", "0x0037", "4"], (0x20, 0x37, 4)),
    (["32", "55", "0x4"], (0x20, 0x37, 4)),
    ([32, 55, 4], (0x20, 0x37, 4)),
    (["0x5200", "0x9229", "0x0018", "0x9112"], (0x5200, 0x9229, 0x18, 0x9112)),
    (["0x5200", "0x9229", "0x0018", "0x9112", "0x0018", "0x0091"],
     (0x5200, 0x9229, 0x18, 0x9112, 0x18, 0x91)),
    (["0x0019", "0x100a"], (0x19, 0x100A)),
])
def test_tag_forms_are_canonical(tag: list[Any], key: tuple[int, ...]) -> None:
    ruleset = rules({"type": "X", "rules": [{"tag": tag, "operator": "exist"}]})
    assert ruleset.tag_keys() == frozenset({key})
    assert "X" in ruleset.classify({}, {key: "1"}, [], []).types


def test_tag_keys_include_value_tags_and_names() -> None:
    ruleset = rules({"type": "X", "rules": [
        {"tag": ["SliceThickness"], "operator": "approx", "value": ["0x0018", "0x0088"]},
        {"tag": ["ClassifyType"], "operator": "contains", "value": "GE"},
    ]})
    assert ruleset.tag_keys() == frozenset({"SliceThickness", (0x18, 0x88), "ClassifyType"})
