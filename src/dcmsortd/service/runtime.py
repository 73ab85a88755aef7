"""Assemble the sorting machinery from Settings: rules, store, index, sorter, pipeline."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from dcmsortd.completion.completer import Completions
from dcmsortd.completion.journal import journal_path, pending_path
from dcmsortd.rules.engine import RuleSet
from dcmsortd.service.config import Settings
from dcmsortd.service.pipeline import Pipeline
from dcmsortd.sorting import fsio
from dcmsortd.sorting.episode import Episode
from dcmsortd.sorting.failed import FailedList
from dcmsortd.sorting.index import ProcessedIndex
from dcmsortd.sorting.processor import Examiner, Sorter
from dcmsortd.sorting.store import Store

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 10.0


@dataclass
class Runtime:
    """The single writer's objects for one process (daemon, import or catch-up)."""

    settings: Settings
    store: Store
    sorter: Sorter
    pipeline: Pipeline
    index: ProcessedIndex
    heartbeat: bool = True  # only the daemon writes it: it bounds the start-up catch-up
    completions: Completions | None = None  # series/study events (daemon, import --events)
    _beat_at: float = field(default=0.0)
    # writes that keep failing (a full or read-only disk) are logged once, not at every flush
    _failing_records: set[str] = field(default_factory=set)
    _beat_episode: Episode = field(default_factory=lambda: Episode(log))

    @property
    def rules(self) -> RuleSet:
        rules = self.store.rules
        assert isinstance(rules, RuleSet)
        return rules

    def replace_rules(self, rules: RuleSet) -> None:
        self.store.rules = rules

    def flush(self, everything: bool = False) -> None:
        """Write what is due (or everything), then commit the processed-files index.

        A file's row is committed only once the records it is counted in are written, so
        the index never lists a file whose record a crash could still lose (the catch-up
        scan trusts it); a record that cannot be written holds back only its own files.
        """
        if everything:
            self.pipeline.settle()
        else:
            self.pipeline.poll()
        if self.completions is not None:  # pending completions saved before the records
            self.completions.persist()
        for path, exc in self.store.flush(everything):
            if path not in self._failing_records:
                log.error("%s: cannot write the record, will retry: %s", path, exc)
                self._failing_records.add(path)
        dirty = self.store.dirty_records()
        if not dirty and self._failing_records:
            log.info("%d record(s) that could not be written are written now",
                     len(self._failing_records))
            self._failing_records.clear()
        self.index.commit(held=dirty)
        if self.completions is not None:
            self.completions.tick()
        if self.sorter.failed_list is not None:
            self.sorter.failed_list.flush()
        now = time.time()
        if not self.heartbeat:
            return
        if now - self._beat_at >= HEARTBEAT_EVERY:
            self._heartbeat(now)

    def _heartbeat(self, now: float) -> None:
        self._beat_at = now
        path = heartbeat_path(self.settings)
        try:
            fsio.write_json(path, {"last_alive": now}, self.store.temp_dir)
        except OSError as exc:
            self._beat_episode.failed("%s: cannot write the heartbeat, will retry: %s", path, exc)
            return
        self._beat_episode.worked("%s: the heartbeat is written again", path)

    def close(self) -> None:
        self.pipeline.close()
        self.flush(everything=True)
        if self.heartbeat:
            self._heartbeat(time.time())
        # rows of files whose record could not be written are dropped, so catch-up retries them
        self.index.close(held=self.store.dirty_records())
        if self.completions is not None:
            self.completions.close()

    def completion_summary(self) -> dict[str, int]:
        """Pending completions and hook runs, for status and metrics (zeros without)."""
        if self.completions is None:
            return {"pending_series": 0, "pending_studies": 0, "events_issued": 0,
                    "hooks_queued": 0, "hooks_run": 0, "hooks_failed": 0, "hooks_given_up": 0}
        return self.completions.summary()


def heartbeat_path(settings: Settings) -> str:
    name = f"daemon{settings.project}.json"
    return os.path.join(settings.state_dir, name)


def last_alive(settings: Settings) -> float | None:
    data = fsio.read_json(heartbeat_path(settings))
    if isinstance(data, dict) and isinstance(data.get("last_alive"), int | float):
        return float(data["last_alive"])
    return None


def build(
    settings: Settings, rules: RuleSet, workers: int | None = None, heartbeat: bool = True,
    fork_workers: bool = False, events: str = "",
) -> Runtime:
    """Create the folders and objects that sort into ``settings.site``.

    ``heartbeat``: write the daemon's last-alive stamp (False for import and catch-up).
    ``fork_workers``: the worker processes may be forked from this process as they are
    created (when no other thread runs; see :mod:`dcmsortd.service.workerboot`).
    ``events``: ``"daemon"`` issues completion events and keeps pending ones across runs;
    ``"import"`` issues them at the end of the run (``Completions.finish``); ``""``: none.
    """
    store = Store(settings.site, rules, flush_interval=settings.flush_interval)
    store.prepare()
    os.makedirs(settings.state_dir, exist_ok=True)
    index = ProcessedIndex(os.path.join(settings.state_dir, "processed.sqlite"))
    sorter = Sorter(
        store=store,
        modalities=settings.modalities,
        other_modalities=settings.other_modalities,
        roots=settings.roots(),
        index=index,
        failed_list=FailedList(os.path.join(settings.site, "temp", "failed.tsv")),
    )
    pipeline = Pipeline(
        sorter,
        Examiner(settings.roots()),
        rule_keys=lambda: store.rules.tag_keys(),  # type: ignore[attr-defined]
        workers=workers or settings.workers,
        fork=fork_workers,
    )
    runtime = Runtime(settings, store, sorter, pipeline, index, heartbeat)
    if events:  # after the pipeline: its workers are forked before any hook thread starts
        runtime.completions = completions(settings, store, daemon=events == "daemon")
        sorter.on_new = runtime.completions.arrived
    return runtime


def completions(settings: Settings, store: Store, daemon: bool) -> Completions:
    """The completion tracker, journal and hooks; the daemon's resumes the last run's
    (an import does not: the daemon may be running those very hooks right now)."""
    done = Completions(
        store, series_quiet=settings.series_quiet, study_quiet=settings.study_quiet,
        hooks=settings.hooks, hook_workers=settings.hook_workers,
        journal_path=journal_path(settings.state_dir, settings.project),
        pending_path=pending_path(settings.state_dir, settings.project) if daemon else None,
    )
    if daemon:
        done.resume()
    return done
