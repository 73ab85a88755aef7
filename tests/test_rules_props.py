"""Property tests: negation flips, classification is a fixed point, the loader never crashes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcmsortd.model.errors import RulesError
from dcmsortd.rules.engine import RuleSet, parse_rules
from dcmsortd.rules.ops import OPERATORS

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["EchoTime", "ImageType", "SeriesDescription", "AcquisitionMatrix"]
TUPLE_TAGS = [["0x0019", "0x100A"], ["0x0020", "0x0037", "1"], ["0x0008", "0x0008"]]
TYPES = ["A", "B", "C", "D"]

words = st.sampled_from(["", "A", "B", "DERIVED", "ORIGINAL", "MOSAIC", "T1", "x", "1", "60"])
numbers = st.one_of(st.integers(-5, 300), st.floats(-5, 300, allow_nan=False))
numeric_text = numbers.map(str)
list_text = st.lists(st.one_of(words, numeric_text), max_size=4).map(str)
plain = st.one_of(words, numbers, numeric_text, list_text,
                  st.lists(st.one_of(words, numbers), max_size=4))


@st.composite
def entries_of(draw: st.DrawFn, tags: list[list[str]]) -> dict[str, Any]:
    operator = draw(st.sampled_from(OPERATORS))
    entry: dict[str, Any] = {"tag": draw(st.sampled_from(tags)), "operator": operator}
    if operator in ("regexp", "contains"):
        entry["value"] = draw(st.one_of(words, st.integers(0, 100)))
    elif operator == "approx":
        entry["value"] = draw(st.one_of(numbers, st.lists(numbers, min_size=1, max_size=4)))
        entry["approxLevel"] = draw(st.sampled_from([0, 0.5, "1", 10]))
    elif operator != "exist" and operator != "notexist":
        entry["value"] = draw(st.one_of(numbers, numeric_text, st.sampled_from(TUPLE_TAGS)))
    if draw(st.booleans()):
        entry["negate"] = draw(st.sampled_from(["yes", "no"]))
    return entry


records = st.dictionaries(st.sampled_from(NAMES), plain, max_size=4)
values = st.dictionaries(st.sampled_from([(0x19, 0x100A), (0x20, 0x37, 1), (8, 8), "EchoTime"]),
                         plain, max_size=4)


@FAST
@given(entries_of([[n] for n in NAMES] + TUPLE_TAGS), records, values)
def test_negate_always_flips_an_entry(entry: dict[str, Any], record: dict[str, Any],
                                      image: dict[Any, Any]) -> None:
    plain_entry = {**entry, "negate": "no"}
    negated = {**entry, "negate": "yes"}
    results = [
        "X" in parse_rules(json.dumps([{"type": "X", "rules": [e]}]), "t")
        .classify(record, image, [], []).types
        for e in (plain_entry, negated)
    ]
    assert results[0] != results[1]


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    tags = [[n] for n in NAMES] + TUPLE_TAGS
    count = draw(st.integers(1, 6))
    items = []
    for index in range(count):
        entries: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 3))):
            choice = draw(st.integers(0, 3))
            if choice == 0 and index > 0:
                key = draw(st.sampled_from(["rule", "notrule"]))
                entries.append({key: f"R{draw(st.integers(0, index - 1))}"})
            elif choice == 1:
                entries.append({"tag": ["ClassifyType"], "operator": "contains",
                                "value": draw(st.sampled_from(TYPES)),
                                "negate": draw(st.sampled_from(["yes", "no"]))})
            else:
                entries.append(draw(entries_of(tags)))
        rule: dict[str, Any] = {"type": draw(st.sampled_from(TYPES)), "id": f"R{index}",
                                "rules": entries}
        if draw(st.booleans()):
            rule["check"] = "SeriesLevel"
        items.append(rule)
    return parse_rules(json.dumps(items), "generated")


@FAST
@given(rule_sets(), records, values, st.lists(st.sampled_from(TYPES), max_size=3),
       st.sets(st.sampled_from(TYPES), max_size=2))
def test_classify_is_idempotent(ruleset: RuleSet, record: dict[str, Any],
                                image: dict[Any, Any], current: list[str],
                                vetoed: set[str]) -> None:
    first = ruleset.classify(record, image, current, vetoed)
    assert len(first.types) == len(set(first.types))
    assert not set(first.types) & first.vetoed
    assert vetoed <= first.vetoed
    again = ruleset.classify(record, image, first.types, first.vetoed)
    assert again == first
    reports = ruleset.explain(record, image, current, vetoed)
    for report in reports:  # explain agrees with classify
        if report.held and not report.vetoed:
            assert report.type in first.types
        if not report.held and report.series_level:
            assert report.type in first.vetoed


@FAST
@given(rule_sets(), st.lists(st.tuples(records, values, st.lists(st.sampled_from(TYPES),
                                                                  max_size=3)),
                             min_size=2, max_size=8))
def test_remembered_outcomes_equal_fresh_ones(ruleset: RuleSet,
                                              images: list[tuple[Any, Any, list[str]]]) -> None:
    """classify remembers outcomes by what they depend on: a series of images, some alike,
    some differing only in a value's type (1, 1.0, "1"), classifies as a fresh rule set
    (nothing remembered) classifies each one."""
    for record, image, current in images + images:
        expected = RuleSet(ruleset.source, ruleset.rules)._classify(record, image, current, [])
        assert ruleset.classify(record, image, current, []) == expected


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["yes", "no", "SeriesLevel", "regexp", "approx", "exist", "(",
                               "0x0008", "R0", "ClassifyType"])),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["type", "id", "rules", "tag", "value", "operator",
                                         "negate", "approxLevel", "rule", "notrule", "check",
                                         "description", "x"]), children, max_size=5),
    ),
    max_leaves=25,
)


def _loads_or_rules_error(text: str) -> RuleSet | None:
    try:
        return parse_rules(text, "fuzz")
    except RulesError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return None


@FAST
@given(json_values, records, values)
def test_rule_like_json_never_crashes_the_loader(data: Any, record: dict[str, Any],
                                                image: dict[Any, Any]) -> None:
    ruleset = _loads_or_rules_error(json.dumps(data))
    if ruleset is not None:
        ruleset.classify(record, image, [], [])
        ruleset.explain(record, image, [], [])
        json.dumps(ruleset.resolved())


@FAST
@given(st.text(max_size=60))
def test_random_text_never_crashes_the_loader(text: str) -> None:
    _loads_or_rules_error(text)


@FAST
@given(st.text(alphabet='[]{}",:0123456789.-eE tnrufalsyxgp\\', max_size=60))
def test_json_like_text_never_crashes_the_loader(text: str) -> None:
    _loads_or_rules_error(text)


def test_remembered_outcomes_tell_value_types_apart() -> None:
    ruleset = parse_rules(json.dumps([{"type": "ONE", "rules": [
        {"tag": ["EchoTime"], "operator": "regexp", "value": "^1$"}]}]), "t")
    outcomes = [ruleset.classify({"EchoTime": value}, {}, [], []).types
                for value in (1.0, 1, "1", True, 1.0)]
    assert outcomes == [[], ["ONE"], ["ONE"], [], []]
