"""Check and compile one entry of a rule: a test on a tag, or a reference to another rule.

``check_entry`` returns a compiled ``TagTest`` or a ``PendingRef`` (resolved by id later),
or raises ``EntryError`` listing every problem of that entry. Keys it does not know are
ignored there; ``unknown_keys`` lists them, for the loader to warn about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from dcmsortd.model.instance import TagKey
from dcmsortd.rules.ops import DEFAULT_APPROX_LEVEL, NUMERIC_OPERATORS, OPERATORS, Expected, TagTest
from dcmsortd.rules.ops import as_number as _number

# Spellings FIONA's own documentation used ("The operator "exists" can be used to test if a
# tag exists"); accepted so such rules files load, and mean what they say.
ALIASES: Final = {"exists": "exist", "notexists": "notexist"}
TEST_KEYS: Final = frozenset({"tag", "value", "operator", "negate", "approxLevel", "comment"})
REF_KEYS: Final = frozenset({"rule", "notrule", "negate", "comment"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TAG_FORMS = 'a name ["EchoTime"], or 2, 3, 4 or 6 numbers ["0x0008", "0x0070"]'
T = TypeVar("T")


class EntryError(Exception):
    """The problems of one entry (``problems``: one message each)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Invalid(Exception):
    """One problem, collected into an EntryError."""


@dataclass(frozen=True)
class PendingRef:
    """A ``rule``/``notrule`` entry whose id is not resolved yet."""

    index: int
    target_id: str
    negate: bool


def kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    for python_type, name in names.items():
        if isinstance(value, python_type):
            return name
    return "null" if value is None else "a number"


