"""The closed set of rule operators, and the views of a value they work on.

A value reaches an operator as the series record holds it (text such as ``"2.46"`` or
``"[0, 256, 256, 0]"``), as ``tagvalues`` snapshots it (str, int, float or a list of those),
or as the live list of types (``ClassifyType``). Three views cover every operator: its text
(what ``regexp`` searches), its number (what ``==``, ``!=``, ``<``, ``>``, ``approx`` compare)
and its items (what ``contains`` and list ``approx`` walk; list-shaped text is parsed, never
evaluated).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from dcmsortd.model.instance import TagKey

OPERATORS: Final = ("regexp", "contains", "==", "!=", "<", ">", "exist", "notexist", "approx")
NUMERIC_OPERATORS: Final = frozenset({"==", "!=", "<", ">", "approx"})
DEFAULT_APPROX_LEVEL: Final = 1e-4


class _Missing:
    """The marker of an absent tag (a class of its own so that ``is`` tests are exact)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_LIST_ITEM = re.compile(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,'"\[\]]*?)\s*(,|$)""")
_ESCAPE = re.compile(r"\\(.)")


def as_number(value: Any) -> float | None:
    """The finite number a value stands for, or None (text must be a plain decimal number)."""
    if isinstance(value, str):
        if _NUMBER.fullmatch(value) is None:
            return None
        number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_text(value: Any) -> str:
    """The text a regexp searches: strings as they are, lists as Python renders a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


@lru_cache(maxsize=1024)
def parse_list_text(text: str) -> tuple[str, ...] | None:
    """Split list-shaped text like ``"['ORIGINAL', 'PRIMARY']"`` or ``"[0, 256]"`` into items.

    Returns None when the text is not one flat list. Quoted items lose their quotes.
    """
    if len(text) < 2 or text[0] != "[" or text[-1] != "]":
        return None
    inner = text[1:-1]
    if not inner.strip():
        return ()
    items: list[str] = []
    pos = 0
    while pos <= len(inner):
        match = _LIST_ITEM.match(inner, pos)
        if match is None:
            return None
        token = match.group(1)
        if token[:1] in ("'", '"'):
            token = _ESCAPE.sub(r"\1", token[1:-1])
        items.append(token)
        if not match.group(2):
            break
        pos = match.end()
    return tuple(items)


def as_items(value: Any) -> tuple[Any, ...] | None:
    """The items of a list value or of list-shaped text; None for anything else."""
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, str) and value.startswith("["):
        return parse_list_text(value)
    return None


@dataclass(frozen=True)
class Expected:
    """What an entry compares against, with its views computed once."""

    text: str
    number: float | None
    items: tuple[float | None, ...] | None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def of(cls, value: Any, pattern: re.Pattern[str] | None = None) -> Expected:
        items = as_items(value)
        numbers = None if items is None else tuple(as_number(item) for item in items)
        return cls(as_text(value), as_number(value), numbers, pattern)


def _regexp(found: Any, expected: Expected, level: float) -> bool:
    if expected.pattern is not None:
        return expected.pattern.search(as_text(found)) is not None
    return expected.text in as_text(found)  # a tag-valued regexp searches the text literally


def _contains(found: Any, expected: Expected, level: float) -> bool:
    items = as_items(found)
    if items is None:
        return expected.text in as_text(found)
    for item in items:
        if as_text(item) == expected.text:
            return True
        if expected.number is not None and as_number(item) == expected.number:
            return True
    return False


def _equal(found: Any, expected: Expected, level: float) -> bool:
    number = as_number(found)
    return number is not None and expected.number is not None and number == expected.number


def _unequal(found: Any, expected: Expected, level: float) -> bool:
    number = as_number(found)
    return number is not None and expected.number is not None and number != expected.number


def _less(found: Any, expected: Expected, level: float) -> bool:
    number = as_number(found)
    return number is not None and expected.number is not None and number < expected.number


def _greater(found: Any, expected: Expected, level: float) -> bool:
    number = as_number(found)
    return number is not None and expected.number is not None and number > expected.number


def _approx(found: Any, expected: Expected, level: float) -> bool:
    if expected.number is not None:
        number = as_number(found)
        return number is not None and abs(number - expected.number) <= level
    items = as_items(found)
    wanted = expected.items
    if items is None or wanted is None or len(items) != len(wanted) or not items:
        return False
    for item, want in zip(items, wanted, strict=True):
        number = as_number(item)
        if number is None or want is None or abs(number - want) > level:
            return False
    return True


_APPLY: Final[dict[str, Callable[[Any, Expected, float], bool]]] = {
    "regexp": _regexp,
    "contains": _contains,
    "==": _equal,
    "!=": _unequal,
    "<": _less,
    ">": _greater,
    "approx": _approx,
}


def tag_label(key: TagKey) -> list[str]:
    """A canonical tag as it is written in a rules file: ``["Name"]`` or hex group/element."""
    if isinstance(key, str):
        return [key]
    labels = [f"0x{part:04X}" for part in key]
    if len(key) == 3:
        labels[2] = str(key[2])  # the item index is written in decimal
    return labels


@dataclass(frozen=True)
class TagTest:
    """A compiled test entry: ``tag`` compared by ``operator`` with a literal or a tag."""

    index: int
    tag: TagKey
    operator: str
    negate: bool
    value: Any  # as written in the file (None for exist/notexist without one)
    expected: Expected | None  # the literal; None when the value has no usable literal
    value_tag: TagKey | None  # the value read as a tag, used when that tag is present
    level: float = DEFAULT_APPROX_LEVEL

    def holds(self, found: Any, other: Any) -> bool:
        """The entry's result for the tag's value ``found`` and the value tag's ``other``.

        Either may be MISSING. An absent tag fails every operator but ``notexist``.
        """
        if found is MISSING:
            result = self.operator == "notexist"
        elif self.operator in ("exist", "notexist"):
            result = self.operator == "exist"
        else:
            expected = self.expected if other is MISSING else Expected.of(other)
            result = expected is not None and _APPLY[self.operator](found, expected, self.level)
        return result != self.negate

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tag": tag_label(self.tag), "operator": self.operator}
        if self.value is not None:
            out["value"] = self.value
        if self.operator == "approx":
            out["approxLevel"] = self.level
        if self.negate:
            out["negate"] = "yes"
        return out

    def describe(self) -> str:
        label = _label_text(self.tag)
        text = f"{label} {self.operator}"
        if self.operator not in ("exist", "notexist"):
            text += f" {_label_text(self.value_tag) if self.value_tag else repr(self.value)}"
        if self.operator == "approx":
            text += f" (within {self.level:g})"
        return f"NOT ({text})" if self.negate else text


def _label_text(key: TagKey | None) -> str:
    return "[" + ", ".join(f'"{part}"' for part in tag_label(key or "")) + "]"


@dataclass(frozen=True)
class RuleRef:
    """A compiled reference entry: ``{"rule": ID}``, or ``{"notrule": ID}`` when negated."""

    index: int
    target: int  # the referenced rule's position in the file
    target_id: str
    negate: bool

    def describe(self) -> str:
        return f"{'not ' if self.negate else ''}rule {self.target_id!r}"


Entry = TagTest | RuleRef
