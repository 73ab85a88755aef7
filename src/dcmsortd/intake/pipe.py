"""The named pipe: place it safely, read lines from it, write lines into it.

``prepare_fifo`` creates (or safely reuses) the FIFO the daemon listens on; ``PipeReader``
turns it into an endless stream of lines and idle ticks; the writer side (``open_writer``,
``frame``, ``write_atomic``, ``write_lines``) lives in ``pipewrite`` and is re-exported
here. Lines are split by the pure ``LineSplitter``, so the splitting is tested on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from dcmsortd.intake.pipewrite import (  # the writer side, also reachable from here
    PIPE_BUF,
    StrPath,
    frame,
    kind_of,
    open_writer,
    same_inode,
    write_atomic,
    write_lines,
)
from dcmsortd.model.errors import DaemonError
from dcmsortd.model.notice import MAX_LINE_BYTES

__all__ = ["PIPE_BUF", "LineSource", "LineSplitter", "LongLine", "PipeReader", "StrPath",
           "frame", "open_writer", "prepare_fifo", "write_atomic", "write_lines"]

log = logging.getLogger(__name__)

MAX_STRAY_BYTES = 64 * 1024 * 1024
"""A stray regular file at the pipe path larger than this is refused, not read."""
LONG_LINE_HEAD = 120
_READ_CHUNK = 65536
_MAX_DRAIN_BYTES = 1024 * 1024
_ATTEMPTS = 5


# ---------------------------------------------------------------- placing the FIFO


def prepare_fifo(path: StrPath, mode: int = 0o620) -> list[str]:
    """Make ``path`` a FIFO of ours with exactly ``mode``; return the lines of a stray file.

    - missing: created with ``mode`` (applied after mkfifo, so the umask does not matter);
    - a FIFO of ours (stale, from a crash): reused, mode re-applied; writers blocked on it
      since then are served as soon as a reader opens it;
    - a regular file of ours (``echo > pipe`` while no daemon ran): read (at most
      ``MAX_STRAY_BYTES``), removed and replaced by the FIFO; its non-empty lines are
      returned (decoded UTF-8 with ``surrogateescape``) for the caller to process;
    - a symbolic link, anything owned by another user, a directory or any other type:
      ``DaemonError``, and nothing at the path is touched.
    """
    try:
        return _prepare(path, mode)
    except OSError as exc:
        raise DaemonError(f"{os.fspath(path)}: cannot prepare the pipe: {exc.strerror}") from exc


def _prepare(path: StrPath, mode: int) -> list[str]:
    strays: list[str] = []
    for _ in range(_ATTEMPTS):
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            if _make_fifo(path, mode):
                return strays
            continue  # something appeared in between: look again
        _refuse_unsafe(path, found)
        if stat.S_ISFIFO(found.st_mode):
            _set_mode(path, found, mode)
            return strays
        strays += _take_stray(path, found)
    raise DaemonError(f"{os.fspath(path)}: a file keeps reappearing here; cannot place the pipe")


def _refuse_unsafe(path: StrPath, found: os.stat_result) -> None:
    where = os.fspath(path)
    if stat.S_ISLNK(found.st_mode):
        raise DaemonError(f"{where} is a symbolic link; refusing to use it as the pipe")
    if found.st_uid != os.geteuid():
        raise DaemonError(
            f"{where} belongs to uid {found.st_uid}, not to us (uid {os.geteuid()}); "
            "refusing to use it as the pipe"
        )
    if not (stat.S_ISFIFO(found.st_mode) or stat.S_ISREG(found.st_mode)):
        raise DaemonError(f"{where} is a {kind_of(found.st_mode)}, not a pipe; "
                          "refusing to touch it")


def _make_fifo(path: StrPath, mode: int) -> bool:
    try:
        os.mkfifo(path, mode)
    except FileExistsError:
        return False
    _set_mode(path, os.lstat(path), mode)
    log.info("created the pipe %s (mode %o)", os.fspath(path), mode)
    return True


def _set_mode(path: StrPath, expected: os.stat_result, mode: int) -> None:
    """chmod the inode we inspected, not whatever the path names by now."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not same_inode(os.fstat(fd), expected):
            raise DaemonError(f"{os.fspath(path)} changed while we prepared it; refusing it")
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)
        except FileNotFoundError:  # no /proc: the path was checked a moment ago
            os.chmod(path, mode)
    finally:
        os.close(fd)


