"""The daemon's face to its operators: counters, the status file, metrics and systemd.

One ``Operations`` object per daemon run, driven by the single writer (the main loop):
``tick()`` at every line and idle tick publishes the state about every second and pings
systemd's watchdog, so a hung loop shows as a stale status and a missed watchdog.

Other parts of the daemon add their numbers with ``provide(name, summary)``: ``summary()``
returns ``{key: number}``, shown by ``status`` under ``name`` and exported as
``dcmsortd_<name>_<key>`` (a counter when the key ends in ``_total``, else a gauge).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from dcmsortd import __version__
from dcmsortd.intake.spool import Spool
from dcmsortd.model.notice import Arrival
from dcmsortd.service.runtime import Runtime
from dcmsortd.service.sdnotify import SdNotify
from dcmsortd.service.stats import Stats, summary
from dcmsortd.service.status import publish, status_path, withdraw

log = logging.getLogger(__name__)

PUBLISH_EVERY = 1.0  # seconds between writes of the status file (and metrics' snapshot)
_MESSAGE_LIMIT = 500  # characters of the last error kept


class _LastError(logging.Handler):
    """Remembers the last ERROR (or worse) the daemon logged, with its time."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(logging.ERROR)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the daemon
            message = str(record.msg)
        self.stats.error(message[:_MESSAGE_LIMIT], record.created)


class Operations:
    """Counters, status file, metrics endpoint and systemd notifications of one run."""

    def __init__(self, runtime: Runtime, spool: Spool, *, notify: SdNotify | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime, self.spool, self.clock = runtime, spool, clock
        self.settings = runtime.settings
        self.notify = notify if notify is not None else SdNotify.from_env()
        self.stats = Stats(started=clock())
        self.phase = "starting"
        self.path = status_path(self.settings)
        self.latest: Mapping[str, Any] = {}
        self._providers: dict[str, Callable[[], Mapping[str, float]]] = {}
        self._published = 0.0
        self._errors = _LastError(self.stats)
        self._metrics: Any = None
        self._attach()

    # ------------------------------------------------------------------ wiring
    def _attach(self) -> None:
        pipeline = self.runtime.pipeline
        before = pipeline.on_done

        def done(arrival: Arrival, outcome: str) -> None:
            self.stats.done(arrival, outcome, self.clock())
            if before is not None:
                before(arrival, outcome)

        pipeline.on_done = done
        pipeline.on_fed = lambda arrival: self.stats.noticed(arrival, self.clock())
        logging.getLogger("dcmsortd").addHandler(self._errors)

    def provide(self, name: str, summary: Callable[[], Mapping[str, float]]) -> None:
        """Add ``summary()``'s numbers to the status and the metrics under ``name``."""
        self._providers[name] = summary

    def start_metrics(self) -> None:
        """Serve /metrics when the ``metrics`` setting is on (``DaemonError`` when the
        address cannot be had: the daemon does not start)."""
        if self.settings.metrics is None:
            return
        from dcmsortd.service.metrics import MetricsServer

        self.latest = self.snapshot()
        host, port = self.settings.metrics
        self._metrics = MetricsServer(host, port, lambda: self.latest)

    # ------------------------------------------------------------------ events
    def ready(self) -> None:
        """The pipe is open: systemd may start what depends on us."""
        self.phase = "sorting the spool and catching up"
        self.notify.ready(self._status_line())
        self.publish()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.publish()

    def tick(self) -> None:
        now = self.clock()
        self.notify.tick(time.monotonic())
        if now - self._published >= PUBLISH_EVERY:
            self.publish(now)

    def stopping(self) -> None:
        self.phase = "stopping"
        self.notify.stopping(self._status_line())
        self.publish()

    def close(self) -> str:
        """Stop serving metrics, withdraw the status file; the run's summary line."""
        logging.getLogger("dcmsortd").removeHandler(self._errors)
        if self._metrics is not None:
            self._metrics.close()
        withdraw(self.path)
        return summary(self.stats, self.clock())

    # ------------------------------------------------------------------ the state
    def publish(self, now: float | None = None) -> None:
        self.latest = state = self.snapshot(now)
        self._published = state["updated_at"]
        self.notify.status(self._status_line())  # `systemctl status` shows it
        try:
            publish(self.path, state)
        except OSError as exc:
            log.warning("%s: cannot write the status: %s", self.path, exc)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        s, rt = self.settings, self.runtime
        state: dict[str, Any] = {
            "pid": os.getpid(), "version": __version__, "project": s.project,
            "datadir": s.datadir, "pipe": s.pipe, "pid_file": s.pid_file,
            "log_file": s.log_file, "rules": s.rules_path, "input_roots": list(s.roots()),
            "workers": s.workers, "workers_alive": rt.pipeline.workers_alive(),
            "metrics": None if s.metrics is None else f"{s.metrics[0]}:{s.metrics[1]}",
            "phase": self.phase, "started_at": self.stats.started, "updated_at": now,
            "spool_backlog": self.spool.count(), "series_in_memory": rt.store.open_series(),
            "records_written": rt.store.records_written,
        }
        state.update(self.stats.snapshot(now))
        for name, provider in self._providers.items():
            try:
                state[name] = dict(provider())
            except Exception as exc:  # noqa: BLE001 - a provider's bug is not the daemon's end
                log.error("status: the %s summary failed: %s", name, exc)
                continue
            state.setdefault("providers", []).append(name)
        return state

    def _status_line(self) -> str:
        return (f"{self.phase}; {self.stats.sorted} sorted, {self.stats.failed} failed, "
                f"spool {self.latest.get('spool_backlog', 0)}")
