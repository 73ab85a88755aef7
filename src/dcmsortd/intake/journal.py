"""The arrivals journal, its pure parts: line framing, the remembered positions, resuming.

storescp's per-file line appends one notification line to the journal file
(``echo '<caller-from-file>,AET,#r,#p,#f' >> <datadir>/site/.dcmsortd/journal/arrivals<project>``,
see ``hookup``; the classic ``'#a,#c,#r,#p,#f'`` shape works too): the shell
opens it with O_APPEND and writes the line in one ``write``, so lines of many writers never
interleave on a local file system. The daemon follows the file (see ``follower``) and
remembers, durably, how far its lines are sorted: a ``JournalState`` of the file's inode and
offset, plus those of the file rotated away last (``<name>.old``), which late writers that
opened it before the rotation may still append to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

NEWLINE = b"\n"


@dataclass(frozen=True)
class Position:
    """How far the lines of one journal file (by inode) are sorted and durable."""

    ino: int
    offset: int


@dataclass(frozen=True)
class JournalState:
    """The remembered positions: the live journal file and the rotated one, if any."""

    active: Position | None = None
    old: Position | None = None
    extra: object = None  # what the reader of the lines keeps over a restart (JSON)

    def to_bytes(self) -> bytes:
        data: dict[str, object] = {
            role: None if pos is None else {"ino": pos.ino, "offset": pos.offset}
            for role, pos in (("active", self.active), ("old", self.old))}
        if self.extra is not None:
            data["extra"] = self.extra
        return json.dumps(data, sort_keys=True).encode() + NEWLINE

    @classmethod
    def from_bytes(cls, data: bytes) -> JournalState:
        """Parse a saved state; ValueError for anything but what ``to_bytes`` writes."""
        try:
            raw = json.loads(data.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a journal position file: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a journal position file: not a JSON object")
        return cls(_position(raw.get("active")), _position(raw.get("old")), raw.get("extra"))


def _position(value: object) -> Position | None:
    if value is None:
        return None
    if isinstance(value, dict):
        ino, offset = value.get("ino"), value.get("offset")
        if (isinstance(ino, int) and isinstance(offset, int) and not isinstance(ino, bool)
                and not isinstance(offset, bool) and ino >= 0 and offset >= 0):
            return Position(ino, offset)
    raise ValueError(f"not a journal position: {value!r}")


def frame_lines(data: bytes, start: int) -> tuple[list[tuple[bytes, int]], int]:
    """Split ``data``, read from offset ``start`` of a journal file, into complete lines.

    Returns each line (without its newline) with the offset just past it, and how many bytes
    those lines take. An unterminated tail is not taken: it is a line still being written
    (or cut short); it is read again, whole, once its newline is there. Empty lines are
    dropped (their bytes still count).
    """
    end = data.rfind(NEWLINE) + 1
    lines: list[tuple[bytes, int]] = []
    at = 0
    while at < end:
        stop = data.index(NEWLINE, at)
        if stop > at:
            lines.append((data[at:stop], start + stop + 1))
        at = stop + 1
    return lines, end


def resume_offset(
    saved: JournalState, role: str, ino: int, size: int
) -> tuple[int, str | None]:
    """Where to start reading the file ``role`` ("active" or "old") of inode ``ino`` and
    ``size`` bytes, after a (re)start; with the reason to log when it is not where we were.

    The rotated file may carry the live file's remembered position: the daemon stopped
    between renaming the file and saving the state. A file we know nothing of is read from
    its start (a line sorted twice is filed once: sorting is idempotent; one skipped is lost).
    """
    known = [saved.active] if role == "active" else [saved.old, saved.active]
    for pos in known:
        if pos is not None and pos.ino == ino:
            if pos.offset > size:
                return 0, (f"is shorter ({size} bytes) than the remembered position "
                           f"{pos.offset} (truncated?); reading it from its start")
            return pos.offset, None
    if size and any(p is not None for p in known):
        return 0, "is not the file last followed; reading it from its start"
    return 0, None
