"""Siemens CSA headers: a thin wrapper over ``nibabel.nicom.csareader``.

Siemens MR images carry two CSA headers in the private block ``SIEMENS CSA HEADER`` of
group 0x0029: the image header (element xx10: per-image values such as ``B_value``) and
the series header (element xx20: among others ``MrPhoenixProtocol``, the protocol text).
nibabel reads both formats (CSA1 and CSA2); we never parse the binary layout ourselves.

Contract (the one nibabel's reader follows):

* an absent header gives ``None``;
* a header that is present but cannot be read raises :class:`CsaError` (any exception
  nibabel's reader raises on corrupt bytes is turned into it, with the reason), so the
  caller decides: ``header`` logs it and goes on without the CSA fields.

A parsed header is a plain ``dict`` from tag name to its list of items, as nibabel gives
them: numeric items (``IS``, ``DS``, ``FD``...) as ``int`` or ``float``, strings as ``str``
(``bytes`` when unterminated). :func:`text` renders an item the way the CSA header writes
it (integral values without ``.0``); :func:`scalar` and :func:`vector` use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from dcmsortd.dicom.elements import ABSENT, value_of
from dcmsortd.model.errors import DcmsortdError

with warnings.catch_warnings():
    # nibabel.nicom warns on import about its DICOM image readers, which we do not use
    warnings.filterwarnings("ignore", "The DICOM readers are highly experimental", UserWarning)
    from nibabel.nicom import csareader

# nibabel is untyped: name the function we call with its type
_read_csa: Callable[[bytes], dict[str, Any]] = csareader.read

CsaValue = str | int | float | bytes  # as nibabel gives them; render with text()
CsaHeader = dict[str, list[CsaValue]]

_GROUP = 0x0029
_CREATOR = "SIEMENS CSA HEADER"
_OFFSETS = {"image": 0x10, "series": 0x20}
_FIRST_CREATOR, _LAST_CREATOR = _GROUP << 16 | 0x10, _GROUP << 16 | 0xFF


class CsaError(DcmsortdError):
    """A CSA header is present but cannot be read."""


_UNSEARCHED = -1


def block_start(ds: Any) -> int | None:
    """Element base (0xXX00) of the ``SIEMENS CSA HEADER`` block, None when absent.

    Raises :class:`CsaError` when a private creator cannot be decoded. Pass the result to
    :func:`raw_header` when reading both headers of one dataset, to search only once.
    """
    try:
        return _block_start(ds)
    except Exception as exc:  # pydicom's conversion of untrusted bytes can raise anything
        raise CsaError(f"not decodable: {type(exc).__name__}: {exc}") from exc


def raw_header(ds: Any, kind: str, start: int | None = _UNSEARCHED) -> bytes | None:
    """Return the bytes of the CSA ``image`` or ``series`` header of ``ds``, or None.

    ``start`` is the block's base as :func:`block_start` found it (searched when not given).
    Raises :class:`CsaError` when the private block exists but the element is not binary.
    """
    offset = _OFFSETS[kind]
    try:
        if start == _UNSEARCHED:
            start = _block_start(ds)
        if start is None:
            return None
        value = value_of(ds, _GROUP << 16 | start | offset)  # not stored back in ds
    except Exception as exc:  # pydicom's conversion of untrusted bytes can raise anything
        raise CsaError(f"not decodable: {type(exc).__name__}: {exc}") from exc
    if value is ABSENT or value is None or value == b"":
        return None
    if not isinstance(value, bytes):
        raise CsaError(f"not binary data but {type(value).__name__}")
    return value


def parse(raw: bytes) -> CsaHeader:
    """Parse CSA header bytes into {tag name: items}; raise :class:`CsaError` if corrupt."""
    try:
        parsed = _read_csa(raw)
    except Exception as exc:  # nibabel raises struct/Value/Assertion/Index errors on junk
        raise CsaError(f"corrupt: {type(exc).__name__}: {exc}") from exc
    return {_as_str(name): tag["items"] for name, tag in parsed["tags"].items()}


def header(ds: Any, kind: str, start: int | None = _UNSEARCHED) -> CsaHeader | None:
    """Return the parsed CSA ``image`` or ``series`` header of ``ds``, or None if absent."""
    raw = raw_header(ds, kind, start)
    return None if raw is None else parse(raw)


def text(value: CsaValue) -> str:
    """Render one CSA item as text the way the CSA header holds it.

    Integers (IS, SL, ...) as ``1000``; floating point items (FD, FL, DS) with the eight
    decimals Siemens writes them with (``0.99997449``, ``1.00000000``), so a value reads
    exactly as in the header's own text and as FIONA's Python 2 daemon wrote it.

    Strings lose trailing NUL/space padding; bytes (an item nibabel found no NUL in) are
    decoded as Latin-1.
    """
    if isinstance(value, float):
        return f"{value:.8f}"
    if isinstance(value, bytes | str):
        return _as_str(value).rstrip("\x00 ")
    return str(value)


def scalar(hdr: CsaHeader, name: str) -> str | None:
    """The first item of tag ``name`` as text; None when the tag is absent or has no items."""
    items = hdr.get(name)
    if not items:
        return None
    return text(items[0])


def vector(hdr: CsaHeader, name: str) -> list[str] | None:
    """All items of tag ``name`` as text; None when the tag is absent or has no items."""
    items = hdr.get(name)
    if not items:
        return None
    return [text(v) for v in items]


def protocol_text(series_hdr: CsaHeader) -> str | None:
    """The protocol text (``MrPhoenixProtocol``, or ``MrProtocol`` of old versions) or None."""
    for name in ("MrPhoenixProtocol", "MrProtocol"):
        value = scalar(series_hdr, name)
        if value:
            return value
    return None


def _block_start(ds: Any) -> int | None:
    """Element base (0xXX00) of the ``SIEMENS CSA HEADER`` private block, or None.

    Like nibabel's ``find_private_section``, without slicing the dataset (which sorts
    every tag of it, twice per image). Elements are stored in file order, which DICOM
    requires to be ascending, so the search stops after the creator range.
    """
    # plain ints: pydicom's BaseTag compares in Python, 20 times slower
    for tag in map(int, ds.keys()):  # noqa: SIM118 (iterating a Dataset converts elements)
        if tag > _LAST_CREATOR:
            break
        if tag >= _FIRST_CREATOR:
            creator = value_of(ds, tag)  # the same bytes in every image: remembered
            if isinstance(creator, bytes):
                creator = creator.decode("latin-1")
            if isinstance(creator, str) and creator.strip(" \x00") == _CREATOR:
                return (tag & 0xFF) << 8
    return None


def _as_str(value: str | bytes) -> str:
    # nibabel returns bytes for a name or string item that has no terminating NUL
    return value.decode("latin-1") if isinstance(value, bytes) else value
