"""Reading one received file into a pydicom ``Dataset``, header only, and checking it is whole.

This is the effectful edge of header extraction: it opens the file, reads the header up to
(not including) the pixel data, and checks that the file is complete. Little-endian files
with a preamble (nearly all) are read by :mod:`dcmsortd.dicom.leanread`, which builds the same
raw elements pydicom would; every other file, and any file that reader does not take
whole, is read by ``pydicom.dcmread``.
Every problem is a :class:`~dcmsortd.model.errors.HeaderError` whose message names the reason
(the caller adds the path). Nothing else escapes :func:`read_dataset`.

Checks, in order:

* the path names a regular file we can open (vanished, unreadable, a directory, a FIFO...);
* it is not empty, and it is DICOM: either ``DICM`` at byte 128 (the standard preamble),
  or, without a preamble, an element of group 0x0002 or 0x0008 at byte 0
  (only then is pydicom's ``force`` used, so arbitrary bytes are not taken for DICOM);
* nothing is cut short: with pixel data, its declared length must fit in the file; with
  encapsulated (undefined length) pixel data the items must run to the sequence
  delimiter inside the file; without pixel data, the last element must end exactly at
  the end of the file. A file cut exactly between two top-level elements cannot be told
  apart from a shorter file and is accepted; so is a cut in data set trailing padding.

An image header (one with Rows) without pixel data is not an error: exporters and
anonymizers strip pixels, pydicom reads such files and the sorter only needs the header.
:func:`read_dataset` says so (``ReadHeader.pixel_data``) and the sorter logs a warning.

Both readers also give the file meta's (0002,0016) SourceApplicationEntityTitle
(``ReadHeader.source_ae``): storescp writes the calling AE title there, and the sorter
takes the caller from it when the arrival's line says so.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dcmsortd.dicom.leanread import read_lean
from dcmsortd.model.errors import HeaderError

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_GROUP = 0x7FE0
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_RAW_START_GROUPS = {0x0002, 0x0008}
_ROWS = 0x00280010
_SOURCE_AE = BaseTag(0x00020016)


@dataclass(frozen=True)
class ReadHeader:
    """A file's header (no pixel data) and whether the file holds pixel data at all."""

    dataset: Dataset
    pixel_data: bool  # False: the file ends with its header (an image header only, or no image)
    source_ae: str | None = None  # the file meta's (0002,0016), unpadded; None when absent

    @property
    def image_without_pixels(self) -> bool:
        """An image header (Rows present) in a file without pixel data."""
        return not self.pixel_data and _ROWS in self.dataset


def read_dataset(path: str, wanted: frozenset[int] | None = None) -> ReadHeader:
    """Read the header of the DICOM file at ``path`` (no pixel data); raise HeaderError.

    ``wanted``: the top-level tags the caller needs; other elements may be left out (see
    :func:`~dcmsortd.dicom.leanread.read_lean`). None: every element.
    """
    with _open_regular(path) as fp:
        try:
            return _read_open(fp, wanted)
        except OSError as exc:  # an I/O error while reading
            raise HeaderError(f"unreadable: {exc.strerror or exc}") from exc


def _read_open(fp: BinaryIO, wanted: frozenset[int] | None) -> ReadHeader:
    size = os.fstat(fp.fileno()).st_size
    if size == 0:
        raise HeaderError("empty file")
    lean = read_lean(fp, size, wanted)
    if lean is not None:
        pixels = _check_lean(fp, size, lean.end, lean.implicit)
        return ReadHeader(lean.dataset, pixels, ae_text(lean.source_ae))
    fp.seek(0)
    ds = _parse(fp, _needs_force(fp, size))
    meta = getattr(ds, "file_meta", None)
    elem = None if meta is None else meta.get_item(_SOURCE_AE)
    source_ae = None if elem is None else ae_text(elem.value)
    return ReadHeader(ds, _check_complete(ds, fp, size), source_ae)


def ae_text(value: object) -> str | None:
    """An AE title element's value as text: bytes decoded as ISO 8859-1 (pydicom's default
    repertoire), a value pydicom split at backslashes joined again, NUL and space padding
    removed; None when there is no value."""
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:  # a MultiValue: the text held a backslash
        text = "\\".join(str(v) for v in value)  # type: ignore[attr-defined]
    return text.strip("\x00 ")


