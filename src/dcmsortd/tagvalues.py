"""Snapshot from a dataset the values of the tags the rules read, as plain picklable data.

Runs in worker processes for every image, so it only touches the tags asked for and never
raises: an element that cannot be read is left out, as if absent. Representations:

- text, DS and IS values: their text (``"2.460"`` stays ``"2.460"``, like the series record);
- binary numbers (US, SS, UL, SL, FL, FD, AT): int or float;
- multi-valued elements: a list of those;
- bytes (OB, UN, ...): the text when it is printable (NUL and space padding removed), else
  ``str()`` of the bytes;
- a sequence: the number of its items; an empty element: ``""``; anything else: ``str()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import IS, DSdecimal, DSfloat

from .elements import ABSENT, value_of
from .instance import RuleValue, TagKey

log = logging.getLogger(__name__)


class _Absent:
    pass


_ABSENT: Final = _Absent()


def values_from_dataset(ds: Any, keys: Iterable[TagKey]) -> dict[TagKey, RuleValue]:
    """Return {key: value} for every key present in ``ds``; absent keys are left out."""
    out: dict[TagKey, RuleValue] = {}
    for key in keys:
        try:
            value = _lookup(ds, key)
        except Exception as exc:  # odd data must never stop an arrival: treat as absent
            log.debug("cannot read %r for the rules, treated as absent: %s", key, exc)
            continue
        if not isinstance(value, _Absent):
            out[key] = value
    return out


def rule_tag(key: TagKey) -> int | None:
    """The top-level tag a rule key reads (None for an unknown keyword)."""
    if isinstance(key, str):
        return tag_for_keyword(key)
    return key[0] << 16 | key[1]


def _lookup(ds: Any, key: TagKey) -> RuleValue | _Absent:
    if isinstance(key, str):
        tag = tag_for_keyword(key)
        return _ABSENT if tag is None else _plain(_element(ds, tag))
    group, element, *rest = key
    raw = _element(ds, group << 16 | element)
    if not rest:
        return _plain(raw)
    if len(rest) == 1:
        return _item(raw, rest[0])
    while rest:
        if not isinstance(raw, Sequence) or len(raw) == 0:
            return _ABSENT
        group, element, *rest = rest
        raw = _element(raw[0], group << 16 | element)
    return _plain(raw)


def _element(ds: Any, tag: int) -> Any:
    """The value of ``tag`` in ``ds``, or _ABSENT."""
    if not isinstance(ds, Dataset):
        return _ABSENT
    value = value_of(ds, tag)
    return _ABSENT if value is ABSENT else value


def _plain(value: Any) -> RuleValue | _Absent:
    if isinstance(value, _Absent):
        return value
    if isinstance(value, Sequence):
        return len(value)
    if isinstance(value, MultiValue | list | tuple):
        return [_scalar(item) for item in value]
    return _scalar(value)


def _item(value: Any, index: int) -> RuleValue | _Absent:
    if isinstance(value, _Absent | Sequence):
        return _ABSENT
    if isinstance(value, MultiValue | list | tuple):
        return _scalar(value[index]) if index < len(value) else _ABSENT
    return _scalar(value) if index == 0 else _ABSENT


def _scalar(value: Any) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, str | DSfloat | DSdecimal | IS):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return _bytes_text(bytes(value))
    return str(value)


def _bytes_text(value: bytes) -> str:
    text = value.decode("latin-1").rstrip("\x00 ")
    return text if text.isprintable() else str(value)
