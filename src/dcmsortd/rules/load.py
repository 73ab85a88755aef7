"""Read classifyRules.json text into compiled rules, reporting every problem at once.

Each rule and each entry is checked on its own (``rules.entry``); then references are
resolved by id and searched for cycles. Any problem makes the whole file invalid:
``RulesError`` lists them all, each naming the rule (counted from 1), its id and type, and
the entry (counted from 1).

Two things real sites' files hold are tolerated, with a warning each (``Loaded.warnings``):
ids several rules share and keys the loader does not know (see ``rules.tolerated``); a
reference to a shared id is an error. With ``strict``, both are errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import keyword_dict

from dcmsortd.model.errors import RulesError
from dcmsortd.rules.entry import EntryError, PendingRef, check_entry, duplicates, kind, show
from dcmsortd.rules.ops import Entry, RuleRef, TagTest
from dcmsortd.rules.refs import find_cycles, reads_types
from dcmsortd.rules.tolerated import (
    ids,
    rules_named,
    shared_id_warnings,
    strict_problems,
    unknown_key_warnings,
    unknown_keys_of,
    where,
)

# Series-record keys (the contract) that are not DICOM keywords; ["Name"] may read them too.
RECORD_NAMES: Final = frozenset({
    "ClassifyType", "IncomingConnection", "SoftwareVersion", "SliceSpacing", "Slices",
    "SequenceType", "ActiveCoils", "AcquisitionLength", "Private0019_105a", "Private0019_10BB",
    "Private0019_10B3", "Private0019_109C", "Private0020_0105", "Private0021_104F",
    "Private0043_1039", "PhaseEncodingSteps", "Private0021_1106", "OSLevel", "siemensUUID",
    "NumSlices", "MeasID", "PhaseEncodingDirectionPositive", "siemensDiffusionInformation",
    "NumFiles",
})


class _Object(dict[str, Any]):
    """A JSON object that remembers keys given more than once (JSON keeps the last)."""

    duplicates: tuple[str, ...] = ()


def _object_hook(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for key, _ in pairs:
            if key in seen:
                repeated[key] = None
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


@dataclass(frozen=True)
class CompiledRule:
    """One rule, checked and compiled; ``index`` is its position in the file (from 0)."""

    index: int
    type: str
    id: str | None
    description: str | None
    series_level: bool
    entries: tuple[Entry, ...]
    reads_types: bool  # it, or a rule it references, tests ["ClassifyType"]


class _Problems:
    """Problems found so far, listed in the end by rule and entry position."""

    def __init__(self) -> None:
        self._found: list[tuple[int, int, str]] = []

    def add(self, index: int, raw: Any, text: str, entry: int | None = None) -> None:
        place = where(index, raw) if entry is None else f"{where(index, raw)}, entry {entry + 1}"
        self._found.append((index, -1 if entry is None else entry, f"{place}: {text}"))

    def lines(self) -> list[str]:
        return [text for _, _, text in sorted(self._found, key=lambda found: found[:2])]


@dataclass(frozen=True)
class _Draft:
    index: int
    raw: dict[str, Any]
    entries: list[TagTest | PendingRef]  # the valid ones


@dataclass(frozen=True)
class Loaded:
    """A rules file's compiled rules, and what was tolerated in it (one line each)."""

    rules: tuple[CompiledRule, ...]
    warnings: tuple[str, ...]


def compile_rules(text: str, source: str, strict: bool = False) -> Loaded:
    """Parse, check and compile a rules file's text; raise RulesError listing every problem.

    ``strict``: shared ids and unknown keys are problems too, not warnings.
    """
    try:
        data = json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise RulesError(source, [problem]) from None
    except (ValueError, RecursionError) as exc:  # e.g. a number too long, nesting too deep
        raise RulesError(source, [f"invalid JSON: {exc}"]) from None
    if not isinstance(data, list):
        raise RulesError(source, [f"expected a JSON array of rules, got {kind(data)}"])
    problems = _Problems()
    drafts = [_check_rule(index, item, problems) for index, item in enumerate(data)]
    by_id = ids(data)
    unknown = unknown_keys_of(data)
    if strict:
        for index, entry, text in strict_problems(by_id, unknown):
            problems.add(index, data[index], text, entry)
    edges = _references(drafts, data, by_id, problems)
    for cycle in find_cycles(edges):
        names = " -> ".join(repr(data[i]["id"]) for i in (*cycle, cycle[0]))
        problems.add(cycle[0], data[cycle[0]], f"reference cycle {names}")
    if problems.lines():
        raise RulesError(source, problems.lines())
    unique = {rule_id: found[0] for rule_id, found in by_id.items() if len(found) == 1}
    rules = _build([d for d in drafts if d is not None], unique, edges)
    return Loaded(rules, shared_id_warnings(data, by_id) + unknown_key_warnings(data, unknown))


