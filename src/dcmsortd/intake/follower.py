"""Follow the arrivals journal: hand out its new lines, remember durably how far they are sorted,
rotate it without losing a line.

The daemon polls ``fileno()`` (an inotify descriptor on the journal folder) beside the pipe,
calls ``wake()`` when it is readable and on every idle tick (without inotify, every idle
interval, also while the pipe is busy),
takes lines with ``next_line()`` and calls ``commit()`` only once everything it was handed
is filed and its records are written: the saved position never runs ahead of the outputs,
so a crash re-reads (and re-files, a no-op) at most what came after the last commit.

Rotation: once the live file is read to its end and larger than ``rotate_bytes``, it is
renamed to ``<name>.old``; the next line a writer appends creates a new live file. A writer
that opened the old file just before the rename still appends there, so the old file is read
on until it has stayed read to its end for ``grace`` seconds, and only then removed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dcmsortd.intake.inotify import FolderWatch
from dcmsortd.intake.journal import JournalState, Position, frame_lines, resume_offset
from dcmsortd.intake.spool import fsync_dir, write_all

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
STATE_LIMIT = 4 * 1024 * 1024  # bytes of a position file read back
PUNCH_EVERY = 4 * 1024 * 1024  # sorted bytes of a never-rotated file given back at a time
ROTATE_BYTES = 8 * 1024 * 1024  # about 60 000 lines
ROTATE_GRACE = 60.0  # seconds a rotated file stays followed after it was last read to its end


@dataclass
class _Tail:
    """One open journal file: read up to ``read_to``, handed out up to ``handed``."""

    path: str
    fd: int
    ino: int
    handed: int
    read_to: int
    lines: deque[tuple[bytes, int]] = field(default_factory=deque)
    skipping: bool = False  # inside a line too long to take: its rest is dropped too

    def position(self) -> Position:
        return Position(self.ino, self.handed)


class Follower:
    """The journal ``<folder>/<name>``, its rotated ``<name>.old`` and its ``<name>.pos``."""

    def __init__(self, folder: str, name: str = "arrivals", *,
                 rotate_bytes: int | None = ROTATE_BYTES, grace: float = ROTATE_GRACE,
                 clock: Callable[[], float] = time.monotonic, watch: bool = True,
                 extra: Callable[[], object] | None = None) -> None:
        self.folder = folder
        self.path = os.path.join(folder, name)
        self.old_path = self.path + ".old"
        self.state_path = self.path + ".pos"
        self._rotate_bytes, self._grace, self._clock = rotate_bytes, grace, clock
        self._active: _Tail | None = None
        self._old: _Tail | None = None
        self._saved = JournalState()
        self._look = True
        self._old_quiet_since: float | None = None
        self._watch: FolderWatch | None = None
        self._use_watch = watch  # False: found by looking on a timer, as without inotify
        self._failing = False
        # rotate_bytes None: a file its writer keeps open (storescp's log), never renamed;
        # the space of what is sorted is given back instead (``_punch``)
        self._extra = extra
        self._punched = 0
        self._punch_warned = False

    # ------------------------------------------------------------ opening and closing

    def open(self) -> Follower:
        """Create the folder if needed, load the saved positions, open what is there."""
        os.makedirs(self.folder, exist_ok=True)
        self._saved = self._load()
        self._old = self._open_tail(self.old_path, "old")
        self._active = self._open_tail(self.path, "active")
        self._watch = FolderWatch.open(self.folder) if self._use_watch else None
        return self

    def close(self) -> None:
        for tail in (self._active, self._old):
            if tail is not None:
                os.close(tail.fd)
        self._active = self._old = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    @property
    def saved_extra(self) -> object:
        """What ``extra`` returned at the last save before this start (None: nothing)."""
        return self._saved.extra

    def fileno(self) -> int:
        """A descriptor that turns readable when the journal changes (-1: none, use a timer)."""
        return -1 if self._watch is None else self._watch.fileno()

    def summary(self) -> dict[str, int]:
        """The journal's backlog: bytes written to it and not yet handed out (for status)."""
        waiting = 0
        for tail in (self._active, self._old):
            if tail is not None:
                try:
                    waiting += max(0, os.fstat(tail.fd).st_size - tail.handed)
                except OSError:
                    continue
        return {"backlog_bytes": waiting}

    def _load(self) -> JournalState:
        try:
            with open(self.state_path, "rb") as fh:
                return JournalState.from_bytes(fh.read(STATE_LIMIT))
        except FileNotFoundError:
            return JournalState()
        except ValueError as exc:  # never written by us: reading again costs no line
            log.error("%s: %s; reading the journal from its start", self.state_path, exc)
            return JournalState()

    def _open_tail(self, path: str, role: str) -> _Tail | None:
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if self._rotate_bytes is None:  # written to give its space back (punch)
                try:
                    fd = os.open(path, os.O_RDWR | flags)
                except PermissionError:
                    self._cannot_punch(path, "it is not writable for this user")
                    fd = os.open(path, os.O_RDONLY | flags)
            else:
                fd = os.open(path, os.O_RDONLY | flags)
        except FileNotFoundError:
            return None
        st = os.fstat(fd)
        offset, reason = resume_offset(self._saved, role, st.st_ino, st.st_size)
        if reason is not None:
            log.warning("%s %s", path, reason)
        offset = _past_hole(fd, offset, st.st_size)
        if role == "old":
            self._old_quiet_since = None
        return _Tail(path, fd, st.st_ino, offset, offset)

    # ------------------------------------------------------------ reading

    def wake(self) -> None:
        """Something may have been appended: look at the files at the next ``next_line``."""
        if self._watch is not None:
            self._watch.clear()
        self._look = True

    def next_line(self) -> bytes | None:
        """The next journal line (the rotated file's first), or None when there is none now."""
        while True:
            line = self._pop()
            if line is not None or not self._look:
                return line
            self._look = False
            self._refill()

    def _pop(self) -> bytes | None:
        for tail in (self._old, self._active):
            if tail is not None and tail.lines:
                line, end = tail.lines.popleft()
                # past the last line taken, only empty lines (or skipped bytes) were read
                tail.handed = end if tail.lines else tail.read_to
                return line
        return None

    def _refill(self) -> None:
        if self._active is None:
            self._active = self._open_tail(self.path, "active")
        elif self._rotate_bytes is None:
            self._follow_replacement(self._active)
        for tail in (self._old, self._active):
            if tail is not None and not tail.lines:
                self._read(tail)

    def _read(self, tail: _Tail) -> None:
        data = os.pread(tail.fd, READ_CHUNK, tail.read_to)
        lines, used = frame_lines(data, tail.read_to)
        if used == 0 and len(data) == READ_CHUNK:
            if not tail.skipping:  # one log line for the whole overlong line
                log.error("%s: %d bytes without a line end at offset %d; that line is "
                          "skipped up to its end", tail.path, len(data), tail.read_to)
            tail.skipping = True
            used = len(data)
        elif tail.skipping and lines:
            if not data.startswith(b"\n"):  # else it ended at the chunk's edge: nothing to drop
                lines.pop(0)  # the end of the overlong line
            tail.skipping = False
        tail.read_to += used
        tail.lines.extend(lines)
        if not tail.lines:
            tail.handed = tail.read_to  # only empty lines
        if len(data) == READ_CHUNK:
            self._look = True  # more to read

    # ------------------------------------------------------------ remembering, rotating

    def commit(self) -> None:
        """Everything handed out so far is filed and durable: remember it, then rotate or
        retire files when due. Call only then. A failure (a full disk) is logged once; the
        position is saved at a later commit, and until then a restart reads lines again."""
        try:
            self._save()
            if self._rotate_bytes is None:
                self._punch()
                if self._old is not None:  # replaced under its name: see _follow_replacement
                    self._retire_old()
            elif self._old is not None:
                self._retire_old()
            elif self._active is not None:
                self._rotate()
        except OSError as exc:
            if not self._failing:
                log.error("%s: cannot remember the journal position, will retry: %s",
                          self.state_path, exc)
                self._failing = True
            return
        if self._failing:
            log.info("%s: the journal position is saved again", self.state_path)
            self._failing = False

    def _state(self) -> JournalState:
        return JournalState(None if self._active is None else self._active.position(),
                            None if self._old is None else self._old.position(),
                            None if self._extra is None else self._extra())

    def _save(self) -> None:
        state = self._state()
        if state == self._saved:
            return
        temp = self.state_path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            write_all(fd, state.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, self.state_path)
        fsync_dir(self.folder)
        self._saved = state

    def _read_to_end(self, tail: _Tail) -> bool:
        return not tail.lines and tail.handed == tail.read_to == os.fstat(tail.fd).st_size

    def _punch(self) -> None:
        """Give back the disk space of the sorted part of a file that is never rotated (its
        size stays: the writer appends with O_APPEND; the sorted part reads as zeros)."""
        tail = self._active
        if tail is None or self._punch_warned:
            return
        upto = tail.handed - tail.handed % 4096
        if upto - self._punched < PUNCH_EVERY:
            return
        try:
            punch_hole(tail.fd, self._punched, upto - self._punched)
        except OSError as exc:
            self._cannot_punch(tail.path, exc.strerror or str(exc))
            return
        self._punched = upto

    def _follow_replacement(self, tail: _Tail) -> None:
        """A never-rotated file that another file replaced under its name (someone rotated
        or deleted it; the writer or logrotate made a new one): read both, the old one
        until it stayed quiet for ``grace`` seconds (its writer may go on writing there
        until restarted), the new one from its start."""
        if self._old is not None:
            return  # one replaced file at a time: the next once this one is retired
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return
        if ino == tail.ino:
            return
        log.warning("%s was replaced by another file (rotated or deleted?); reading the old "
                    "one on while it grows, the new one from its start. Restart storescp, "
                    "which writes into the old one until then, and keep log rotation away "
                    "from this file", self.path)
        self._old, self._old_quiet_since = tail, None
        self._active = self._open_tail(self.path, "active")
        self._punched = 0

    def _cannot_punch(self, path: str, why: str) -> None:
        if not self._punch_warned:
            log.warning("%s: cannot give back the space of what is sorted (%s): the file "
                        "grows by about 300 bytes per received file", path, why)
        self._punch_warned = True

    def _rotate(self) -> None:
        tail = self._active
        assert tail is not None
        assert self._rotate_bytes is not None
        if tail.handed < self._rotate_bytes or not self._read_to_end(tail):
            return
        os.rename(self.path, self.old_path)  # writers from now on create a new live file
        self._old, self._active = tail, None
        tail.path = self.old_path
        self._old_quiet_since = None
        self._save()
        log.info("%s: rotated at %d bytes", self.path, tail.handed)

    def _retire_old(self) -> None:
        tail = self._old
        assert tail is not None
        now = self._clock()
        if not self._read_to_end(tail):
            self._old_quiet_since = None
            self._look = True
            return
        if self._old_quiet_since is None:
            self._old_quiet_since = now
        if now - self._old_quiet_since < self._grace:
            self._look = True  # keep looking at it: a late writer may append
            return
        try:  # our own rotated file only: a replaced never-rotated one is someone else's
            if self._rotate_bytes is not None and os.lstat(self.old_path).st_ino == tail.ino:
                os.unlink(self.old_path)
        except FileNotFoundError:
            pass
        os.close(tail.fd)
        self._old = None
        self._save()


def _past_hole(fd: int, offset: int, size: int) -> int:
    """``offset``, or the start of the data after it when it lies in a punched hole."""
    if offset >= size:
        return offset
    try:
        return max(offset, os.lseek(fd, offset, os.SEEK_DATA))
    except OSError:  # ENXIO: only a hole up to the end; EINVAL: no SEEK_DATA here
        return offset


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(2) PUNCH_HOLE|KEEP_SIZE; OSError when the file system cannot."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
