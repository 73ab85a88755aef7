"""What happened to each file of a bulk run, counted per outcome and reason, and summarised.

A summary of an import of a million files must stay a screenful: files are counted per
reason (the first clause of the error, paths removed), with one example file per reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from dcmsortd.model.errors import RejectedInput
from dcmsortd.model.notice import Arrival
from dcmsortd.service.runtime import Runtime
from dcmsortd.sorting.processor import Examined, Sorter

SKIPPED = ("ignored", "deleted", "bad", "rejected")
MAX_REASONS = 10  # per group in the summary
UNEXPECTED = "unexpected error (see the log)"

_QUOTED_PATH = re.compile(r""":? ?'/[^']*'""")


def reason(ex: Examined, outcome: str, failure: str | None = None) -> tuple[str, str]:
    """``(key, message)`` for an outcome: key groups files, message is the full text."""
    modality = (ex.instance.modality or "(none)") if ex.instance is not None else ""
    if outcome == "sorted":
        return "", ""
    if failure is not None:
        return _QUOTED_PATH.sub("", failure), failure
    if isinstance(ex.error, RejectedInput):
        return "outside the input roots", str(ex.error)
    if ex.error is not None:
        text = str(ex.error)
        return text.split(": ", 1)[0], text
    text = {
        "ignored": f"modality {modality} is not sorted here",
        "deleted": f"modality {modality} deleted as configured",
        "rejected": f"modality {modality} not deleted: outside the input roots",
        "failed": f"modality {modality} could not be deleted",
    }.get(outcome, outcome)
    return text, text


@dataclass
class Tally:
    """Files per outcome, per reason, with one example (path and message) per reason."""

    counts: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    series: set[tuple[str, str]] = field(default_factory=set)  # (study, series) sorted into

    def add(self, outcome: str, path: str, key: str = "", message: str = "") -> None:
        self.counts[outcome] += 1
        if outcome == "sorted":
            return
        self.reasons.setdefault(outcome, Counter())[key] += 1
        self.examples.setdefault((outcome, key), (path, message))

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def skipped(self) -> int:
        return sum(self.counts[o] for o in SKIPPED)

    def lines(self, sorted_label: str = "sorted", skipped_label: str = "skipped") -> list[str]:
        """The summary: sorted, skipped and why, failed and why (counts per reason)."""
        into = f" into {len(self.series)} series" if self.series else ""
        out = [f"{sorted_label}: {self.counts['sorted']}{into}",
               f"{skipped_label}: {self.skipped}"]
        out += self._reason_lines(SKIPPED)
        out.append(f"failed: {self.failed}")
        out += self._reason_lines(("failed",))
        return out

    def _reason_lines(self, outcomes: tuple[str, ...]) -> list[str]:
        rows = [
            (count, outcome, key)
            for outcome in outcomes
            for key, count in self.reasons.get(outcome, Counter()).items()
        ]
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))
        out = []
        for count, outcome, key in rows[:MAX_REASONS]:
            path, message = self.examples[(outcome, key)]
            label = key if outcome == "failed" else f"{outcome}: {key}"
            out.append(f"  {count:>8}  {label}  (e.g. {path}: {message})")
        if len(rows) > MAX_REASONS:
            rest = sum(r[0] for r in rows[MAX_REASONS:])
            out.append(f"  {rest:>8}  for {len(rows) - MAX_REASONS} other reason(s), see the log")
        return out


@dataclass
class _NotingSorter(Sorter):
    """The runtime's sorter, remembering why the last file went the way it did."""

    last: tuple[str, str, str] | None = None  # (path, key, message)
    series: set[tuple[str, str]] = field(default_factory=set)
    _failure: str | None = None

    def handle(self, ex: Examined) -> str:
        self.last, self._failure = None, None
        outcome = super().handle(ex)
        key, message = reason(ex, outcome, self._failure)
        self.last = (ex.arrival.path, key, message)
        if outcome == "sorted" and ex.instance is not None:
            self.series.add((ex.instance.study_uid, ex.instance.series_uid))
        return outcome

    def report_failure(self, path: str, reason: str) -> None:
        self._failure = reason
        super().report_failure(path, reason)


@contextmanager
def tallying(
    runtime: Runtime, tally: Tally, on_file: Callable[[], None] | None = None
) -> Iterator[Tally]:
    """Count every file ``runtime.pipeline`` handles into ``tally`` while in the block.

    ``on_file()`` is called after each file (progress). The runtime's sorter and callback
    are restored on exit, so the daemon's runtime can be lent to a catch-up scan.
    """
    original, before = runtime.sorter, runtime.pipeline.on_done
    noting = _NotingSorter(**{f.name: getattr(original, f.name) for f in fields(Sorter)},
                           series=tally.series)

    def done(arrival: Arrival, outcome: str) -> None:
        last = noting.last
        if last is not None and last[0] == arrival.path:
            tally.add(outcome, *last)
        else:  # the sorter raised; the pipeline logged it
            tally.add(outcome, arrival.path, UNEXPECTED, UNEXPECTED)
        noting.last = None
        if before is not None:  # the daemon counts what its catch-up sorts, too
            before(arrival, outcome)
        if on_file is not None:
            on_file()

    runtime.sorter = runtime.pipeline.sorter = noting
    runtime.pipeline.on_done = done
    try:
        yield tally
    finally:
        runtime.sorter = runtime.pipeline.sorter = original
        runtime.pipeline.on_done = before