def _open_regular(path: str) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO must not hang; fstat then rejects it.
    def opener(name: str, flags: int) -> int:
        return os.open(name, flags | os.O_NONBLOCK)

    try:
        fp = open(path, "rb", opener=opener)  # noqa: SIM115 (returned to a with block)
    except FileNotFoundError as exc:
        raise HeaderError("vanished: no such file") from exc
    except IsADirectoryError as exc:
        raise HeaderError("is a directory, not a file") from exc
    except PermissionError as exc:
        raise HeaderError("unreadable: permission denied") from exc
    except OSError as exc:
        raise HeaderError(f"unreadable: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL in the path
        raise HeaderError(f"unreadable: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
        fp.close()
        raise HeaderError("not a regular file")
    return fp


def _needs_force(fp: BinaryIO, size: int) -> bool:
    """False for a standard file (preamble + DICM), True for a plausible raw dataset."""
    head = fp.read(132)
    fp.seek(0)
    if len(head) == 132 and head[128:132] == b"DICM":
        return False
    if len(head) >= 8:
        explicit = head[4:6].isalpha() and head[4:6].isupper()
        for endian in "<>":
            group, _, length = struct.unpack(endian + "HHI", head[:8])
            if group in _RAW_START_GROUPS and (explicit or length <= size):
                return True
    raise HeaderError("not DICOM: no 'DICM' marker at byte 128 and no DICOM element at byte 0")


def _parse(fp: BinaryIO, force: bool) -> Dataset:
    try:
        return pydicom.dcmread(fp, stop_before_pixels=True, force=force)
    except InvalidDicomError as exc:
        raise HeaderError(f"not DICOM: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on corrupt bytes
        raise HeaderError(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from exc


def _check_complete(ds: Dataset, fp: BinaryIO, size: int) -> bool:
    """Check the file is whole; True when it holds pixel data."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # pydicom inflated the whole file in memory; zlib checked its integrity. Whether
        # the inflated data set went on to pixel data is not known here: not warned about
        return True
    implicit, little = ds.original_encoding
    endian = "<" if little in (True, None) else ">"
    pos = fp.tell()
    if pos < size:
        _check_pixel_data(fp, size, pos, bool(implicit), endian)
        return True
    _check_last_element(ds, size)
    return False


def _check_lean(fp: BinaryIO, size: int, end: int, implicit: bool) -> bool:
    """The checks of :func:`_check_complete` for a file :func:`read_lean` read whole."""
    if end < size:
        fp.seek(end)
        _check_pixel_data(fp, size, end, implicit, "<")
        return True
    return False  # read_lean took every element, the last one ending at the end of the file


def _check_pixel_data(fp: BinaryIO, size: int, pos: int, implicit: bool, endian: str) -> None:
    head = fp.read(8)
    if len(head) < 8:
        raise HeaderError(f"truncated: {size - pos} stray bytes at the end of the file")
    group, elem = struct.unpack(endian + "HH", head[:4])
    if group != _PIXEL_GROUP:
        raise HeaderError(f"corrupt: unexpected element ({group:04X},{elem:04X}) at {pos}")
    if not implicit and not (head[4:6].isalpha() and head[4:6].isupper()):
        implicit = True  # an implicit VR data set under an explicit transfer syntax, as
        # pydicom reads it (it switches when the first element has no VR)
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:8])
    elif head[4:6] in _LONG_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            raise HeaderError("truncated: pixel data element header is cut short")
        (length,) = struct.unpack(endian + "I", extra)
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
    start = fp.tell()
    if length == _UNDEFINED:
        _check_encapsulated(fp, size, start, endian)
    elif start + length > size:
        raise HeaderError(
            f"truncated: pixel data declares {length} bytes, the file holds {size - start}"
        )


def _check_encapsulated(fp: BinaryIO, size: int, start: int, endian: str) -> None:
    header = struct.Struct(endian + "HHI")
    delimiter = header.pack(0xFFFE, 0xE0DD, 0)
    if size - start >= 16:
        first = fp.read(8)
        fp.seek(size - 8)
        if _tag(header, first)[0] == _ITEM and fp.read(8) == delimiter:
            return  # the common case: first item present, delimiter at the very end
    fp.seek(start)
    while True:
        raw = fp.read(8)
        if len(raw) < 8:
            raise HeaderError("truncated: encapsulated pixel data ends before its delimiter")
        tag, length = _tag(header, raw)
        if tag == _SEQUENCE_DELIMITER:
            return
        if tag != _ITEM or length == _UNDEFINED:
            raise HeaderError(f"corrupt: encapsulated pixel data has no item at {fp.tell() - 8}")
        if fp.tell() + length > size:
            raise HeaderError("truncated: a pixel data fragment runs past the end of the file")
        fp.seek(length, os.SEEK_CUR)


def _tag(header: struct.Struct, raw: bytes) -> tuple[int, int]:
    group, elem, length = header.unpack(raw)
    return group << 16 | elem, length


def _check_last_element(ds: Dataset, size: int) -> None:
    if not ds:
        raise HeaderError("truncated or not DICOM: no data elements after the file meta")
    last = ds.get_item(list(ds.keys())[-1], keep_deferred=True)  # the last one read
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED:
        _check_element_end(last, size)
    # else an undefined-length sequence: pydicom read it to its delimiter


def _check_element_end(last: RawDataElement, size: int) -> None:
    held = len(last.value) if last.value is not None else size - last.value_tell
    if held < last.length:
        raise HeaderError(
            f"truncated: element {last.tag} declares {last.length} bytes, "
            f"the file holds {max(held, 0)}"
        )
    end = last.value_tell + last.length
    if end < size:
        raise HeaderError(f"truncated: {size - end} stray bytes at the end of the file")
