"""A lean header reader for the common files, giving the same ``Dataset`` as pydicom.

``pydicom.dcmread`` spends most of its time in per-element Python machinery and in
parsing every undefined-length sequence completely. For the transfer syntaxes scanners
send (implicit VR little endian, and explicit VR little endian including every
encapsulated one) this module walks the top-level elements over one buffer and builds the
very ``RawDataElement`` objects pydicom's own generator would; pydicom still converts
every value (lazily, when a field is read), so values render exactly as before.
An undefined-length sequence is kept as its raw item bytes, which pydicom converts into
the same ``Sequence`` on access; it is only skipped over here, never parsed.

Anything this reader does not handle exactly as pydicom would (no ``DICM`` preamble,
big endian, deflate, private transfer syntaxes, an implicit/explicit switch, an unknown
VR, an undefined-length value that is not a sequence, a value running past the end of the
file...) returns ``None``, and the caller reads the file with ``dcmread``, which also
words the error for a damaged file. So this is an optimisation, never a second opinion.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import MutableSequence
from typing import BinaryIO, NamedTuple

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.values import convert_string

FIRST_READ = 96 * 1024  # most MR headers, CSA headers included, fit in one read
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_CHARSET = 0x00080005
_KEPT_GROUPS = frozenset({0x0028, 0x0029})  # see kept()
_TS = 0x00020010
_SOURCE_AE = 0x00020016  # SourceApplicationEntityTitle: storescp writes the calling AE there
_IMPLICIT_LE = "1.2.840.10008.1.2"
_STANDARD_TS_ROOT = "1.2.840.10008.1.2."
_NOT_LEAN_TS = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})  # BE, deflate
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)
_VR_NAMES = {vr: vr.decode() for vr in _VRS}
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VR_INFO = {vr: (vr.decode(), vr in _LONG_VRS) for vr in _VRS}  # name, 32-bit length
# RawDataElement's fields as this module fills them (the last two are pydicom's defaults:
# is_raw, is_buffered); when they are, an element is made as a plain tuple of them, which
# skips the named tuple's Python-level __new__ (a tenth of the reader's time)
_RAW_AS_TUPLE = RawDataElement._fields == (
    "tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian",
    "is_raw", "is_buffered",
) and RawDataElement._field_defaults == {"is_raw": True, "is_buffered": False}
_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_LENGTH32 = struct.Struct("<L")


class LeanRead(NamedTuple):
    """What :func:`read_lean` read: the data set, the offset where the pixel data element
    starts (the file's size when there is none), whether the data set is implicit VR, and
    the file meta's (0002,0016) as its bytes (None when absent)."""

    dataset: Dataset
    end: int
    implicit: bool
    source_ae: bytes | None


class _NotLean(Exception):
    """This file is left to pydicom."""


class _Buffer:
    """The file's bytes from offset 0, read on demand."""

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp = fp
        self.size = size
        self.data = fp.read(min(size, FIRST_READ))

    def need(self, end: int) -> bytes:
        """The buffer, holding at least ``end`` bytes; _NotLean if the file is shorter."""
        data = self.data
        if end <= len(data):
            return data
        if end > self.size:
            raise _NotLean("a value runs past the end of the file")
        want = min(self.size, max(end, 2 * len(data))) - len(data)
        more = self.fp.read(want)
        if len(more) < want:
            raise _NotLean("the file shrank while being read")
        self.data = data = data + more
        return data


def read_lean(
    fp: BinaryIO, size: int, wanted: frozenset[int] | None = None
) -> LeanRead | None:
    """Read the header of the open file ``fp`` of ``size`` bytes, or None (use pydicom).

    ``wanted``: the top-level tags the caller will look at; the dataset then holds those
    (and the ones :func:`kept` names) only. None keeps every element.

    Returns the dataset (top level, no file meta, no pixel data), the offset where the
    pixel data element starts (``size`` when there is none), whether the data set is
    implicit VR and the raw (0002,0016). ``fp`` is left at an unspecified position.
    """
    buf = _Buffer(fp, size)
    try:
        if len(buf.data) < 132 or buf.data[128:132] != b"DICM":
            return None
        transfer_syntax, source_ae, pos = _file_meta(buf, 132)
        implicit = _encoding(transfer_syntax)
        _check_first_vr(buf, pos, implicit)
        elements, charset, end = _top_level(buf, pos, implicit, wanted)
    except Exception:  # noqa: BLE001 - whatever surprised us, pydicom reads (or words) it
        return None
    ds = Dataset(elements)  # type: ignore[arg-type]  # pydicom's hint is invariant
    ds.set_original_encoding(implicit, True, charset)
    return LeanRead(ds, end, implicit, source_ae)


def _file_meta(buf: _Buffer, pos: int) -> tuple[str, bytes | None, int]:
    """The transfer syntax UID, the raw (0002,0016) and the offset after group 0x0002
    (explicit VR LE)."""
    transfer_syntax = None
    source_ae = None
    while _IMPLICIT.unpack_from(buf.need(pos + 8), pos)[0] == 0x0002:
        tag, _, length, start = _element_head(buf, pos, implicit=False)
        if length == _UNDEFINED:
            raise _NotLean("undefined length in the file meta")
        data = buf.need(start + length)
        if tag == _TS:
            transfer_syntax = data[start : start + length].decode("ascii").strip("\x00 ")
        elif tag == _SOURCE_AE:
            source_ae = data[start : start + length]
        pos = start + length
    if transfer_syntax is None:
        raise _NotLean("no transfer syntax")
    return transfer_syntax, source_ae, pos


def _encoding(transfer_syntax: str) -> bool:
    """True for implicit VR; _NotLean unless little endian and not deflated."""
    if transfer_syntax == _IMPLICIT_LE:
        return True
    if transfer_syntax in _NOT_LEAN_TS or not transfer_syntax.startswith(_STANDARD_TS_ROOT):
        raise _NotLean(f"transfer syntax {transfer_syntax}")
    return False


def _check_first_vr(buf: _Buffer, pos: int, implicit: bool) -> None:
    """pydicom switches encodings when the first element looks otherwise, and reads
    command set elements (group 0x0000) in front of the data set its own way: we don't."""
    if pos + 6 > buf.size:
        return
    head = buf.need(pos + 6)
    if head[pos : pos + 2] == b"\x00\x00":
        raise _NotLean("a command set element at the start of the data set")
    raw_vr = head[pos + 4 : pos + 6]
    looks_implicit = not (0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B)
    if looks_implicit != implicit:
        raise _NotLean("the data set's encoding differs from its transfer syntax")


def _top_level(  # noqa: C901 - the hot loop: element heads are parsed inline, for speed
    buf: _Buffer, pos: int, implicit: bool, wanted: frozenset[int] | None
) -> tuple[dict[BaseTag, RawDataElement], str | MutableSequence[str], int]:
    """The top-level elements before the pixel data, the character set, where it stopped.

    With ``wanted``, only those elements are kept (and every one :func:`kept` keeps);
    the others are stepped over. This runs for every element of every file (a few
    hundred a file): names are bound locally, one lookup gives a VR's name and length
    size, and the kept test puts first what an element that is stepped over fails.
    """
    elements: dict[BaseTag, RawDataElement] = {}
    charset: str | MutableSequence[str] = default_encoding
    size = buf.size
    data = buf.data
    have = len(data)
    head = _IMPLICIT.unpack_from if implicit else _EXPLICIT.unpack_from
    length32 = _LENGTH32.unpack_from
    vr_info = _VR_INFO.get
    keep = None if wanted is None else _with_charset(wanted)
    kept_groups = _KEPT_GROUPS
    undefined = _UNDEFINED
    as_tuple, new_tuple = _RAW_AS_TUPLE, tuple.__new__
    vr: str | None = None
    while pos < size:
        if pos + 12 > have:
            data = buf.need(min(pos + 12, size))
            have = len(data)
        if implicit:
            group, elem, length = head(data, pos)
            vr = None  # pydicom looks an implicit element's VR up when it converts it
            start = pos + 8
        else:
            group, elem, raw_vr, length = head(data, pos)
            info = vr_info(raw_vr)
            if info is None:
                raise _NotLean(f"unknown VR {raw_vr!r} at {pos}")
            vr, long = info
            if long:
                (length,) = length32(data, pos + 8)
                start = pos + 12
            else:
                start = pos + 8
        tag = group << 16 | elem
        if group >= 0x7FE0 and (tag in _PIXEL_TAGS or group == 0xFFFE):
            if tag in _PIXEL_TAGS:
                return elements, charset, pos
            raise _NotLean("an item or delimiter tag at the top level")
        if length == undefined:
            vr = _sequence_vr(buf, tag, vr, start)
            pos = _skip_sequence(buf, start, implicit)
            data = buf.data
            have = len(data)
            length = pos - 8 - start  # the items, without the sequence delimiter
        else:
            pos = start + length
            if pos > have:
                data = buf.need(pos)
                have = len(data)
        if (keep is not None and tag not in keep and group not in kept_groups
                and not (group & 1 and 0x0010 <= elem <= 0x00FF)):
            continue  # not kept: the test of kept(), inline (it runs for every element)
        value = data[start : start + length] if length else empty_value_for_VR(vr, raw=True)
        if as_tuple:
            raw = new_tuple(RawDataElement, (BaseTag(tag), vr, length, value, start, implicit,
                                             True, True, False))
        else:
            raw = RawDataElement(BaseTag(tag), vr, length, value, start, implicit, True)  # type: ignore[arg-type]
        if tag == _CHARSET:
            charset = _charset(raw)
        elements[raw.tag] = raw
    if pos != size:
        raise _NotLean("stray bytes at the end")
    return elements, charset, size


@functools.lru_cache(maxsize=16)
def _with_charset(wanted: frozenset[int]) -> frozenset[int]:
    return wanted | {_CHARSET}


def kept(tag: int, wanted: frozenset[int]) -> bool:
    """Whether a reader asked for ``wanted`` tags keeps element ``tag``.

    Besides those: Specific Character Set, group 0x0028 (pydicom resolves ambiguous VRs
    such as "US or SS" from it; Rows tells an image), group 0x0029 (Siemens CSA headers)
    and every private creator (the VR of an implicit private element depends on it).
    """
    group = tag >> 16
    return (
        tag in wanted
        or group in _KEPT_GROUPS
        or bool(group & 1 and 0x0010 <= tag & 0xFFFF <= 0x00FF)
        or tag == _CHARSET
    )


def _element_head(buf: _Buffer, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """Tag, VR (None when implicit), length and value offset of the element at ``pos``."""
    data = buf.need(pos + 8)
    if implicit:
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        return group << 16 | elem, None, length, pos + 8
    group, elem, raw_vr, length = _EXPLICIT.unpack_from(data, pos)
    vr = _VR_NAMES.get(raw_vr)
    if vr is None:
        if group == 0xFFFE:  # item and delimiter tags carry no VR
            (length,) = _LENGTH32.unpack_from(data, pos + 4)
            return group << 16 | elem, None, length, pos + 8
        raise _NotLean(f"unknown VR {raw_vr!r}")
    if raw_vr in _LONG_VRS:
        (length,) = _LENGTH32.unpack_from(buf.need(pos + 12), pos + 8)
        return group << 16 | elem, vr, length, pos + 12
    return group << 16 | elem, vr, length, pos + 8


def _sequence_vr(buf: _Buffer, tag: int, vr: str | None, start: int) -> str:
    """"SQ" for an undefined-length element pydicom reads as a sequence, else _NotLean."""
    if vr == "SQ":
        return vr
    if vr is None:
        try:
            if dictionary_VR(tag) == "SQ":
                return "SQ"
        except KeyError:  # a private tag: a sequence if an item follows (as pydicom decides)
            if buf.need(start + 4)[start : start + 4] == b"\xfe\xff\x00\xe0":
                return "SQ"
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    raise _NotLean(f"undefined length {vr or 'implicit VR'} element {where}")


def _skip_sequence(buf: _Buffer, pos: int, implicit: bool) -> int:
    """The offset just after the delimiter of the undefined-length sequence at ``pos``."""
    while True:
        data = buf.need(pos + 8)
        group, elem, length = _IMPLICIT.unpack_from(data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _NotLean("a sequence holds something other than items")
        if length == _UNDEFINED:
            pos = _skip_item(buf, pos, implicit)
        else:
            pos += length
            buf.need(pos)


def _skip_item(buf: _Buffer, pos: int, implicit: bool) -> int:
    """The offset just after the delimiter of the undefined-length item at ``pos``."""
    while True:
        tag, vr, length, start = _element_head(buf, pos, implicit)
        if tag == _ITEM_END:
            return start
        if length == _UNDEFINED:
            if vr not in (None, "SQ"):
                raise _NotLean(f"undefined length {vr} inside a sequence")
            pos = _skip_sequence(buf, start, implicit)
        else:
            pos = start + length
            buf.need(pos)


def _charset(elem: RawDataElement) -> str | MutableSequence[str]:
    """The encodings named by Specific Character Set, as pydicom's reader derives them."""
    value = elem.value if isinstance(elem.value, bytes) else b""
    return convert_encodings(convert_string(value, True))
