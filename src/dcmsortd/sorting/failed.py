"""The failed list, ``site/temp/failed.tsv``: files that could not be filed, for re-sending.

One line per failure: time, path, reason, separated by tabs (tabs and line breaks inside a
field become spaces). A line that cannot be appended (the disk is full, the folder is
read-only) waits in memory, at most :data:`MAX_WAITING` of them, and is appended by a later
:meth:`FailedList.flush` once writes work again; the problem is logged once, not per line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable

from dcmsortd.sorting.episode import Episode

log = logging.getLogger(__name__)

MAX_WAITING = 100_000
_SEPARATORS = str.maketrans("\t\n\r", "   ")


class FailedList:
    """Appends failures to the file at ``path``; ``clock`` gives the time of each line."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._waiting: deque[str] = deque(maxlen=MAX_WAITING)
        self._episode = Episode(log)

    def add(self, path: str, reason: str) -> None:
        """List one file that could not be filed, with the reason."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._clock()))
        fields = (stamp, path.translate(_SEPARATORS), reason.translate(_SEPARATORS))
        self._waiting.append("\t".join(fields) + "\n")
        self.flush()

    def waiting(self) -> int:
        """How many lines wait to be appended."""
        return len(self._waiting)

    def flush(self) -> None:
        """Append the waiting lines; when that fails, keep them for the next call."""
        if not self._waiting:
            return
        try:
            self._append()
        except OSError as exc:
            self._episode.failed("%s: cannot append to the failed list, %d line(s) kept to "
                                 "append later: %s", self.path, len(self._waiting),
                                 exc.strerror or exc)
            return
        self._episode.worked("%s: the failed list is written again", self.path)

    def _append(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o666)
        try:
            while self._waiting:
                data = self._waiting[0].encode("utf-8", "surrogateescape")
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # never leave half a line behind
                    raise
                self._waiting.popleft()
        finally:
            os.close(fd)
