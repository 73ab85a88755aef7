"""The daemon: own the pipe and the pid file, drain the spool, follow the arrivals journal,
sort lines until told to stop."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

from dcmsortd.intake.follower import Follower
from dcmsortd.intake.pipe import LongLine, PipeReader, prepare_fifo
from dcmsortd.intake.receiverlog import ReceiverLog, Source, Sources
from dcmsortd.intake.spool import Spool
from dcmsortd.model.errors import DaemonError, RulesError
from dcmsortd.rules.engine import load_rules, log_warnings
from dcmsortd.service.config import Settings
from dcmsortd.service.operations import Operations
from dcmsortd.service.pidfile import PidFile
from dcmsortd.service.runtime import Runtime, build, last_alive
from dcmsortd.service.status import publish_start, status_path, withdraw

log = logging.getLogger(__name__)

class CatchUp(Protocol):
    """The start-up scan (``batch.bulk.catch_up_at_start``)."""

    def __call__(self, runtime: Runtime, since: float | None, *,
                 stop: Callable[[], bool]) -> None: ...


CHECK_EVERY = 0.1  # seconds between checks for due records while lines stream in
DRAIN_EVERY = 2.0  # seconds between looks at the spool while lines stream in
SPOOL_CHUNK = 500


@dataclass
class Control:
    """Flags set by signal handlers and read by the loop."""

    stop: bool = False
    reload: bool = False
    wakers: list[Callable[[], None]] = field(default_factory=list)

    def request_stop(self) -> None:
        self.stop = True
        for wake in self.wakers:
            wake()


def drain_spool(runtime: Runtime, spool: Spool, stop: Callable[[], bool] = lambda: False) -> int:
    """Sort spooled notifications in arrival order; remove each once its output is durable.

    Entries stay when a record could not be written (a full disk): they are sorted again
    (a no-op for what was filed) at the next drain. ``stop()`` ends it between chunks.
    """
    done = 0
    while not stop():
        entries = spool.entries()[:SPOOL_CHUNK]
        if not entries:
            break
        for entry in entries:
            try:
                line = spool.read(entry)
            except OSError as exc:
                log.error("%s: cannot read spooled notification: %s", entry, exc)
                continue
            runtime.pipeline.feed_line(line)
        runtime.flush(everything=True)
        if runtime.store.dirty():
            break
        for entry in entries:
            spool.remove(entry)
        done += len(entries)
    return done


def flush_durably(runtime: Runtime, on_durable: Callable[[], None] | None) -> None:
    """Write everything; when every record is written, tell ``on_durable`` (the journal)."""
    runtime.flush(everything=True)
    if on_durable is not None and not runtime.store.dirty():
        on_durable()


def drain_journal(runtime: Runtime, journal: Source,
                  stop: Callable[[], bool] = lambda: False) -> int:
    """Sort what the journal holds now (written while no daemon ran); remember it once durable."""
    done = 0
    while not stop() and (line := journal.next_line()) is not None:
        runtime.pipeline.feed_line(line)
        done += 1
        if done % SPOOL_CHUNK == 0:
            flush_durably(runtime, journal.commit)
    flush_durably(runtime, journal.commit)
    return done


def run_loop(
    lines: Iterable[bytes | str | LongLine | None],
    runtime: Runtime,
    control: Control,
    on_idle: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    tick: Callable[[], None] | None = None,
    on_durable: Callable[[], None] | None = None,
) -> None:
    """Sort every line of ``lines``; ``None`` items are idle ticks (flush everything).

    ``on_idle`` (the spool drain) runs on idle ticks, and every ``DRAIN_EVERY`` seconds while
    lines stream in without a pause. ``on_durable`` (the journal's commit) runs after a
    flush of everything left no record unwritten: on idle ticks, every ``DRAIN_EVERY``
    seconds of a stream, and at the end. ``tick`` (status, watchdog) runs after every
    item.

    Any iterable works, so tests hand it a list and the daemon hands it the pipe reader.
    """
    checked = drained = clock()
    for item in lines:
        if item is None:
            flush_durably(runtime, on_durable)
            if on_idle is not None:
                on_idle()
                drained = clock()
        elif isinstance(item, LongLine):
            log.error("pipe line rejected: longer than %d bytes, starts %r", item.limit, item.head)
        else:
            runtime.pipeline.feed_line(item)
            now = clock()
            if now - checked >= CHECK_EVERY:
                runtime.flush()
                checked = now
            if now - drained >= DRAIN_EVERY:  # busy: drain and remember anyway
                if on_durable is not None:
                    flush_durably(runtime, on_durable)
                if on_idle is not None:
                    on_idle()
                drained = now
        if control.reload:
            control.reload = False
            reload_rules(runtime)
        if tick is not None:
            tick()
        if control.stop:
            break
    flush_durably(runtime, on_durable)


def reload_rules(runtime: Runtime) -> None:
    path = runtime.settings.rules_path
    try:
        rules = load_rules(path)
    except RulesError as exc:
        log.error("%s: rules not reloaded, keeping the old ones: %s", path, exc)
        return
    runtime.flush(everything=True)
    runtime.replace_rules(rules)
    log.info("%s: rules reloaded", path or "packaged default rules")
    log_warnings(rules, log)


def _install_signals(control: Control) -> None:
    def on_stop(signum: int, _frame: FrameType | None) -> None:
        control.request_stop()

    def on_hup(signum: int, _frame: FrameType | None) -> None:
        control.reload = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def serve(settings: Settings, ready: Callable[[], None] | None = None,
          catch_up: CatchUp | None = None) -> int:
    """Run the daemon in this process until SIGTERM/SIGINT. Returns the exit code."""
    rules = load_rules(settings.rules_path)  # invalid rules: RulesError, refuse to start
    control = Control()
    _install_signals(control)
    with PidFile(settings.pid_file):
        log_warnings(rules, log)  # a site's legacy file loads; say what was tolerated
        spool = Spool(Path(settings.spool_dir))
        stray = prepare_fifo(settings.pipe, settings.pipe_mode)
        try:
            publish_start(settings)  # `status` shows this daemon's folders from now on
            for line in stray:
                spool.put(line)
            return _serve(settings, rules, spool, control, ready, catch_up)
        finally:
            _remove_fifo(settings.pipe)
            withdraw(status_path(settings))


def _serve(settings: Settings, rules: object, spool: Spool, control: Control,
           ready: Callable[[], None] | None,
           catch_up: CatchUp | None) -> int:
    from dcmsortd.rules.engine import RuleSet

    assert isinstance(rules, RuleSet)
    since = last_alive(settings)
    runtime = build(settings, rules, fork_workers=True,  # before any thread, any pipe open
                    events="daemon")
    ops, journal = _equip(settings, runtime, spool)
    reader = PipeReader(settings.pipe, source=journal).open()  # writers never block for long
    control.wakers.append(reader.stop)

    def asked_to_stop() -> bool:  # asked often during the spool drain and the catch-up
        ops.tick()
        return control.stop

    try:
        log.info("dcmsortd %s listening on %s, sorting into %s (rules: %s, workers: %d)",
                 settings.project or "(default project)", settings.pipe, settings.site,
                 settings.rules_path or "packaged default", settings.workers)
        ops.ready()
        if ready is not None:
            ready()
        spool.clean_temp()
        drained = drain_spool(runtime, spool, stop=asked_to_stop)
        if drained:
            log.info("%s: sorted %d spooled notification(s)", settings.spool_dir, drained)
        journaled = drain_journal(runtime, journal, stop=asked_to_stop)
        if journaled:
            log.info("%s: sorted %d journal line(s) written while no daemon ran",
                     settings.journal, journaled)
        if catch_up is not None and settings.catch_up and not control.stop:
            catch_up(runtime, since, stop=asked_to_stop)
        ops.set_phase("listening")
        run_loop(reader, runtime, control,
                 on_idle=lambda: _drain_quietly(runtime, spool, asked_to_stop), tick=ops.tick,
                 on_durable=journal.commit)
    finally:
        ops.stopping()
        _remove_fifo(settings.pipe)  # new notifications go to the spool from now on
        reader.stop()
        for line in reader.pending():
            if isinstance(line, bytes):
                spool.put(line.decode("utf-8", "surrogateescape"))
        reader.close()
        runtime.close()
        if not runtime.store.dirty():
            journal.commit()  # what is not committed is read again at the next start
        journal.close()
        log.info("dcmsortd stopped: %s", ops.close())
    return 0


def _equip(settings: Settings, runtime: Runtime, spool: Spool) -> tuple[Operations, Sources]:
    """Status, metrics, the arrivals journal and storescp's receiver log (one folder, one
    watch); a failure leaves nothing running (and no heartbeat: nothing was sorted) and
    stops the start."""
    ops = Operations(runtime, spool)
    ops.provide("completion", runtime.completion_summary)
    try:
        ops.start_metrics()  # the address is taken: DaemonError, the daemon does not start
        try:
            journal = Sources([
                Follower(settings.journal_dir, os.path.basename(settings.journal)).open(),
                ReceiverLog(settings.journal_dir,
                            os.path.basename(settings.receiver_log)).open()])
        except OSError as exc:
            raise DaemonError(f"{settings.journal_dir}: cannot follow the arrivals journal: "
                              f"{exc.strerror or exc}") from exc
    except BaseException:
        ops.close()
        runtime.pipeline.close()  # not runtime.close(): no heartbeat
        if runtime.completions is not None:
            runtime.completions.close()
        raise
    ops.provide("journal", journal.summary)
    return ops, journal


def _remove_fifo(path: str) -> None:
    try:
        if os.path.exists(path) and not os.path.islink(path):
            import stat

            if stat.S_ISFIFO(os.lstat(path).st_mode):
                os.unlink(path)
    except OSError as exc:
        log.error("%s: cannot remove the pipe: %s", path, exc.strerror)


def _drain_quietly(runtime: Runtime, spool: Spool, stop: Callable[[], bool]) -> None:
    drained = drain_spool(runtime, spool, stop)
    if drained:
        log.info("%s: sorted %d spooled notification(s)", spool.directory, drained)
