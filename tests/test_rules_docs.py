"""docs/rules.md stays true: its JSON examples load and its worked examples come out as told."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dcmsortd.model.errors import RulesError
from dcmsortd.rules.engine import RuleSet, default_rules, parse_rules

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def examples() -> list[str]:
    return re.findall(r"```json\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def example(fragment: str) -> RuleSet:
    (text,) = [block for block in examples() if fragment in block]
    return parse_rules(text, "docs/rules.md")


def test_every_json_example_is_a_valid_rules_file() -> None:
    assert len(examples()) >= 4
    for text in examples():
        parse_rules(text, "docs/rules.md")


def test_fiona_example() -> None:
    ruleset = example("ABCD-T1")
    record: dict[str, Any] = {"Manufacturer": "SIEMENS", "SequenceName": "*tfl3d1_16ns",
                              "SliceThickness": "1",
                              "ImageType": "['ORIGINAL', 'PRIMARY', 'M', 'ND', 'NORM']"}
    values: dict[Any, Any] = {(8, 8): ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]}
    first = ruleset.classify(record, values, [], [])
    assert first.types == ["SIEMENS", "ABCD-T1"]
    derived = {**record, "ImageType": "['DERIVED', 'SECONDARY', 'MPR']"}
    assert ruleset.classify(derived, {}, first.types, first.vetoed).types == first.types
    thick = {**record, "SliceThickness": "1.6"}
    summary = ruleset.explain(thick, values, [], [])[3].summary()
    assert summary in GUIDE.read_text(encoding="utf-8")


def test_two_elements_example() -> None:
    ruleset = example('"axial"')
    values: dict[Any, Any] = {(0x20, 0x37, 4): "1", (0x20, 0x37, 0): "0.998"}
    assert ruleset.classify({"RepetitionTime": "2000", "EchoTime": "30"}, values, [],
                            []).types == ["axial"]
    assert ruleset.classify({"RepetitionTime": "2000"}, values, [], []).types == []


def test_series_level_table() -> None:
    ruleset = example("ABCD-Diffusion-FM")
    types: list[str] = []
    vetoed: frozenset[str] = frozenset()
    rows = []
    for value in (60, 60, 59, 60):
        result = ruleset.classify({"Manufacturer": "SIEMENS"}, {(0x19, 0x100A): value}, types,
                                  vetoed)
        types, vetoed = result.types, result.vetoed
        rows.append((types, sorted(vetoed)))
    fm = "ABCD-Diffusion-FM"
    assert rows == [(["SIEMENS", fm], []), (["SIEMENS", fm], []), (["SIEMENS"], [fm]),
                    (["SIEMENS"], [fm])]


def test_notrule_example() -> None:
    ruleset = example('"LOCALIZER"')
    assert ruleset.classify({"SeriesDescription": "T1_scout"}, {}, [], []).types == [
        "localizer"]
    assert ruleset.classify({"SeriesDescription": "T1_mprage"}, {}, [], []).types == ["T1w"]


def test_validation_message_shapes() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    bad = [
        {"type": "A", "id": "A", "rules": [{"rule": "B"}]},
        {"type": "B", "id": "B", "rules": [{"rule": "A"}]},
        {"type": "localizer", "rules": [{"notrule": "GEBYMANUFACTUER"}]},
        {"type": "ABCD-T1", "id": "ABCD-T1", "rules": [
            {"tag": ["X"], "operator": "exist"}, {"tag": ["X"], "operator": "exist"},
            {"tag": ["SliceThickness"], "operator": "aprox", "value": 1}]},
    ]
    with pytest.raises(RulesError) as caught:
        parse_rules(json.dumps(bad), "classifyRules.json")
    for problem in caught.value.problems:
        shape = re.sub(r"^rule \d+", "rule N", problem)
        assert any(re.sub(r"rule \d+", "rule N", line.strip(" -")) == shape
                   for line in guide.splitlines()), problem


def test_default_rules_table_names_every_packaged_type() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide[guide.index("## The packaged default rules"):]
    for kind in {rule.type for rule in default_rules().rules}:
        assert f"`{kind}`" in table, kind


def test_every_packaged_rule_is_documented_with_its_type() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide[guide.index("| id | type | holds when |"):]
    documented = re.findall(r"^\| `([A-Z0-9-]+)` \| `([^`]+)` \| \S", table, re.M)
    assert documented == [(rule.id, rule.type) for rule in default_rules().rules]
