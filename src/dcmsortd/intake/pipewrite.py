"""Writing lines into the named pipe: one atomic write each, never creating anything.

The writer side of ``pipe`` (``dcmsortd send`` and the notifier), kept apart so that
``dcmsortd notify``, started per received file, imports only this.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections.abc import Iterable

from dcmsortd.model.errors import DaemonError

StrPath = str | os.PathLike[str]

PIPE_BUF = select.PIPE_BUF
"""Writes up to this many bytes into a pipe are atomic: never interleaved with other writers."""


def kind_of(mode: int) -> str:
    kinds = [
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "device or special file")


def same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def frame(line: str | bytes) -> bytes | None:
    """The bytes to write for ``line`` (one trailing newline added), or None when the line
    cannot go through the pipe as one atomic write (longer than PIPE_BUF, or holding a
    newline inside)."""
    data = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
    data = data.removesuffix(b"\n")
    if b"\n" in data or len(data) + 1 > PIPE_BUF:
        return None
    return data + b"\n"


def open_writer(path: StrPath) -> int:
    """Open the FIFO at ``path`` for non-blocking writes, never creating anything.

    Raises ``DaemonError("no daemon listens on <path> ...")`` when the path is missing, is not
    a FIFO (symbolic links are not followed) or has no reader.
    """
    where = os.fspath(path)
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        raise DaemonError(f"no daemon listens on {where} (no such pipe)") from None
    if not stat.S_ISFIFO(found.st_mode):
        raise DaemonError(f"no daemon listens on {where} (it is a {kind_of(found.st_mode)})")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise DaemonError(f"no daemon listens on {where}") from None
        raise DaemonError(f"no daemon listens on {where} ({exc.strerror})") from None
    if not same_inode(os.fstat(fd), found):
        os.close(fd)
        raise DaemonError(f"no daemon listens on {where} (it changed while we opened it)")
    return fd


def write_atomic(fd: int, data: bytes, timeout: float) -> bool:
    """Write ``data`` (at most PIPE_BUF bytes) in one write; while the pipe is full, wait for
    room up to ``timeout`` seconds. False on timeout; BrokenPipeError when the reader left."""
    if len(data) > PIPE_BUF:
        raise ValueError(f"{len(data)} bytes cannot be written atomically (PIPE_BUF {PIPE_BUF})")
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while True:
        try:
            os.write(fd, data)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(max(1, round(left * 1000)))


def write_lines(path: StrPath, lines: Iterable[str | bytes], timeout: float = 5.0) -> None:
    """Write each line into the FIFO with one atomic write (``dcmsortd send``): strict.

    Every line is checked before anything is written. ``DaemonError`` when a line is too
    long or holds a newline, when no daemon listens, or when the pipe stays full ``timeout``
    seconds.
    """
    where = os.fspath(path)
    payloads: list[bytes] = []
    for line in lines:
        payload = frame(line)
        if payload is None:
            shown = line[:80]
            raise DaemonError(
                f"line cannot be sent in one piece (newline inside or over {PIPE_BUF - 1} "
                f"bytes): {shown!r}"
            )
        payloads.append(payload)
    fd = open_writer(path)
    try:
        for payload in payloads:  # the limit is per write: a daemon that reads may take long
            if not write_atomic(fd, payload, timeout):
                raise DaemonError(f"the daemon on {where} does not read: pipe full for {timeout} s")
    except BrokenPipeError:
        raise DaemonError(f"no daemon listens on {where} (it went away)") from None
    finally:
        os.close(fd)