def _check_rule(index: int, raw: Any, problems: _Problems) -> _Draft | None:
    if not isinstance(raw, dict):
        problems.add(index, raw, f"expected an object, got {kind(raw)}")
        return None
    found = _rule_problems(raw)
    entries: list[TagTest | PendingRef] = []
    items = raw.get("rules")
    if "rules" not in raw:
        found.append("missing 'rules'")
    elif not isinstance(items, list) or not items:
        found.append(f"'rules' must be a non-empty array of entries, got {show(items)}")
    for problem in found:
        problems.add(index, raw, problem)
    for position, item in enumerate(items if isinstance(items, list) else ()):
        try:
            entries.append(check_entry(position, item))
        except EntryError as exc:
            for problem in exc.problems:
                problems.add(index, raw, problem, position)
    return _Draft(index, raw, entries)


def _rule_problems(raw: dict[str, Any]) -> list[str]:
    found = [f"key {key!r} is given more than once" for key in duplicates(raw)]
    rule_type, rule_id = raw.get("type"), raw.get("id")
    if "type" not in raw:
        found.append("missing 'type'")
    elif not isinstance(rule_type, str) or not rule_type.strip():
        found.append(f"'type' must be a non-empty string, got {show(rule_type)}")
    if "id" in raw and (not isinstance(rule_id, str) or not rule_id):
        found.append(f"'id' must be a non-empty string, got {show(rule_id)}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        found.append(f"'description' must be a string, got {show(description)}")
    check = raw.get("check")
    if check is not None and check != "SeriesLevel":
        found.append(f"'check' must be \"SeriesLevel\" when given, got {show(check)}")
    return found


def _references(
    drafts: list[_Draft | None], data: list[Any], by_id: dict[str, list[int]],
    problems: _Problems,
) -> dict[int, list[int]]:
    """The reference graph; a reference to an unknown or a shared id is a problem."""
    edges: dict[int, list[int]] = {}
    for draft in drafts:
        if draft is None:
            continue
        for entry in draft.entries:
            if not isinstance(entry, PendingRef):
                continue
            found = by_id.get(entry.target_id, [])
            if len(found) == 1:
                edges.setdefault(draft.index, []).append(found[0])
                continue
            if found:
                text = (f"a reference to id {entry.target_id!r}, which several rules share:"
                        f" {rules_named(data, found)} (give them distinct ids)")
            else:
                text = f"unknown rule id {entry.target_id!r}"
            problems.add(draft.index, draft.raw, text, entry.index)
    return edges


def _build(
    drafts: list[_Draft], by_id: dict[str, int], edges: dict[int, list[int]]
) -> tuple[CompiledRule, ...]:
    direct = [
        draft.index for draft in drafts
        if any(isinstance(e, TagTest) and "ClassifyType" in (e.tag, e.value_tag)
               for e in draft.entries)
    ]
    reading = reads_types(direct, edges)
    rules = []
    for draft in drafts:
        entries = tuple(
            RuleRef(e.index, by_id[e.target_id], e.target_id, e.negate)
            if isinstance(e, PendingRef) else e
            for e in draft.entries
        )
        raw = draft.raw
        rules.append(CompiledRule(draft.index, raw["type"], raw.get("id"), raw.get("description"),
                                  raw.get("check") == "SeriesLevel", entries,
                                  draft.index in reading))
    return tuple(rules)


def unknown_names(rules: tuple[CompiledRule, ...]) -> tuple[str, ...]:
    """Warnings for ``["Name"]`` tags that are neither DICOM keywords nor record keys.

    Such a tag is always absent (a typo, most likely), so its entry always fails.
    """
    found = []
    for rule in rules:
        for entry in rule.entries:
            if not isinstance(entry, TagTest):
                continue
            for key in (entry.tag, entry.value_tag):
                if isinstance(key, str) and key not in keyword_dict and key not in RECORD_NAMES:
                    raw = {"id": rule.id, "type": rule.type}
                    found.append(f"{where(rule.index, raw)}, entry {entry.index + 1}: [\"{key}\"]"
                                 " is neither a DICOM keyword nor a series record key;"
                                 " it is always absent")
    return tuple(found)
