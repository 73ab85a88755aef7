"""DICOM element values as series-record text.

The record's contract is ``str(value)`` the way pydicom renders a value (multi-values as
``[0, 256, 256, 0]``, a person name as its text). So an element present but empty is
``""`` for a text VR (pydicom's empty value for those) and ``"None"`` for a numeric one
(IS, DS, US, FL...: pydicom 3 reads an empty numeric value as None), as the original
wrote it. One refinement: a binary value (a private element of unknown VR, read as
``UN``) is decoded as Latin-1 text with its NUL/space padding removed, which is what
FIONA's Python 2 daemon wrote.

A value pydicom cannot decode (corrupt bytes) counts as absent: nothing here raises.

Most elements of an image repeat those of the image before (PatientID, Modality, the
rules' tags...), so :func:`value_of` remembers what pydicom made of the same raw bytes
(same tag, VR, encoding and character set). The result is exactly pydicom's: only an
element whose conversion depends on anything else (a private element read without VR or
as UN, whose VR comes from its private creator; an ambiguous VR such as "US or SS") is
always converted afresh (:func:`converts_alone`). The memory is per process and bounded.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence_item
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR

logger = logging.getLogger(__name__)

MEMO_ENTRIES = 8192  # cleared when full: a new series refills it within a few images
MEMO_VALUE_BYTES = 512  # longer values (CSA headers, protocol text) are not remembered
_memo: dict[tuple[Any, ...], Any] = {}


class Absent:
    """The type of :data:`ABSENT`."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()


def value_of(ds: Dataset, tag: int) -> Any:
    """The converted value of element ``tag`` of ``ds``, or ABSENT; raises on corrupt bytes.

    The element is converted without being stored back (``ds[tag]`` does the same
    conversion, then looks the element up three more times).
    """
    elem = ds.get_item(BaseTag(tag))  # pydicom's Tag() returns a BaseTag as it is, at once
    if elem is None:
        return ABSENT
    if not isinstance(elem, RawDataElement):
        return elem.value
    key = None
    if converts_alone(elem):
        key = (tag, elem.VR, elem.value, elem.is_implicit_VR, elem.is_little_endian,
               charset_key(ds))
        found = _memo.get(key, ABSENT)
        if found is not ABSENT:
            return found
    converted = convert_raw_data_element(elem, encoding=ds.original_character_set, ds=ds)
    if converted.VR in AMBIGUOUS_VR:
        return ds[tag].value  # pydicom resolves "US or SS" and the like from the dataset
    if key is not None and converted.VR != "SQ":
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()
        _memo[key] = converted.value
    return converted.value


def charset_key(ds: Dataset) -> str | tuple[str, ...]:
    """The character set ``ds`` was read with, hashable (a memory key's part)."""
    charset = ds.original_character_set
    return charset if isinstance(charset, str) else tuple(charset)


def converts_alone(elem: RawDataElement) -> bool:
    """Whether pydicom converts raw ``elem`` from its own fields and the character set
    alone, and the value is worth remembering.

    Not so: a value not read yet (None), a long one (CSA headers, protocol text), a
    sequence, an ambiguous VR such as "US or SS" (resolved from other elements), and a
    private element without a VR or read as UN (its VR comes from its private creator).
    A public element read without a VR or as UN whose dictionary VR is ambiguous passes
    here; its converted VR tells (see :func:`value_of`).
    """
    raw, vr = elem.value, elem.VR
    return (
        isinstance(raw, bytes)
        and len(raw) <= MEMO_VALUE_BYTES
        and vr not in AMBIGUOUS_VR
        and vr != "SQ"
        and not ((vr is None or vr == "UN") and elem.tag >> 16 & 1)
    )

_ITEM_LE, _ITEM_BE = b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00"  # (FFFE,E000)


def element_text(ds: Dataset, tag: int) -> str | None:
    """The element's value as record text (see the module notes), None when absent."""
    try:
        value = value_of(ds, tag)
        return None if value is ABSENT else render(value)
    except Exception as exc:  # pydicom's conversion of untrusted bytes can raise anything
        logger.debug("element (%04X,%04X) not decodable: %r", tag >> 16, tag & 0xFFFF, exc)
        return None


def nested_text(ds: Dataset, path: tuple[int, ...]) -> str | None:
    """Text of ``path[-1]`` in the first item of each sequence ``path[:-1]``, or None."""
    current: Dataset | None = ds
    for tag in path[:-1]:
        if current is None or tag not in current:
            return None
        try:
            current = first_item(current, tag)
        except Exception as exc:  # as in element_text
            logger.debug("sequence (%04X,%04X) not decodable: %r", tag >> 16, tag & 0xFFFF, exc)
            return None
    return None if current is None else element_text(current, path[-1])


def first_item(ds: Dataset, tag: int) -> Dataset | None:
    """The first item of sequence ``tag`` of ``ds`` (present), or None if it has none.

    A sequence pydicom has not converted yet is parsed up to its first item only: the
    per-frame functional groups of an enhanced multi-frame file hold one item per frame.
    """
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, RawDataElement):
        # a sequence read as UN holds implicit VR little endian items (PS3.5 6.2.2)
        as_un = raw.VR == "UN"
        little = raw.is_little_endian or as_un
        if not isinstance(raw.value, bytes) or not raw.value.startswith(
            _ITEM_LE if little else _ITEM_BE
        ):
            return None  # empty, or not a sequence at all
        return read_sequence_item(
            BytesIO(raw.value), raw.is_implicit_VR or as_un, little, ds.original_character_set
        )
    value = raw.value if raw is not None else None
    return value[0] if isinstance(value, Sequence) and len(value) > 0 else None


def render(value: Any) -> str:
    """A DICOM value as record text: ``str(value)`` (None, an empty numeric value, gives
    ``"None"``), bytes decoded."""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    return str(value)
