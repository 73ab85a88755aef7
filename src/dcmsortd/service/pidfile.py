"""The pid file: one daemon per project, proven by an flock held as long as the daemon lives.

The lock, not the pid written in the file, says whether a daemon runs: a file left by a
crash (or by a killed daemon) is unlocked, so it is detected as stale and replaced, and a
recycled pid can never be mistaken for a live daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from dcmsortd.model.errors import DaemonError

log = logging.getLogger(__name__)

_ATTEMPTS = 5
_PID_WAIT = 1.0  # a locker writes its pid right after locking: how long is_running waits for it
_HELD: dict[int, PidFile] = {}  # lock fd -> the pid file it holds, in this process


def _not_in_children() -> None:
    """After a fork, in the child: close its copies of the lock fds (the lock stays with
    the parent's). A worker forked from the daemon would otherwise hold the lock after
    the daemon died, until it ended, and ``status`` would still see a daemon."""
    for fd, pid_file in list(_HELD.items()):
        pid_file._fd = None
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_not_in_children)


class PidFile:
    """The pid file at ``path``, locked by this process between ``acquire`` and ``release``.

    >>> with PidFile(Path.home() / ".pids/processSingleFile.pid"):  # doctest: +SKIP
    ...     serve()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> PidFile:
        """Lock the file (creating it and its folders) and write our pid into it.

        ``DaemonError`` when another live process holds it.
        """
        if self._fd is not None:
            raise DaemonError(f"{self.path} is already held by this process")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._lock()
        except OSError as exc:
            raise DaemonError(f"{self.path}: cannot take the pid file: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise DaemonError(f"{self.path}: cannot write the pid file: {exc.strerror}") from exc
        self._fd = fd
        _HELD[fd] = self
        return self

    def release(self) -> None:
        """Remove the file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.pop(fd, None)
        try:
            if _names(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> PidFile:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _lock(self) -> int:
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = read_pid(self.path)
                raise DaemonError(
                    f"dcmsortd for this project already runs (pid {pid}, pid file {self.path})"
                ) from None
            if _names(fd, self.path):
                return fd
            os.close(fd)  # a daemon removed the file while we locked it: take the new one
        raise DaemonError(f"{self.path}: the pid file keeps being replaced; cannot lock it")


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid written in the file, or None when it is missing, empty or not a pid."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_running(path: str | os.PathLike[str]) -> int | None:
    """The pid of the daemon holding the pid file's lock, or None when no process holds it.

    Probes with a non-blocking shared lock, released at once.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DaemonError(f"{os.fspath(path)}: cannot read the pid file: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_pid(path)
    finally:
        os.close(fd)
    return None


def _holder_pid(path: str | os.PathLike[str]) -> int:
    deadline = time.monotonic() + _PID_WAIT
    while (pid := read_pid(path)) is None:
        if time.monotonic() > deadline:
            raise DaemonError(f"{os.fspath(path)} is locked but holds no pid")
        time.sleep(0.02)
    return pid
