"""DICOM element values as series-record text.

The record's contract is ``str(value)`` the way pydicom renders a value (multi-values as
``[0, 256, 256, 0]``, a person name as its text), with two refinements where ``str()``
would write Python rather than DICOM:

* an element present but empty is ``""``, not ``None``;
* a binary value (a private element of unknown VR, read as ``UN``) is decoded as Latin-1
  text with its NUL/space padding removed, which is what FIONA's Python 2 daemon wrote.

A value pydicom cannot decode (corrupt bytes) counts as absent: nothing here raises.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence_item
from pydicom.sequence import Sequence
from pydicom.valuerep import AMBIGUOUS_VR

logger = logging.getLogger(__name__)

_ITEM_LE, _ITEM_BE = b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00"  # (FFFE,E000)


def element_text(ds: Dataset, tag: int) -> str | None:
    """The element's value as record text (see the module notes), None when absent."""
    try:
        elem = ds.get_item(tag)
        if elem is None:
            return None
        if isinstance(elem, RawDataElement):
            # convert without storing back: ``ds[tag]`` does the same conversion, then
            # looks the element up three more times (half the cost of a record's values)
            elem = convert_raw_data_element(elem, encoding=ds.original_character_set, ds=ds)
            if elem.VR in AMBIGUOUS_VR:
                elem = ds[tag]  # pydicom resolves "US or SS" and the like from the dataset
        return render(elem.value)
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
    """A DICOM value as record text: ``str(value)``, except None -> "" and bytes decoded."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    return str(value)
