"""Series and study completion in a sorting process: arrivals in, events and hooks out.

The single writer tells ``arrived`` of every image it newly counted; ``persist`` (before
the store writes its records) saves the pending completions when their set changed, and
``tick`` (after) issues what is due: the series record is written first, then the event
goes into the journal (fsync'ed), then its hooks are queued. Hooks run in threads of the
:class:`~dcmsortd.completion.runner.HookRunner`; nothing here waits for them.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from dcmsortd.completion.events import iso, series_event, study_event
from dcmsortd.completion.hooks import Hook
from dcmsortd.completion.journal import (
    Journal,
    last_issued,
    load_pending,
    read_entries,
    save_pending,
    undelivered,
)
from dcmsortd.completion.runner import RETRY_DELAYS, HookRunner, Job, Outcome
from dcmsortd.completion.tracker import SeriesRef, StudyRef, Tracker
from dcmsortd.model.instance import Instance
from dcmsortd.sorting import fsio
from dcmsortd.sorting.episode import Episode
from dcmsortd.sorting.layout import Placement
from dcmsortd.sorting.store import Store

log = logging.getLogger(__name__)


class Completions:
    """Pending completions, the journal and the hook runner of one sorting process.

    ``pending_path`` None (``import --events``): nothing is saved across runs; what is
    still pending when the run ends is issued then (``finish``).
    """

    def __init__(
        self, store: Store, *, series_quiet: float, study_quiet: float,
        hooks: Sequence[Hook], hook_workers: int, journal_path: str,
        pending_path: str | None, delays: tuple[float, ...] = RETRY_DELAYS,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.hooks, self.clock, self.wall = store, tuple(hooks), clock, wall
        self.tracker = Tracker(series_quiet, study_quiet)
        self.journal = Journal(journal_path)
        self.pending_path = pending_path
        self.runner = HookRunner(hook_workers, self._report, delays, clock)
        self.issued = 0
        self._save_episode = Episode(log)
        self._journal_episode = Episode(log)
        self._flush_failing: set[str] = set()

    # ------------------------------------------------------------------ start-up
    def resume(self) -> None:
        """Take over what an earlier run left: pending completions (issued at most
        ``series_quiet`` from now) and hook runs it never finished."""
        entries, _ = read_entries(self.journal.path)
        if self.pending_path is not None:
            series, studies, written = load_pending(self.pending_path)
            last = last_issued(entries)  # an event issued after the file was written
            series = [s for s in series if last.get(s.series_dir, 0.0) <= written]
            studies = [s for s in studies if last.get(s.study_dir, 0.0) <= written]
            self.tracker.reload(series, studies, self.clock())
            if series or studies:
                log.info("%d series and %d studies pending completion from the last run",
                         len(series), len(studies))
        by_run = {h.run: h for h in self.hooks}
        for item in undelivered(entries):
            hook = by_run.get(item.hook)
            if hook is None:
                log.warning("hook %s for event %s did not finish and is no longer "
                            "configured: dropped", list(item.hook), item.event.get("id"))
                self._record(item.event, list(item.hook), "dropped")
                continue
            log.info("hook %s for event %s did not finish in the last run: run again",
                     list(item.hook), item.event.get("id"))
            self.runner.submit(Job(item.event, hook))

    # ------------------------------------------------------------------ the writer's side
    def arrived(self, where: Placement, inst: Instance) -> None:
        """``inst`` was newly counted in its series (filed at ``where``)."""
        ref = SeriesRef(inst.study_uid, inst.series_uid, where.study_dir, where.series_dir,
                        where.record)
        self.tracker.arrived(ref, self.clock())

    def persist(self) -> None:
        """Save the pending completions if their set changed (before records are written:
        an image counted on disk is then always pending or has had its event)."""
        if self.pending_path is None or not self.tracker.changed:
            return
        series, studies = self.tracker.pending()
        try:
            save_pending(self.pending_path, series, studies, self.store.temp_dir, self.wall())
        except OSError as exc:
            self._save_episode.failed("%s: cannot save the pending completions, will "
                                      "retry: %s", self.pending_path, exc)
            return
        self.tracker.changed = False
        self._save_episode.worked("%s: the pending completions are saved again",
                                  self.pending_path)

    def tick(self, now: float | None = None) -> int:
        """Issue every completion due at ``now`` (default: the clock). Returns how many.

        The events of one tick go into the journal in one write (one fsync), however many.
        """
        due = self.tracker.due(self.clock() if now is None else now)
        chosen = [(item, event, [h for h in self.hooks if h.wants(event)])
                  for item in due if (event := self._event(item)) is not None]
        if not chosen or not self._append([line for _, event, hooks in chosen for line in
                                           (event, *(self._delivery(event, h.label, "queued")
                                                     for h in hooks))]):
            return 0
        for item, event, hooks in chosen:
            self.tracker.done(item)
            self.issued += 1
            log.info("%s: %s %s (%s files, types %s), %d hook(s)", event["event"],
                     event.get("SeriesInstanceUID") or event["StudyInstanceUID"],
                     event["folder"], event["NumFiles"],
                     ",".join(event["ClassifyType"]) or "-", len(hooks))
            for hook in hooks:
                self.runner.submit(Job(event, hook))
        self.persist()
        return len(chosen)

    def _append(self, lines: list[dict[str, Any]]) -> bool:
        try:
            self.journal.append(lines)
        except OSError as exc:
            self._journal_episode.failed("%s: cannot append to the events journal; the "
                                         "events wait: %s", self.journal.path, exc)
            return False
        self._journal_episode.worked("%s: the events journal is written again",
                                     self.journal.path)
        return True

    def finish(self, timeout: float | None = None) -> None:
        """Issue every pending completion now (end of an import), then wait for the hooks."""
        while self.tick(float("inf")):
            pass
        self.runner.wait(timeout)

    def close(self, grace: float = 5.0) -> None:
        self.persist()
        self.runner.close(grace)

    def summary(self) -> dict[str, int]:
        """A read-only summary for status and metrics."""
        series, studies = self.tracker.counts()
        return {"pending_series": series, "pending_studies": studies,
                "events_issued": self.issued, "hooks_queued": self.runner.busy(),
                "hooks_run": self.runner.runs, "hooks_failed": self.runner.failures,
                "hooks_given_up": self.runner.given_up}

    # ------------------------------------------------------------------ issuing
    def _event(self, item: SeriesRef | StudyRef) -> dict[str, Any] | None:
        """The event of ``item`` (None: its record cannot be written now; it stays due)."""
        event_id, wall = uuid.uuid4().hex[:16], self.wall()
        if isinstance(item, SeriesRef):
            record = self._final_record(item)
            return None if record is None else series_event(item, record, event_id, wall)
        paths = sorted(glob.glob(os.path.join(glob.escape(item.study_dir), "*.json")))
        records = [r for r in map(fsio.read_json, paths) if isinstance(r, dict)]
        return study_event(item, records, event_id, wall)

    def _final_record(self, ref: SeriesRef) -> dict[str, Any] | None:
        """The series record, written first if it has changes (None: it cannot be)."""
        failure = self.store.flush_series(ref.record)
        if failure is not None:
            if ref.record not in self._flush_failing:
                log.error("%s: cannot write the record, its completion waits: %s",
                          ref.record, failure)
                self._flush_failing.add(ref.record)
            return None
        self._flush_failing.discard(ref.record)
        record = fsio.read_json(ref.record)
        if not isinstance(record, dict):
            log.error("%s: the series record is missing; its event has the UIDs only",
                      ref.record)
            return {}
        return record

    # ------------------------------------------------------------------ delivery state
    def _delivery(self, event: dict[str, Any], hook: list[str], state: str,
                  **more: Any) -> dict[str, Any]:
        return {"delivery": state, "id": event.get("id"), "hook": hook,
                "time": iso(self.wall()), **more}

    def _record(self, event: dict[str, Any], hook: list[str], state: str, **more: Any) -> None:
        try:
            self.journal.append([self._delivery(event, hook, state, **more)])
        except OSError as exc:
            log.error("%s: cannot record that hook %s is %s for event %s: %s",
                      self.journal.path, hook, state, event.get("id"), exc)

    def _report(self, job: Job, outcome: Outcome, state: str) -> None:
        """From a runner thread: what became of one run."""
        self._record(job.event, job.hook.label, state, attempt=job.attempt + 1,
                     status=outcome.status)
