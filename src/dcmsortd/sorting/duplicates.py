"""Is a second file with an image's SOPInstanceUID the same image as the first one linked?

The first copy received stays linked (see :func:`dcmsortd.sorting.fsio.link`). A copy under
another path is a normal re-send when it holds the same data set; when it does not, the
sender gave one UID to two different images, a data-integrity problem worth a warning.

"The same data set" is decided on bytes, cheaply and without false alarms: the bytes after
the file meta information (group 0002, which a re-sending node rewrites with its own AE
title and implementation) must be equal. Sizes are compared first; equal sizes are
compared chunk by chunk, stopping at the first difference, so only a true re-send is read
through. A different transfer syntax counts as different content (its bytes differ).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

CHUNK = 1 << 20
_PREAMBLE = 128
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes, explicit VR LE


def dataset_offset(fp: BinaryIO) -> int:
    """Where the data set starts: after the preamble and file meta group when the file
    has the standard ones with a group length, else 0 (the whole file is compared)."""
    fp.seek(0)
    head = fp.read(_PREAMBLE + 16)
    if len(head) < _PREAMBLE + 16 or head[_PREAMBLE:_PREAMBLE + 4] != b"DICM":
        return 0
    if head[_PREAMBLE + 4:_PREAMBLE + 12] != _GROUP_LENGTH:
        return 0
    length: int = struct.unpack("<I", head[_PREAMBLE + 12:_PREAMBLE + 16])[0]
    return _PREAMBLE + 16 + length


def same_data_set(first: str, second: str) -> bool | None:
    """Whether the two files hold the same data set bytes; None when one cannot be read."""
    try:
        with open(first, "rb") as a, open(second, "rb") as b:
            return _same(a, b)
    except OSError:
        return None


def _same(a: BinaryIO, b: BinaryIO) -> bool:
    stat_a, stat_b = os.fstat(a.fileno()), os.fstat(b.fileno())
    if (stat_a.st_dev, stat_a.st_ino) == (stat_b.st_dev, stat_b.st_ino):
        return True  # one file under two names (a hard link, a linked folder)
    start_a, start_b = dataset_offset(a), dataset_offset(b)
    if stat_a.st_size - start_a != stat_b.st_size - start_b:
        return False
    a.seek(start_a)
    b.seek(start_b)
    while True:
        chunk = a.read(CHUNK)
        if chunk != b.read(len(chunk)):
            return False
        if not chunk:
            return True
