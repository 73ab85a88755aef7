"""A durable spool folder: one small file per notification that could not go through the pipe.

Each entry is written atomically (a temporary name in the same folder, fsync, rename, fsync of
the folder), so a reader sees a whole entry or none. Entry names sort in arrival order:
``<time_ns:020d>-<pid:010d>-<seq:012d>.line``. Many processes (storescp ``--fork`` runs one
notifier per file) write at once without any lock: each writes its own uniquely named file.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 1024 * 1024
"""``read`` returns at most this much of an entry (a valid line is far shorter)."""
_TEMP_PREFIX = ".tmp-"
_ENTRY_NAME = re.compile(r"\d{20}-\d{10}-\d{12}\.line")
# Unique within a process; the pid in the name makes names unique across processes.
_SEQUENCE = itertools.count()


class Spool:
    """The spool folder ``directory`` (created on the first ``put``).

    ``clock`` gives the nanoseconds that lead each entry name (wall clock by default).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock

    def put(self, line: str) -> Path:
        """Store ``line`` durably as a new entry and return its path."""
        name = f"{self._clock():020d}-{os.getpid():010d}-{next(_SEQUENCE):012d}.line"
        temp = self.directory / f"{_TEMP_PREFIX}{name}"
        data = line.encode("utf-8", "surrogateescape") + b"\n"
        try:
            fd = _create(temp)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.directory.parent)
            fd = _create(temp)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        entry = self.directory / name
        os.rename(temp, entry)
        fsync_dir(self.directory)
        return entry

    def entries(self) -> list[Path]:
        """The complete entries, oldest first (temporary files are not entries)."""
        try:
            with os.scandir(self.directory) as found:
                names = sorted(e.name for e in found if _ENTRY_NAME.fullmatch(e.name))
        except FileNotFoundError:
            return []
        return [self.directory / name for name in names]

    def count(self) -> int:
        """How many complete entries wait (not sorted: cheap on a large backlog)."""
        try:
            with os.scandir(self.directory) as found:
                return sum(1 for e in found if _ENTRY_NAME.fullmatch(e.name))
        except FileNotFoundError:
            return 0

    def read(self, entry: Path) -> str:
        """The line an entry holds (its trailing newline removed; invalid UTF-8 kept as
        surrogate escapes, so ``line.encode("utf-8", "surrogateescape")`` gives the bytes)."""
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_ENTRY_BYTES)
        finally:
            os.close(fd)
        return data.decode("utf-8", "surrogateescape").removesuffix("\n")

    def remove(self, entry: Path) -> None:
        """Drop an entry once its outputs are durable; an entry already gone is fine."""
        entry.unlink(missing_ok=True)

    def clean_temp(self, max_age: float = 60.0, now: float | None = None) -> list[Path]:
        """Remove temporary files older than ``max_age`` seconds (left by crashed writers).

        Younger ones may belong to a writer at work and stay. Returns what was removed.
        """
        limit = (time.time() if now is None else now) - max_age
        removed: list[Path] = []
        try:
            with os.scandir(self.directory) as found:
                temps = [e for e in found if e.name.startswith(_TEMP_PREFIX)]
        except FileNotFoundError:
            return removed
        for temp in temps:
            try:
                if temp.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(temp.path)
                    removed.append(Path(temp.path))
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d leftover temporary file(s) from %s", len(removed), self.directory)
        return removed


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may take less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
