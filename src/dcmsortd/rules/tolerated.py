"""What real sites' rules files hold that the loader tolerates, with a warning each.

The original loaded them and they change no rule's meaning: several rules sharing an id
(an id only matters to a ``rule``/``notrule`` reference, and a reference to a shared id
is an error, see ``rules.load``), and keys the loader does not know (a comment field, a
fork's key: one warning per key and file, naming where it is; the rest of the rule
applies). ``strict_problems`` words both as errors, for ``dcmsortd test --strict``.
"""

from __future__ import annotations

from typing import Any, Final

from dcmsortd.rules.entry import show, unknown_keys

RULE_KEYS: Final = frozenset({"type", "id", "description", "check", "rules", "comment"})
SHOWN_PLACES: Final = 3  # a warning about an unknown key names this many places
# where an unknown key is: rule index, entry index (None: the rule itself), what takes what
Place = tuple[int, int | None, str]


def where(index: int, raw: Any) -> str:
    """How a message names a rule: ``rule 4 (id 'X', type 'T')``."""
    rule_id = raw.get("id") if isinstance(raw, dict) else None
    rule_type = raw.get("type") if isinstance(raw, dict) else None
    id_text = f"id {rule_id!r}" if isinstance(rule_id, str) else "no id"
    type_text = f"type {rule_type!r}" if isinstance(rule_type, str) else "no type"
    return f"rule {index + 1} ({id_text}, {type_text})"


def ids(data: list[Any]) -> dict[str, list[int]]:
    """Each id, with the rules (indexes) that give it."""
    by_id: dict[str, list[int]] = {}
    for index, raw in enumerate(data):
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rule_id, str) and rule_id:
            by_id.setdefault(rule_id, []).append(index)
    return by_id


def unknown_keys_of(data: list[Any]) -> dict[str, list[Place]]:
    """Each key the loader does not know, with where it is, in file order."""
    found: dict[str, list[Place]] = {}
    allowed = f"(a rule takes {', '.join(sorted(RULE_KEYS))})"
    for index, raw in enumerate(data):
        if not isinstance(raw, dict):
            continue
        for key in raw:
            if key not in RULE_KEYS:
                found.setdefault(key, []).append((index, None, allowed))
        items = raw.get("rules")
        for position, item in enumerate(items if isinstance(items, list) else ()):
            for key, takes in unknown_keys(item):
                found.setdefault(key, []).append((index, position, takes))
    return found


def strict_problems(by_id: dict[str, list[int]],
                    unknown: dict[str, list[Place]]) -> list[tuple[int, int | None, str]]:
    """What ``--strict`` refuses: (rule index, entry index or None, problem)."""
    found: list[tuple[int, int | None, str]] = []
    for rule_id, indexes in by_id.items():
        for index in indexes[1:]:
            found.append((index, None, f"duplicate id {rule_id!r} (rule {indexes[0] + 1} has it)"))
    for key, places in unknown.items():
        for index, entry, takes in places:
            found.append((index, entry, f"unknown key {key!r} {takes}"))
    return found


def rules_named(data: list[Any], found: list[int]) -> str:
    """``rule 3 (type 'A'), rule 5 (type 'B') and rule 9 (type 'C')``."""
    names = [f"rule {i + 1} (type {show(data[i].get('type'))})" for i in found]
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def shared_id_warnings(data: list[Any], by_id: dict[str, list[int]]) -> tuple[str, ...]:
    return tuple(
        f"id {rule_id!r} is shared by {rules_named(data, found)}: each applies on its own"
        " (a 'rule'/'notrule' reference to this id would be an error)"
        for rule_id, found in by_id.items() if len(found) > 1
    )


def unknown_key_warnings(data: list[Any], unknown: dict[str, list[Place]]) -> tuple[str, ...]:
    warnings = []
    for key, places in unknown.items():
        shown = [where(index, data[index]) + ("" if entry is None else f", entry {entry + 1}")
                 for index, entry, _ in places[:SHOWN_PLACES]]
        more = len(places) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more else "")
        warnings.append(f"unknown key {key!r} ignored (the rest of each rule applies): {text}")
    return tuple(warnings)
