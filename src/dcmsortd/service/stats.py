"""What the daemon did since it started: counts, rate and latency over the last minute.

Pure: the single writer calls ``noticed``/``done`` with the time, and ``snapshot(now)`` turns
it into plain numbers (the status file and the metrics read those). Bounded memory whatever
the rate: the last minute is 60 one-second slots, each a count and a sparse histogram of
latencies in buckets 9 % wide, so a quantile is exact to within one bucket.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from dcmsortd.model.notice import Arrival

WINDOW = 60  # seconds of the rolling window (rate, latency quantiles)
FAILED = ("bad", "rejected", "failed")  # outcomes that are errors (see Sorter.handle)
# fine buckets of the rolling window: 100 us * 2**(i/8), i.e. 9 % wide
_FINE_BASE, _FINE_STEP = 1e-4, 2 ** (1 / 8)
# the exported histogram's upper bounds, seconds (Prometheus style, cumulative)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0)
_MAX_PENDING = 100_000  # notices waiting for their outcome, at most (an in-flight bound)


def _fine(seconds: float) -> int:
    if seconds <= _FINE_BASE:
        return 0
    return 1 + int(math.log(seconds / _FINE_BASE, _FINE_STEP))


def _fine_upper(index: int) -> float:
    """The upper edge of fine bucket ``index``: what a quantile in it is reported as."""
    return round(float(_FINE_BASE * _FINE_STEP ** index), 6)


@dataclass
class _Slot:
    second: int
    sorted: int = 0
    latencies: Counter[int] = field(default_factory=Counter)


def quantile(fine: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a fine histogram, as its bucket's upper edge."""
    total = sum(fine.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for index in sorted(fine):
        seen += fine[index]
        if seen >= rank:
            return _fine_upper(index)
    return _fine_upper(max(fine))  # not reached


@dataclass
class Stats:
    """Counters of one daemon run, fed by the single writer. Times are wall-clock seconds."""

    started: float
    outcomes: Counter[str] = field(default_factory=Counter)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    last_error: tuple[float, str] | None = None
    _slots: deque[_Slot] = field(default_factory=deque)
    _pending: dict[Arrival, deque[float]] = field(default_factory=dict)

    def noticed(self, arrival: Arrival, now: float) -> None:
        """A notice was read from the pipe or the spool at ``now`` (its arrival time)."""
        if len(self._pending) >= _MAX_PENDING:
            self._pending.clear()  # outcomes lost somewhere: never grow without bound
        self._pending.setdefault(arrival, deque()).append(now)

    def done(self, arrival: Arrival, outcome: str, now: float) -> None:
        """The file of ``arrival`` was handled with ``outcome`` at ``now``."""
        self.outcomes[outcome] += 1
        slot = self._slot(now)
        waiting = self._pending.get(arrival)
        arrived = None
        if waiting:
            arrived = waiting.popleft()
            if not waiting:
                del self._pending[arrival]
        if outcome != "sorted":
            return
        slot.sorted += 1
        if arrived is not None:  # files found by the catch-up scan have no arrival time
            latency = max(0.0, now - arrived)
            slot.latencies[_fine(latency)] += 1
            self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_sum += latency

    def error(self, message: str, now: float) -> None:
        self.last_error = (now, message)

    def _slot(self, now: float) -> _Slot:
        second = int(now)
        if not self._slots or self._slots[-1].second != second:
            self._slots.append(_Slot(second))
            self._trim(second)
        return self._slots[-1]

    def _trim(self, second: int) -> None:
        while self._slots and self._slots[0].second <= second - WINDOW:
            self._slots.popleft()

    @property
    def sorted(self) -> int:
        return self.outcomes["sorted"]

    @property
    def failed(self) -> int:
        return sum(self.outcomes[o] for o in FAILED)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Plain numbers (JSON-ready) describing the run up to ``now``."""
        self._trim(int(now))
        fine: Counter[int] = Counter()
        recent = 0
        for slot in self._slots:
            fine.update(slot.latencies)
            recent += slot.sorted
        span = max(1.0, min(float(WINDOW), now - self.started))
        error = None
        if self.last_error is not None:
            error = {"time": self.last_error[0], "message": self.last_error[1]}
        return {
            "uptime_s": round(max(0.0, now - self.started), 3),
            "files_sorted": self.sorted,
            "files_failed": self.failed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "rate_per_s": round(recent / span, 3),
            "latency_median_s": quantile(fine, 0.5),
            "latency_p99_s": quantile(fine, 0.99),
            "latency_samples": sum(fine.values()),
            "latency_buckets": list(self.latency_buckets),
            "latency_sum_s": round(self.latency_sum, 6),
            "last_error": error,
        }


def duration(seconds: float) -> str:
    """``3725`` -> ``1 h 02 min 05 s`` (for people, not machines)."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h {minutes:02d} min"
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"


def summary(stats: Stats, now: float) -> str:
    """The stop line's words: what the run did."""
    others = ", ".join(f"{stats.outcomes[o]} {o}" for o in sorted(stats.outcomes)
                       if o != "sorted" and o not in FAILED)
    failed = ", ".join(f"{stats.outcomes[o]} {o}" for o in FAILED if stats.outcomes[o])
    text = f"{stats.sorted} file(s) sorted, {stats.failed} failed"
    if failed:
        text += f" ({failed})"
    if others:
        text += f", {others}"
    return f"{text}, up {duration(now - stats.started)}"
