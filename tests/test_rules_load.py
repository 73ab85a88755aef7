"""Loading and checking rules files: every validation error, all reported at once."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from dcmsortd.model.errors import RulesError
from dcmsortd.rules.engine import RuleSet, default_rules, load_rules, parse_rules

FIONA_EXAMPLE = r"""[
 {"type": "GE", "id": "GEBYMANUFACTURER", "description": "This scan is from GE",
  "rules": [{"tag": ["Manufacturer"], "value": "^GE MEDICAL"}]},
 {"type": "SIEMENS", "id": "SIEMENSBYMANUFACTURER",
  "rules": [{"tag": ["Manufacturer"], "value": "^SIEMENS"}]},
 {"type": "mosaic", "rules": [{"tag": ["0x0008","0x0008"], "operator": "contains",
  "value": "MOSAIC"}]},
 {"type": "ABCD-T1", "description": "ABCD T1", "rules": [{"rule": "SIEMENSBYMANUFACTURER"},
  {"tag": ["SequenceName"], "value": "^\\*tfl3d1_16ns"},
  {"tag": ["SliceThickness"], "operator": "approx", "value": 1, "approxLevel": "0.4"},
  {"tag": ["ImageType"], "operator": "contains", "value": "DERIVED", "negate": "yes"}]},
 {"type": "ABCD-Diffusion-FM", "check": "SeriesLevel", "rules": [
  {"tag": ["ClassifyType"], "operator": "contains", "value": "SIEMENS"},
  {"tag": ["0x0019","0x100A"], "operator": "==", "value": 60}]},
 {"type": "localizer", "rules": [{"notrule": "GEBYMANUFACTURER"},
  {"tag": ["0x0020","0x0037","4"], "operator": "approx", "value": ["0x0020","0x0037","1"],
   "approxLevel": 0.01}]}
]"""


def problems_of(data: Any, strict: bool = False) -> list[str]:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "site.json", strict)
    assert caught.value.source == "site.json"
    return caught.value.problems


def one_problem(data: Any) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def test_fiona_example_loads_unchanged() -> None:
    ruleset = parse_rules(FIONA_EXAMPLE, "classifyRules.json")
    assert [r.type for r in ruleset.rules] == [
        "GE", "SIEMENS", "mosaic", "ABCD-T1", "ABCD-Diffusion-FM", "localizer"]
    record = {"Manufacturer": "SIEMENS", "SequenceName": "*tfl3d1_16ns", "SliceThickness": "1.2",
              "ImageType": "['ORIGINAL', 'PRIMARY', 'M', 'ND']"}
    values: dict[Any, Any] = {(0x19, 0x100A): 60, (8, 8): ["ORIGINAL", "PRIMARY", "M", "ND"],
              (0x20, 0x37, 1): "1.0", (0x20, 0x37, 4): "0.995"}
    result = ruleset.classify(record, values, [], [])
    assert result.types == ["SIEMENS", "ABCD-T1", "ABCD-Diffusion-FM", "localizer"]


def test_invalid_json_names_line_and_column() -> None:
    problem = one_problem('[\n  {"type": "GE",\n   "rules": [}\n]')
    assert problem.startswith("invalid JSON at line 3, column 14:")


@pytest.mark.parametrize("text", ["", "{", "[1e999999999999", "[" * 100_000, "1" * 5000])
def test_broken_json_is_a_rules_error(text: str) -> None:
    assert problems_of(text)


def test_top_level_must_be_an_array() -> None:
    assert "expected a JSON array of rules, got an object" in one_problem({"type": "GE"})


def test_rule_must_be_an_object() -> None:
    assert one_problem(["GE"]) == "rule 1 (no id, no type): expected an object, got a string"


def test_missing_type_and_rules() -> None:
    assert one_problem([{"id": "A", "rules": [{"tag": ["X"], "operator": "exist"}]}]) == (
        "rule 1 (id 'A', no type): missing 'type'")
    assert one_problem([{"type": "T"}]) == "rule 1 (no id, type 'T'): missing 'rules'"
    assert "non-empty array" in one_problem([{"type": "T", "rules": []}])
    assert "non-empty string" in one_problem([{"type": " ", "rules": [{"tag": ["X"], "operator":
                                                                       "exist"}]}])


def test_unknown_operator() -> None:
    problem = one_problem([{"type": "T", "id": "A", "rules": [
        {"tag": ["EchoTime"], "operator": "exist"},
        {"tag": ["EchoTime"], "operator": "aprox", "value": 1}]}])
    assert problem.startswith("rule 1 (id 'A', type 'T'), entry 2: unknown operator \"aprox\"")


def test_bad_regexp() -> None:
    problem = one_problem([{"type": "T", "rules": [{"tag": ["SeriesDescription"],
                                                    "value": "(unclosed"}]}])
    assert problem.startswith(
        "rule 1 (no id, type 'T'), entry 1: invalid regular expression \"(unclosed\"")


@pytest.mark.parametrize("tag", [
    [], ["0x0008"], ["Echo Time"], [""], ["0x0008", "0x0008", "0", "1", "2"],
    ["0x0008", "0xZZ"], ["0x10000", "0x0010"], ["0x0008", "0x0008", "-1"], ["0020", "0037"],
    "EchoTime", [True, 1], [None, None], ["0x0008", 8.0], {"g": 8},
])
def test_malformed_tags(tag: Any) -> None:
    problem = one_problem([{"type": "T", "rules": [{"tag": tag, "operator": "exist"}]}])
    assert "entry 1: malformed tag" in problem


def test_unknown_and_duplicate_ids() -> None:
    data = [
        {"type": "A", "id": "X", "rules": [{"rule": "NOPE"}]},
        {"type": "B", "id": "X", "rules": [{"notrule": "ALSO-NOPE"}]},
    ]
    assert problems_of(data) == [  # a shared id is no error (issue 14): only in strict mode
        "rule 1 (id 'X', type 'A'), entry 1: unknown rule id 'NOPE'",
        "rule 2 (id 'X', type 'B'), entry 1: unknown rule id 'ALSO-NOPE'",
    ]
    assert problems_of(data, strict=True) == [
        "rule 1 (id 'X', type 'A'), entry 1: unknown rule id 'NOPE'",
        "rule 2 (id 'X', type 'B'): duplicate id 'X' (rule 1 has it)",
        "rule 2 (id 'X', type 'B'), entry 1: unknown rule id 'ALSO-NOPE'",
    ]


def test_reference_cycles_name_their_ids() -> None:
    problems = problems_of([
        {"type": "A", "id": "A", "rules": [{"rule": "B"}]},
        {"type": "B", "id": "B", "rules": [{"notrule": "C"}]},
        {"type": "C", "id": "C", "rules": [{"rule": "A"}]},
        {"type": "S", "id": "SELF", "rules": [{"rule": "SELF"}]},
        {"type": "D", "id": "D", "rules": [{"rule": "A"}]},
    ])
    assert problems == [
        "rule 1 (id 'A', type 'A'): reference cycle 'A' -> 'B' -> 'C' -> 'A'",
        "rule 4 (id 'SELF', type 'S'): reference cycle 'SELF' -> 'SELF'",
    ]


def test_all_problems_at_once_with_rule_id_type_and_entry() -> None:
    problems = problems_of([
        {"type": "OK", "id": "OK", "rules": [{"tag": ["Modality"], "value": "MR"}]},
        {"id": "NOTYPE", "rules": [{"tag": ["Modality"], "value": "MR"}]},
        {"type": "T", "id": "BAD", "rules": [
            {"tag": ["Modality"], "operator": "~", "value": "MR"},
            {"tag": ["0x0008"], "value": "("},
            {"rule": "MISSING"},
            {"tag": ["EchoTime"], "operator": "==", "value": "short"},
            {"tag": ["EchoTime"], "value": "x", "negate": "maybe"},
        ]},
        {"type": "T", "id": "OK", "rules": [{"rule": "OK"}]},
    ], strict=True)
    assert problems == [
        "rule 2 (id 'NOTYPE', no type): missing 'type'",
        "rule 3 (id 'BAD', type 'T'), entry 1: unknown operator \"~\" (known: regexp, contains,"
        " ==, !=, <, >, exist, notexist, approx)",
        "rule 3 (id 'BAD', type 'T'), entry 2: malformed tag [\"0x0008\"]: a one-part tag is a"
        " name like [\"EchoTime\"]",
        "rule 3 (id 'BAD', type 'T'), entry 2: invalid regular expression \"(\": missing ),"
        " unterminated subpattern at position 0",
        "rule 3 (id 'BAD', type 'T'), entry 3: unknown rule id 'MISSING'",
        "rule 3 (id 'BAD', type 'T'), entry 4: operator '==' needs a number or a tag as value,"
        " got \"short\"",
        "rule 3 (id 'BAD', type 'T'), entry 5: 'negate' must be \"yes\" or \"no\", got \"maybe\"",
        "rule 4 (id 'OK', type 'T'): duplicate id 'OK' (rule 1 has it)",
        "rule 4 (id 'OK', type 'T'), entry 1: a reference to id 'OK', which several rules"
        " share: rule 1 (type \"OK\") and rule 4 (type \"T\") (give them distinct ids)",
    ]


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"tag": ["EchoTime"]}, "missing 'value'"),
    ({"tag": ["EchoTime"], "operator": ">", "value": [1, 2]}, "needs a number or a tag"),
    ({"tag": ["EchoTime"], "operator": "approx", "value": ["a", "b", "c", "d", "e"]},
     "needs a number, a list of numbers or a tag"),
    ({"tag": ["EchoTime"], "operator": "approx", "value": 1, "approxLevel": -1}, "approxLevel"),
    ({"tag": ["EchoTime"], "operator": "approx", "value": 1, "approxLevel": "x"}, "approxLevel"),
    ({"tag": ["EchoTime"], "value": True}, "needs a text, a number or a tag"),
    ({"tag": ["EchoTime"], "value": {"a": 1}}, "needs a text, a number or a tag"),
    ({"tag": ["EchoTime"], "value": "x", "negate": True}, "'negate' must be"),
    ({"tag": ["EchoTime"], "value": "x", "operater": "=="}, "unknown key 'operater'"),
    ({"value": "x"}, "missing 'tag'"),
    ({"rule": "A", "notrule": "A"}, "either a reference"),
    ({"rule": "A", "tag": ["X"]}, "either a reference"),
    ({"rule": 3}, "must name a rule id"),
    ({"rule": "A", "value": 1}, "unknown key 'value' in a reference"),
    ("entry", "expected an object, got a string"),
])
def test_entry_problems(entry: Any, fragment: str) -> None:
    problems = problems_of([
        {"type": "T", "id": "A", "rules": [{"tag": ["X"], "operator": "exist"}]},
        {"type": "U", "rules": [entry]},
    ], strict=True)
    assert any(fragment in p and p.startswith("rule 2 (no id, type 'U'), entry 1: ")
               for p in problems), problems


@pytest.mark.parametrize(("rule", "fragment"), [
    ({"type": "T", "rules": [{"rule": "x"}], "check": "ImageLevel"}, "'check' must be"),
    ({"type": "T", "rules": [{"rule": "x"}], "kind": "x"}, "unknown key 'kind'"),
    ({"type": "T", "rules": [{"rule": "x"}], "id": 3}, "'id' must be a non-empty string"),
    ({"type": "T", "rules": [{"rule": "x"}], "description": 3}, "'description' must be"),
    ({"type": ["T"], "rules": [{"rule": "x"}]}, "'type' must be a non-empty string"),
    ({"type": "T", "rules": {"tag": ["X"]}}, "'rules' must be a non-empty array"),
])
def test_rule_problems(rule: dict[str, Any], fragment: str) -> None:
    problems = problems_of([
        {"type": "A", "id": "x", "rules": [{"tag": ["X"], "operator": "exist"}]},
        rule,
    ], strict=True)
    assert any(fragment in p for p in problems), problems


def test_duplicate_keys_are_reported() -> None:
    text = '[{"type": "T", "rules": [{"tag": ["X"], "value": "a", "value": "b"}]}]'
    assert "key 'value' is given more than once" in one_problem(text)
    text = '[{"type": "T", "type": "U", "rules": [{"tag": ["X"], "value": "a"}]}]'
    assert "key 'type' is given more than once" in one_problem(text)


def test_comment_keys_are_allowed() -> None:
    parse_rules(json.dumps([{"type": "T", "comment": "site note", "rules": [
        {"tag": ["X"], "operator": "exist", "comment": "why"},
        {"rule": "R", "comment": "why"}]}, {"type": "R", "id": "R", "rules": [
            {"tag": ["Y"], "operator": "exist"}]}]), "t")


def test_exist_needs_no_value_and_numbers_as_strings_are_fine() -> None:
    ruleset = parse_rules(json.dumps([{"type": "T", "rules": [
        {"tag": ["X"], "operator": "exist"},
        {"tag": ["Y"], "operator": "==", "value": "60"},
        {"tag": ["Z"], "operator": "approx", "value": "1", "approxLevel": 1}]}]), "t")
    assert ruleset.classify({"X": "", "Y": "60.0", "Z": "1.5"}, {}, [], []).types == ["T"]


def test_load_rules_from_file_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "classifyRules.json"
    path.write_text(FIONA_EXAMPLE, encoding="utf-8")
    assert load_rules(path).source == str(path)
    assert len(load_rules(str(path)).rules) == 6
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.json")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path)
    path.write_bytes(b"[\xff]")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(path)
    path.write_bytes(b"\xef\xbb\xbf" + FIONA_EXAMPLE.encode())  # a BOM is fine
    assert len(load_rules(path).rules) == 6


def test_load_rules_none_is_the_packaged_default() -> None:
    ruleset = load_rules(None)
    assert ruleset == default_rules()
    assert "default" in ruleset.source
    assert all(rule.description for rule in ruleset.rules)
    assert {"GE", "SIEMENS", "PHILIPS", "ORIGINAL", "DERIVED", "mosaic", "localizer", "T1w",
            "T2w", "FLAIR", "diffusion", "BOLD", "fieldmap", "SR"} <= {r.type for r in
                                                                       ruleset.rules}


def test_ruleset_pickles() -> None:
    ruleset = parse_rules(FIONA_EXAMPLE, "x")
    copy = pickle.loads(pickle.dumps(ruleset))
    assert isinstance(copy, RuleSet)
    assert copy == ruleset and copy.tag_keys() == ruleset.tag_keys()
    record = {"Manufacturer": "SIEMENS"}
    assert copy.classify(record, {}, [], []) == ruleset.classify(record, {}, [], [])


def test_resolved_expands_references_and_fills_defaults() -> None:
    resolved = parse_rules(FIONA_EXAMPLE, "x").resolved()
    json.dumps(resolved)  # JSON-able
    assert resolved[0] == {"type": "GE", "id": "GEBYMANUFACTURER",
                           "description": "This scan is from GE",
                           "rules": [{"tag": ["Manufacturer"], "operator": "regexp",
                                      "value": "^GE MEDICAL"}]}
    assert resolved[3]["rules"][0] == {"rule": "SIEMENSBYMANUFACTURER", "expanded": [
        {"tag": ["Manufacturer"], "operator": "regexp", "value": "^SIEMENS"}]}
    assert resolved[3]["rules"][3]["negate"] == "yes"
    assert resolved[2]["rules"][0]["tag"] == ["0x0008", "0x0008"]
    assert resolved[4]["check"] == "SeriesLevel"
    assert resolved[5]["rules"][0]["notrule"] == "GEBYMANUFACTURER"
    assert resolved[5]["rules"][1] == {"tag": ["0x0020", "0x0037", "4"], "operator": "approx",
                                       "value": ["0x0020", "0x0037", "1"], "approxLevel": 0.01}


def test_nested_references_resolve() -> None:
    ruleset = parse_rules(json.dumps([
        {"type": "C", "rules": [{"rule": "B"}]},
        {"type": "B", "id": "B", "rules": [{"rule": "A"}, {"tag": ["Y"], "operator": "exist"}]},
        {"type": "A", "id": "A", "rules": [{"tag": ["X"], "operator": "exist"}]},
    ]), "t")
    assert ruleset.resolved()[0]["rules"][0]["expanded"][0]["expanded"] == [
        {"tag": ["X"], "operator": "exist"}]
    assert ruleset.classify({"X": "1", "Y": "1"}, {}, [], []).types == ["C", "B", "A"]
    assert ruleset.classify({"X": "1"}, {}, [], []).types == ["A"]


def test_warnings_for_names_no_dataset_or_record_holds() -> None:
    ruleset = parse_rules(json.dumps([{"type": "T", "id": "A", "rules": [
        {"tag": ["Manufaturer"], "value": "x"},
        {"tag": ["OSLevel"], "value": "VE11"},
        {"tag": ["EchoTime"], "operator": ">", "value": ["RepetitionTme"]}]}]), "t")
    assert ruleset.warnings == (
        "rule 1 (id 'A', type 'T'), entry 1: [\"Manufaturer\"] is neither a DICOM keyword nor"
        " a series record key; it is always absent",
        "rule 1 (id 'A', type 'T'), entry 3: [\"RepetitionTme\"] is neither a DICOM keyword nor"
        " a series record key; it is always absent",
    )
    assert default_rules().warnings == ()


def test_fiona_documented_spelling_exists_is_the_exist_operator() -> None:
    rules = parse_rules(
        '[{"type": "X", "rules": [{"tag": ["EchoTime"], "operator": "exists"}]},'
        ' {"type": "Y", "rules": [{"tag": ["EchoTime"], "operator": "notexists"}]}]', "t")
    assert [r["rules"][0]["operator"] for r in rules.resolved()] == ["exist", "notexist"]
    assert rules.classify({"EchoTime": "2"}, {}, [], set()).types == ["X"]
    assert rules.classify({}, {}, [], set()).types == ["Y"]
