"""Bulk runs: ``dcmsortd import`` of existing files and the catch-up scan of the input roots.

Both feed files through the same pipeline as the daemon (so the trees and records are the
same), in a deterministic order, announced as ``unknown,unknown,unknown,<path>``. A
catch-up reads no header of a file the processed-files index already holds with the same
size and mtime, so it is cheap on an archive that is already sorted.

Either can run while the daemon runs for the same data folder: links are idempotent, the
store merges series states written by another process under a lock, and the index is
SQLite. Neither writes the daemon's heartbeat (the daemon's start-up catch-up window).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from dcmsortd.batch import dryrun
from dcmsortd.batch.progress import Progress, duration
from dcmsortd.batch.tally import Tally, tallying
from dcmsortd.batch.walk import (
    FileEntry,
    WalkStats,
    arrival,
    chosen_files,
    collect,
    count,
    distinct_tops,
    output_folders,
    parse_since,
    walk,
)
from dcmsortd.rules.engine import RuleSet, load_rules, log_warnings
from dcmsortd.service.config import Settings
from dcmsortd.service.runtime import Runtime, build, heartbeat_path

log = logging.getLogger(__name__)

START_MARGIN = 300.0  # a start-up catch-up looks back this far before the last heartbeat
FLUSH_EVERY = 0.1  # seconds between writes of due records (downstream readers poll them)
COMMIT_EVERY = 10.0  # seconds between full flushes, which make the index durable
HOLD_FILES = 100_000  # files to sort a catch-up lists in memory (~27 MB); more: two walks


@dataclass
class Report:
    """What a bulk run found, left out and did."""

    label: str
    roots: list[str]
    walk: WalkStats = field(default_factory=WalkStats)
    tally: Tally = field(default_factory=Tally)
    known: int = 0  # in the index with the same size and mtime: header not read
    older: int = 0  # modified before ``since``: not read
    since: float | None = None
    seconds: float = 0.0
    unwritten: int = 0  # series records still not written at the end

    @property
    def examined(self) -> int:
        return self.tally.done

    @property
    def ok(self) -> bool:
        return not (self.tally.failed or self.walk.errors or self.unwritten)

    def lines(self) -> list[str]:
        rate = self.examined / self.seconds if self.seconds > 0 else 0.0
        head = f"{self.label} of {', '.join(self.roots)}"
        if self.since is not None:
            when = datetime.fromtimestamp(self.since)
            head += f" (files modified since {when:%Y-%m-%d %H:%M:%S})"
        out = [f"{head}: {self.walk.files} file(s) found"]
        if self.known or self.older:
            out.append(f"not read: {self.known} already handled (same size and mtime), "
                       f"{self.older} modified earlier")
        out.append(f"examined: {self.examined} in {duration(self.seconds)} ({rate:.0f} files/s)")
        out += self.tally.lines()
        if self.unwritten:
            out.append(f"series records not written: {self.unwritten} (see the errors above)")
        out += self.walk.lines()
        return out


def sort_files(
    runtime: Runtime, files: Iterable[FileEntry], total: int, label: str, terminal: bool,
    stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
) -> Tally:
    """Feed ``files`` (``total`` of them) through the runtime's pipeline, in order.

    Everything fed is on disk on return. Due records are written as the daemon writes
    them. ``stop()`` true ends the run early (the daemon was asked to stop).
    """
    tally = Tally()
    with Progress(label, total, terminal, clock=clock) as progress, \
            tallying(runtime, tally, progress.advance):
        flushed = committed = clock()
        for entry in files:
            if stop():
                log.warning("%s: interrupted after %d of %d file(s)", label, tally.done, total)
                break
            runtime.pipeline.feed(arrival(entry.path))
            now = clock()
            if now - flushed >= FLUSH_EVERY:
                everything = now - committed >= COMMIT_EVERY
                runtime.flush(everything)
                flushed, committed = now, now if everything else committed
        runtime.flush(everything=True)
    return tally


def open_runtime(settings: Settings, rules: RuleSet, extra_roots: Sequence[str] = (),
                 events: bool = False) -> Runtime:
    """A runtime for a bulk run that may read files under ``extra_roots`` too.

    Paths named on the command line are trusted for reading; files of other modalities are
    still deleted (``other_modalities: delete``) only inside the configured input roots.
    ``events``: issue series and study completion events (``import --events``).
    """
    roots = tuple(dict.fromkeys(settings.roots() + tuple(extra_roots)))
    runtime = build(replace(settings, input_roots=roots), rules, heartbeat=False,
                    fork_workers=True, events="import" if events else "")
    runtime.sorter.roots = settings.roots()
    return runtime


def import_paths(runtime: Runtime, paths: Sequence[str], terminal: bool = False) -> Report:
    """Sort every file in or under ``paths`` (sorted order), whether handled before or not."""
    started = time.monotonic()
    report = Report("import", distinct_tops(paths))
    skip = output_folders(runtime.settings.site)
    total = count(report.roots, skip, terminal)
    # every file is sorted, whatever its size and time (those come with its examination)
    files = walk(report.roots, skip, report.walk, lstat=False)
    report.tally = sort_files(runtime, files, total, "import", terminal)
    report.seconds = time.monotonic() - started
    return report


def catch_up(
    runtime: Runtime, roots: Sequence[str], since: float | None, terminal: bool = False,
    label: str = "catch-up", stop: Callable[[], bool] = lambda: False,
    hold: int = HOLD_FILES,
) -> Report:
    """Sort the files under ``roots`` (modified since ``since``) the index does not hold.

    Up to ``hold`` files to sort are listed in one walk, then sorted; more (a first
    catch-up of a large archive) are counted in that walk and sorted during a second.
    ``stop()`` true ends the run early; what was not sorted is found by the next one.
    """
    started = time.monotonic()
    report = Report(label, distinct_tops(roots), since=since)
    since_ns = None if since is None else int(since * 1e9)

    def unhandled(batch: list[FileEntry]) -> list[FileEntry]:
        recent = [e for e in batch if since_ns is None or e.mtime_ns >= since_ns]
        report.older += len(batch) - len(recent)
        known = runtime.index.known([e.path for e in recent])
        chosen = [e for e in recent if known.get(e.path) != (e.size, e.mtime_ns)]
        report.known += len(recent) - len(chosen)
        return chosen

    skip = output_folders(runtime.settings.site)
    kept, total = collect(report.roots, skip, report.walk, terminal, unhandled, stop, hold)
    files: Iterable[FileEntry] | None = kept
    if files is None:  # too many to hold: walk again, sorting them as they are found
        log.info("%s: %d file(s) to sort, more than %d: walking again to sort them as they "
                 "are found", label, total, hold)
        # counted afresh; what the first walk logged is not logged again
        report.walk, report.known, report.older = WalkStats(quiet=True), 0, 0
        files = chosen_files(report.roots, skip, report.walk, unhandled, stop)
    report.tally = sort_files(runtime, files, total, label, terminal, stop)
    report.seconds = time.monotonic() - started
    return report


def _finish(runtime: Runtime, report: Report) -> int:
    if runtime.completions is not None:  # import --events: every completion now, hooks run
        runtime.flush(everything=True)
        runtime.completions.finish()
    runtime.close()
    report.unwritten = len(runtime.store.flush(everything=True))  # one more try
    for line in report.lines():
        log.info("%s", line)
    return 0 if report.ok else 1


def import_command(settings: Settings, paths: list[str], dry_run: bool,
                   events: bool = False) -> int:
    """``dcmsortd import [--dry-run] [--events] PATH...``: exit 0 when every file was
    handled. With ``events`` the completions of what it sorted are issued (at the latest
    when it ends) and it waits for their hooks."""
    terminal = sys.stderr.isatty()
    rules = load_rules(settings.rules_path)
    log_warnings(rules, log)
    if dry_run:
        return dryrun.dry_run(settings, rules, paths, terminal)
    runtime = open_runtime(settings, rules, distinct_tops(paths), events)
    try:
        report = import_paths(runtime, paths, terminal)
    except BaseException:
        runtime.close()
        raise
    return _finish(runtime, report)


def catch_up_command(settings: Settings, roots: list[str], since: str | None) -> int:
    """``dcmsortd catch-up [--since TIME] [ROOT...]``: exit 0 when every file was handled."""
    floor = None if since is None else parse_since(since, time.time())
    chosen = roots or list(settings.roots())
    rules = load_rules(settings.rules_path)
    log_warnings(rules, log)
    runtime = open_runtime(settings, rules, distinct_tops(chosen))
    try:
        report = catch_up(runtime, chosen, floor, sys.stderr.isatty())
    except BaseException:
        runtime.close()
        raise
    return _finish(runtime, report)


def catch_up_at_start(
    runtime: Runtime, since: float | None, clock: Callable[[], float] = time.time,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """The daemon's start-up scan: files modified since it was last alive (bounded).

    ``since`` is the daemon's last heartbeat (None: never ran, then only a hint is logged);
    the scan starts :data:`START_MARGIN` before it, but never more than the setting
    ``catch_up_window`` ago. ``stop()`` true (SIGTERM) ends it early.
    """
    settings = runtime.settings
    if since is None:
        log.info("no earlier run recorded (%s): not scanning the input roots for missed "
                 "files; run `dcmsortd catch-up` once to sort files received before",
                 heartbeat_path(settings))
        return
    floor = max(since - START_MARGIN, clock() - settings.catch_up_window)
    report = catch_up(runtime, settings.roots(), floor, label="start-up catch-up", stop=stop)
    for line in report.lines():
        log.info("%s", line)