def show(value: Any) -> str:
    """A JSON value as written, shortened for messages."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def duplicates(raw: dict[str, Any]) -> tuple[str, ...]:
    """Keys that the JSON object gave more than once (see ``rules.load``)."""
    found = getattr(raw, "duplicates", ())
    return tuple(found)


def check_entry(position: int, raw: Any) -> TagTest | PendingRef:
    """Compile one entry; raise EntryError with all its problems."""
    if not isinstance(raw, dict):
        raise EntryError([f"expected an object, got {kind(raw)}"])
    problems = [f"key {key!r} is given more than once" for key in duplicates(raw)]
    refs = [k for k in ("rule", "notrule") if k in raw]
    entry: TagTest | PendingRef | None
    if refs:
        entry = _collect(problems, lambda: _check_ref(position, raw, refs))
    else:
        entry = _collect(problems, lambda: _check_test(position, raw))
    if problems or entry is None:
        raise EntryError(problems)
    return entry


def unknown_keys(raw: Any) -> list[tuple[str, str]]:
    """The keys of an entry that the loader ignores, each with what such an entry takes
    (``"(a test takes ...)"``, ``"in a reference (it takes ...)"``).

    Not errors: rules files of real sites carry comment fields and keys of forks; the
    loader warns about them (``dcmsortd test --strict`` refuses them).
    """
    if not isinstance(raw, dict):
        return []
    refs = [k for k in ("rule", "notrule") if k in raw]
    if refs:
        return [(k, f"in a reference (it takes '{refs[0]}', 'negate', 'comment')")
                for k in raw if k not in REF_KEYS and k != "tag"]  # "tag": an error
    takes = (f"(a test takes {', '.join(sorted(TEST_KEYS))};"
             " a reference takes 'rule' or 'notrule')")
    return [(k, takes) for k in raw if k not in TEST_KEYS]


def _collect(problems: list[str], check: Callable[[], T]) -> T | None:
    try:
        return check()
    except EntryError as exc:
        problems.extend(exc.problems)
    except _Invalid as exc:
        problems.append(str(exc))
    return None


def _check_ref(position: int, raw: dict[str, Any], refs: list[str]) -> PendingRef:
    if len(refs) > 1 or "tag" in raw:
        raise _Invalid("an entry is either a reference ('rule' or 'notrule') or a test ('tag')")
    target = raw[refs[0]]
    if not isinstance(target, str) or not target:
        raise _Invalid(f"'{refs[0]}' must name a rule id, got {show(target)}")
    return PendingRef(position, target, (refs[0] == "notrule") != _negate(raw))


def _check_test(position: int, raw: dict[str, Any]) -> TagTest:
    problems: list[str] = []
    tag = None
    if "tag" not in raw:
        problems.append("missing 'tag' (or 'rule'/'notrule' for a reference)")
    else:
        tag = _collect(problems, lambda: parse_tag(raw["tag"]))
    operator = raw.get("operator", "regexp")
    operator = ALIASES.get(operator, operator) if isinstance(operator, str) else operator
    if operator not in OPERATORS:
        problems.append(f"unknown operator {show(operator)} (known: {', '.join(OPERATORS)})")
    negate = _collect(problems, lambda: _negate(raw))
    level = _collect(problems, lambda: _approx_level(raw.get("approxLevel",
                                                              DEFAULT_APPROX_LEVEL)))
    value = raw.get("value")
    value_tag = _value_tag(value)
    expected = None
    if operator in OPERATORS:
        expected = _collect(problems, lambda: _literal(operator, value, value_tag, "value" in raw))
    if problems or tag is None or negate is None or level is None:
        raise EntryError(problems)
    return TagTest(position, tag, operator, negate, value, expected, value_tag, level)


def _negate(raw: dict[str, Any]) -> bool:
    negate = raw.get("negate", "no")
    if negate not in ("yes", "no"):
        raise _Invalid(f"'negate' must be \"yes\" or \"no\", got {show(negate)}")
    return bool(negate == "yes")


def _approx_level(raw: Any) -> float:
    level = None if isinstance(raw, bool) else _number(raw)
    if level is None or level < 0:
        raise _Invalid(f"'approxLevel' must be a number >= 0, got {show(raw)}")
    return level


def parse_tag(raw: Any) -> TagKey:
    """The canonical key of a tag as written: a name, or a tuple of numbers."""
    if not isinstance(raw, list) or not raw:
        raise _Invalid(f"malformed tag {show(raw)}: expected {_TAG_FORMS}")
    if len(raw) == 1:
        if isinstance(raw[0], str) and _NAME.fullmatch(raw[0]):
            return raw[0]
        raise _Invalid(f'malformed tag {show(raw)}: a one-part tag is a name like ["EchoTime"]')
    if len(raw) not in (2, 3, 4, 6):
        raise _Invalid(f"malformed tag {show(raw)}: {len(raw)} parts; expected {_TAG_FORMS}")
    numbers = []
    for position, part in enumerate(raw):
        number = _tag_number(part)
        is_index = len(raw) == 3 and position == 2
        if number is None or number < 0 or (not is_index and number > 0xFFFF):
            what = "an item index >= 0" if is_index else "a group or element 0..0xFFFF"
            raise _Invalid(f"malformed tag {show(raw)}: {show(part)} is not {what}"
                           ' (write hex like "0x0008" or decimal)')
        numbers.append(number)
    return tuple(numbers)


def _tag_number(part: Any) -> int | None:
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    if isinstance(part, str):
        try:
            return int(part, 0)
        except ValueError:
            return None
    return None


def _value_tag(value: Any) -> TagKey | None:
    """A value written as a list of strings that is a well-formed tag reads that tag."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return None
    try:
        return parse_tag(value)
    except _Invalid:
        return None


def _literal(operator: str, value: Any, value_tag: TagKey | None, given: bool) -> Expected | None:
    """The literal an entry compares with (None: none usable, e.g. a tag-valued regexp)."""
    if operator in ("exist", "notexist"):
        return None
    if not given:
        raise _Invalid(f"missing 'value' (operator {operator!r} compares with one)")
    if operator == "approx" and isinstance(value, list):
        return _list_literal(value, value_tag)
    if value_tag is not None:
        return None  # a tag only: when it is absent the entry fails
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if operator in NUMERIC_OPERATORS:
        if isinstance(value, bool) or _number(value) is None:
            raise _Invalid(f"operator {operator!r} needs a number or a tag as value,"
                           f" got {show(value)}")
        return Expected.of(value)
    if not (isinstance(value, str) or is_number):
        raise _Invalid(f"operator {operator!r} needs a text, a number or a tag as value,"
                       f" got {show(value)}")
    if operator == "contains":
        return Expected.of(value)
    return Expected.of(value, _compile(str(value)))


def _list_literal(value: list[Any], value_tag: TagKey | None) -> Expected | None:
    numbers = [None if isinstance(v, bool) else _number(v) for v in value]
    if value and None not in numbers:
        return Expected.of(numbers)
    if value_tag is not None:
        return None
    raise _Invalid("operator 'approx' needs a number, a list of numbers or a tag as value,"
                   f" got {show(value)}")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise _Invalid(f"invalid regular expression {show(pattern)}: {exc}") from None
