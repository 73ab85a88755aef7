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
from functools import lru_cache
from typing import Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR, IS, DSdecimal, DSfloat

from dcmsortd.dicom.elements import ABSENT, charset_key, converts_alone, value_of
from dcmsortd.model.instance import RuleValue, TagKey

log = logging.getLogger(__name__)


class _Absent:
    pass


_ABSENT: Final = _Absent()


def values_from_dataset(ds: Any, keys: Iterable[TagKey]) -> dict[TagKey, RuleValue]:
    """Return {key: value} for every key present in ``ds``; absent keys are left out.

    Most images of a series hold the very same bytes in every element the rules read:
    for a frozenset of top-level keys (the rules' own), the snapshot is remembered by
    those elements' raw fields (see :func:`_snapshot_key`), and the next image whose
    elements are the same gets a copy of it.
    """
    key = None
    if isinstance(keys, frozenset):
        plan = _plan(keys)
        key = None if plan is None else _snapshot_key(ds, keys, plan)
    if key is not None:
        found = _snapshots.get(key)
        if found is not None:
            return _copy(found)
    out: dict[TagKey, RuleValue] = {}
    for k in keys:
        try:
            value = _lookup(ds, k)
        except Exception as exc:  # odd data must never stop an arrival: treat as absent
            log.debug("cannot read %r for the rules, treated as absent: %s", k, exc)
            continue
        if not isinstance(value, _Absent):
            out[k] = value
    if key is not None:
        if len(_snapshots) >= SNAPSHOTS:
            _snapshots.clear()
        _snapshots[key] = _copy(out)
    return out


def _copy(values: dict[TagKey, RuleValue]) -> dict[TagKey, RuleValue]:
    """A copy that shares no list with ``values`` (a remembered snapshot stays as it was)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in values.items()}


SNAPSHOTS = 1024  # remembered snapshots, cleared when full (a series needs one or a few)
_snapshots: dict[tuple[Any, ...], dict[TagKey, RuleValue]] = {}


@lru_cache(maxsize=16)
def _plan(keys: frozenset[TagKey]) -> tuple[tuple[int, bool], ...] | None:
    """The top-level tag each key reads, in one fixed order, and whether its dictionary
    VR is ambiguous; None when a key reads inside a sequence or names no DICOM element
    (those snapshots are not remembered)."""
    plan = []
    for key in keys:
        if not isinstance(key, str) and len(key) > 3:
            return None
        tag = rule_tag(key)
        if tag is None:
            return None
        try:
            ambiguous = dictionary_VR(tag) in AMBIGUOUS_VR
        except KeyError:
            ambiguous = False
        plan.append((tag, ambiguous))
    return tuple(plan)


def _snapshot_key(
    ds: Any, keys: frozenset[TagKey], plan: tuple[tuple[int, bool], ...]
) -> tuple[Any, ...] | None:
    """What the snapshot of ``keys`` depends on: the keys, the character set and, for
    each element read, whether it is there and its VR, bytes and encoding. None when an
    element's value depends on more than that (see
    :func:`~dcmsortd.dicom.elements.converts_alone`; an element read without a VR or as UN
    whose dictionary VR is ambiguous) or the dataset is not one read from a file."""
    if not isinstance(ds, Dataset):
        return None
    parts: list[Any] = [keys, charset_key(ds)]
    get_item = ds.get_item
    for tag, ambiguous in plan:
        elem = get_item(BaseTag(tag), keep_deferred=True)  # not converted: that could raise
        if elem is None:
            parts.append(None)
        elif (isinstance(elem, RawDataElement) and converts_alone(elem)
              and not (ambiguous and elem.VR in (None, "UN"))):
            parts.append((elem.VR, elem.value, elem.is_implicit_VR, elem.is_little_endian))
        else:
            return None
    return tuple(parts)


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
