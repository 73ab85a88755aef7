"""Progress of a long run: a tqdm bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TextIO

log = logging.getLogger(__name__)

LOG_EVERY = 5.0  # seconds between progress log lines when there is no terminal


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Counts files done out of ``total`` (None: unknown, e.g. while scanning).

    Use as a context manager. With ``terminal`` a tqdm bar is drawn on ``stream`` and log
    lines printed meanwhile go above it; otherwise one INFO line every ``every`` seconds.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        terminal: bool,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = LOG_EVERY,
    ) -> None:
        self.label = label
        self.total = total
        self.terminal = terminal
        self.stream = stream
        self.clock = clock
        self.every = every
        self.done = 0
        self.started = self.logged = clock()
        self._bar: Any = None
        self._stack = ExitStack()

    def __enter__(self) -> Progress:
        if self.terminal:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = self._stack.enter_context(tqdm(
                total=self.total, desc=self.label, unit=" files", file=self.stream,
                dynamic_ncols=True, smoothing=0.05, mininterval=0.25,
            ))
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        self._bar = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.logged >= self.every:
            self.logged = now
            log.info("%s", self.line(now))

    def rate(self, now: float | None = None) -> float:
        elapsed = (self.clock() if now is None else now) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        """``import: 1200/5000 files (24%), 310 files/s, about 12 s left``."""
        rate = self.rate(now)
        if self.total is None:
            return f"{self.label}: {self.done} files, {rate:.0f} files/s"
        share = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.label}: {self.done}/{self.total} files ({share:.0f}%), {rate:.0f} files/s"
        if rate > 0 and self.done < self.total:
            text += f", about {duration((self.total - self.done) / rate)} left"
        return text