def _take_stray(path: StrPath, found: os.stat_result) -> list[str]:
    where = os.fspath(path)
    if found.st_size > MAX_STRAY_BYTES:
        raise DaemonError(
            f"{where} is a regular file of {found.st_size} bytes (more than {MAX_STRAY_BYTES}) "
            "where the pipe belongs; move it away by hand"
        )
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not same_inode(os.fstat(fd), found):
            raise DaemonError(f"{where} changed while we read it; refusing it")
        data = _read_upto(fd, MAX_STRAY_BYTES)
        os.unlink(path)
        data += _read_upto(fd, MAX_STRAY_BYTES - len(data))  # written while we read
    finally:
        os.close(fd)
    lines = [line for line in data.decode("utf-8", "surrogateescape").split("\n") if line]
    log.warning(
        "%s was a regular file holding %d line(s), written while no daemon listened; "
        "replacing it by the pipe, its lines are processed",
        where,
        len(lines),
    )
    return lines


def _read_upto(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    while limit > 0 and (chunk := os.read(fd, min(limit, _READ_CHUNK))):
        parts.append(chunk)
        limit -= len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------- reading lines


@dataclass(frozen=True)
class LongLine:
    """Stands in for a line longer than ``limit`` bytes: its first bytes only (``head``,
    at most LONG_LINE_HEAD bytes, the same however the line arrived in pieces).

    The reader yields one LongLine per over-long line, drops the rest of that line and
    resumes at the next newline, so the caller logs "line too long" once and goes on.
    """

    head: bytes
    limit: int


Line = bytes | LongLine


class LineSource(Protocol):
    """Lines from elsewhere read beside the pipe (the arrivals journal's follower)."""

    def fileno(self) -> int:
        """Readable when ``next_line`` may have more (-1: none; looked at every idle interval)."""

    def wake(self) -> None:
        """The descriptor turned readable, or an idle tick passed: look for new lines."""

    def next_line(self) -> bytes | None:
        """The next line, or None when there is none now."""


class LineSplitter:
    """Pure: turns chunks of bytes into lines (newline removed, ``\\r`` left to the parser).

    Memory stays bounded: a partial line longer than ``limit`` is reported as a LongLine
    at once and its remaining bytes are discarded up to the next newline.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._head = min(limit, LONG_LINE_HEAD)
        self._partial = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Line]:
        """Return the lines that ``data`` completes, in order."""
        *complete, rest = data.split(b"\n")
        out: list[Line] = []
        for piece in complete:
            self._partial += piece
            out += self._finish()
        self._partial += rest
        if len(self._partial) > self._limit:
            if not self._skipping:
                out.append(LongLine(bytes(self._partial[: self._head]), self._limit))
                self._skipping = True
            self._partial.clear()
        return out

    def rest(self) -> list[Line]:
        """The unterminated tail (a writer that sent no newline), as a last line, if any."""
        return self._finish() if self._partial else []

    def _finish(self) -> list[Line]:
        line = bytes(self._partial)
        self._partial.clear()
        if self._skipping:
            self._skipping = False
            return []
        if len(line) > self._limit:
            return [LongLine(line[: self._head], self._limit)]
        return [line]


class PipeReader:
    """Reads lines from the FIFO at ``path`` forever, without busy-waiting.

    Iterating yields ``bytes`` lines (newline removed; a CRLF line keeps its ``\\r``, which
    the line parser strips), ``LongLine`` for a line over ``limit`` bytes, and ``None`` each
    time ``idle_interval`` seconds pass with nothing arriving, so the caller can flush.
    The reader holds a write end of its own, so writers opening and closing the pipe never
    cause end-of-file. A ``source`` (the arrivals journal) is read beside the pipe: its lines
    and the pipe's take turns. ``stop()`` (safe in a signal handler or another thread) ends the
    iteration before the next line; then ``pending()`` returns what is still in the pipe.

    >>> with PipeReader("/tmp/.processSingleFilePipe") as reader:  # doctest: +SKIP
    ...     for item in reader:
    ...         handle(item)
    """

    def __init__(
        self, path: StrPath, *, idle_interval: float = 0.2, limit: int = MAX_LINE_BYTES,
        source: LineSource | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.source = source
        self._idle_ms = max(1, round(idle_interval * 1000))
        self._splitter = LineSplitter(limit)
        self._ready: deque[Line] = deque()
        self._stopping = False
        self._fds: list[int] = []  # read end, our own write end, wake-up pipe (read, write)
        self._look_at = 0.0  # when the source is next told to look for new lines

    def open(self) -> PipeReader:
        """Open the FIFO (``DaemonError`` when the path is not a FIFO) and the wake-up pipe."""
        if self._fds:
            return self
        try:
            found = os.lstat(self.path)
            if not stat.S_ISFIFO(found.st_mode):
                raise DaemonError(f"{self.path} is a {kind_of(found.st_mode)}, not a pipe")
            self._fds.append(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
            self._fds.append(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
            if not all(same_inode(os.fstat(fd), found) for fd in self._fds):
                raise DaemonError(f"{self.path} changed while we opened it")
            self._fds.extend(os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as exc:
            self.close()
            raise DaemonError(f"{self.path}: cannot open the pipe: {exc.strerror}") from exc
        except DaemonError:
            self.close()
            raise
        return self

    def __enter__(self) -> PipeReader:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Line | None]:
        self.open()
        poller = select.poll()
        poller.register(self._fds[0], select.POLLIN)
        poller.register(self._fds[2], select.POLLIN)
        watch = -1 if self.source is None else self.source.fileno()
        if watch >= 0:
            poller.register(watch, select.POLLIN)
        while not self._stopping:
            taken = False
            if self._ready:
                yield self._ready.popleft()
                taken = True
            if (line := self._from_source()) is not None:
                yield line
                taken = True
            if taken:
                continue
            events = poller.poll(self._idle_ms)
            for fd, _ in events:
                if fd == self._fds[0]:
                    self._read_once()
                elif fd == watch:
                    self._look_at = 0.0
            if not events:
                self._look_at = 0.0  # an idle interval passed: look (all there is without a watch)
                yield self._from_source()  # a line, or None: an idle tick

    def _from_source(self) -> bytes | None:
        """The source's next line. It is told to look when its descriptor turned readable,
        when the pipe was idle for an interval, and every interval while the pipe is busy
        (so neither starves the other; without a descriptor that is all there is)."""
        source = self.source
        if source is None:
            return None
        now = time.monotonic()
        if now >= self._look_at:
            source.wake()
            self._look_at = now + self._idle_ms / 1000
        return source.next_line()

    def stop(self) -> None:
        """Make the iteration end before its next item. Async-signal-safe enough for Python."""
        self._stopping = True
        if len(self._fds) == 4:
            with contextlib.suppress(OSError):  # full: a wake-up is already pending
                os.write(self._fds[3], b"\0")

    def pending(self) -> list[Line]:
        """After ``stop()``: the lines read but not yielded, plus what is still in the pipe.

        Unlink the pipe path first so no new writer arrives; the caller spools these lines.
        """
        budget = _MAX_DRAIN_BYTES
        while self._fds and budget > 0 and (got := self._read_once()):
            budget -= got
        lines = list(self._ready) + self._splitter.rest()
        self._ready.clear()
        return lines

    def close(self) -> None:
        """Close every descriptor (idempotent). Data still in the pipe is lost: see pending()."""
        while self._fds:
            os.close(self._fds.pop())

    def _read_once(self) -> int:
        """Read one chunk if there is one; return how many bytes were read."""
        try:
            data = os.read(self._fds[0], _READ_CHUNK)
        except BlockingIOError:
            return 0
        self._ready.extend(self._splitter.feed(data))
        return len(data)
