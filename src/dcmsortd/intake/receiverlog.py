"""Follow storescp's receiver log (see ``dcmtklog``) as a source of arrival lines, beside the
arrivals journal; ``Sources`` joins both into the one source the pipe reader polls.

The log is never renamed (storescp keeps it open): the follower gives back the space of
what is sorted instead. Files a storescp process announced but that are not yet known to
be written (``StorescpLog``'s pending ones) are saved with the position at every commit,
so a restart announces them; what was handed out and filed is not read again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from dcmsortd.intake.dcmtklog import SETTLE, StorescpLog
from dcmsortd.intake.follower import Follower

log = logging.getLogger(__name__)


class Source(Protocol):
    def fileno(self) -> int: ...
    def wake(self) -> None: ...
    def next_line(self) -> bytes | None: ...
    def commit(self) -> None: ...
    def summary(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class ReceiverLog:
    """The receiver log ``<folder>/<name>``, read into arrival lines."""

    def __init__(self, folder: str, name: str, *, watch: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 settle: float = SETTLE) -> None:
        self._clock = clock
        self._lines = StorescpLog(settle=settle, warn=log.warning)
        self._follower = Follower(folder, name, rotate_bytes=None, watch=watch, clock=clock,
                                  extra=self._lines.snapshot)
        self._ready: deque[bytes] = deque()
        self.path = self._follower.path

    def open(self) -> ReceiverLog:
        self._follower.open()
        self._lines.restore(self._follower.saved_extra, self._clock())
        return self

    def fileno(self) -> int:
        return self._follower.fileno()

    def wake(self) -> None:
        self._follower.wake()

    def next_line(self) -> bytes | None:
        while not self._ready:
            raw = self._follower.next_line()
            if raw is None:
                self._ready.extend(self._lines.due(self._clock(), _look))
                break
            self._ready.extend(self._lines.feed(raw, self._clock()))
        return self._ready.popleft() if self._ready else None

    def commit(self) -> None:
        """Everything handed out is filed: save the position and the pending files."""
        if not self._ready:  # else lines read are not yet handed out: save them next time
            self._follower.commit()

    def summary(self) -> dict[str, int]:
        return {"backlog_bytes": self._follower.summary()["backlog_bytes"],
                "receiver_pending": self._lines.pending()}

    def close(self) -> None:
        self._follower.close()


def _look(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Sources:
    """Several line sources as one: the first's descriptor (a watch of the folder they
    share), every source told to look, lines taken from each in turn."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self._sources = list(sources)
        self._turn = 0

    def fileno(self) -> int:
        return self._sources[0].fileno()

    def wake(self) -> None:
        for source in self._sources:
            source.wake()

    def next_line(self) -> bytes | None:
        for _ in range(len(self._sources)):
            source = self._sources[self._turn]
            self._turn = (self._turn + 1) % len(self._sources)
            line = source.next_line()
            if line is not None:
                return line
        return None

    def commit(self) -> None:
        for source in self._sources:
            source.commit()

    def summary(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for source in self._sources:
            for key, value in source.summary().items():
                total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        for source in self._sources:
            source.close()
