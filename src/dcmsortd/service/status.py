"""The running daemon's own view, published beside its pid file and read by ``status``.

The daemon writes ``processSingleFile<project>.status.json`` next to its pid file (the pid
folder and the project locate both, whatever data folder or working folder the reader
has), atomically (a temporary name in the same folder, then a rename), about every second
and at start and stop. Whether the daemon lives is never read from this file: the pid
file's lock says so (:func:`dcmsortd.service.pidfile.is_running`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dcmsortd import __version__
from dcmsortd.model.errors import DaemonError
from dcmsortd.service.config import Settings
from dcmsortd.service.pidfile import is_running
from dcmsortd.service.stats import duration

log = logging.getLogger(__name__)

STALE_AFTER = 30.0  # seconds: a status older than this says the main loop seems stuck


def status_path(settings: Settings) -> str:
    base = settings.pid_file.removesuffix(".pid")
    return f"{base}.status.json"


def publish(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON at ``path`` atomically (no fsync: it is rewritten each second)."""
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def publish_start(settings: Settings, now: float | None = None) -> None:
    """The first publication, as soon as the pid file is ours: which daemon this is and
    where it sorts (the counts follow once it runs)."""
    state = {"pid": os.getpid(), "version": __version__, "project": settings.project,
             "datadir": settings.datadir, "pipe": settings.pipe, "pid_file": settings.pid_file,
             "log_file": settings.log_file, "phase": "starting",
             "updated_at": time.time() if now is None else now}
    try:
        publish(status_path(settings), state)
    except OSError as exc:
        log.warning("%s: cannot write the status: %s", status_path(settings), exc)


def withdraw(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class DaemonView:
    """What ``status`` found: the pid holding the lock, and the daemon's published state
    (None until it published one, or when the file is another run's)."""

    pid: int | None
    state: dict[str, Any] | None
    pid_file: str
    path: str


def look(settings: Settings, now: float | None = None) -> DaemonView:
    """The daemon of ``settings``' project and pid folder, as it describes itself."""
    path = status_path(settings)
    pid = is_running(settings.pid_file)
    state = None
    if pid is not None:
        state = _read(path)
        if state is not None and state.get("pid") != pid:
            state = None  # a crashed run's file, not yet replaced by the live daemon
    if state is not None:
        when = time.time() if now is None else now
        started = state.get("started_at")
        if isinstance(started, int | float):  # the file may be up to a second old
            state["uptime_s"] = round(max(0.0, when - started), 3)
        state["published_s_ago"] = round(max(0.0, when - float(state.get("updated_at", when))),
                                          3)
    return DaemonView(pid, state, settings.pid_file, path)


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DaemonError(f"{path}: cannot read the daemon's status: {exc}") from exc
    return data if isinstance(data, dict) else None


def as_json(view: DaemonView) -> dict[str, Any]:
    """The object ``status --json`` prints."""
    if view.pid is None:
        return {"running": False, "pid_file": view.pid_file}
    out: dict[str, Any] = {"running": True, "pid": view.pid, "pid_file": view.pid_file}
    if view.state is None:
        out["state"] = "starting (no status published yet)"
    else:
        out.update(view.state)
    return out


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def render(view: DaemonView) -> list[str]:
    """Lines of ``key: value`` for people (the first says whether it runs)."""
    if view.pid is None:
        return [f"dcmsortd: not running (pid file {view.pid_file})"]
    state = view.state
    if state is None:
        return ["dcmsortd: running (starting: no status published yet)", f"pid: {view.pid}",
                f"pid file: {view.pid_file}"]
    if "files_sorted" not in state:  # published at start, before it sorts
        return ["dcmsortd: running (starting)", f"pid: {view.pid}",
                f"datadir: {state.get('datadir')}", f"pipe: {state.get('pipe')}"]
    outcomes = state.get("outcomes") or {}
    others = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())
                       if o not in ("sorted", "bad", "rejected", "failed"))
    error = state.get("last_error")
    lines = [
        "dcmsortd: running",
        f"pid: {view.pid}",
        f"version: {state.get('version')}",
        f"project: {state.get('project') or '(default)'}",
        f"datadir: {state.get('datadir')}",
        f"pipe: {state.get('pipe')}",
        f"input roots: {', '.join(state.get('input_roots') or [])}",
        f"workers: {state.get('workers')} ({_workers(state)})",
        f"uptime: {duration(float(state.get('uptime_s') or 0))}",
        f"files sorted: {state.get('files_sorted')}",
        f"files failed: {state.get('files_failed')}"
        + "".join(f", {outcomes[o]} {o}" for o in ("bad", "rejected", "failed")
                  if outcomes.get(o)),
        f"other files: {others or 'none'}",
        f"rate: {state.get('rate_per_s')} files/s (last minute)",
        f"latency: median {_seconds(state.get('latency_median_s'))}, p99 "
        f"{_seconds(state.get('latency_p99_s'))} (notice read to file linked, last minute, "
        f"{state.get('latency_samples')} file(s))",
        f"spool backlog: {state.get('spool_backlog')}",
        f"series in memory: {state.get('series_in_memory')}",
        f"records written: {state.get('records_written')}",
        "last error: " + (f"{_when(error.get('time'))} {error.get('message')}"
                          if isinstance(error, dict) else "none"),
    ]
    stale = state.get("published_s_ago")
    if isinstance(stale, int | float) and stale > STALE_AFTER:
        lines.insert(1, f"warning: this status was published {stale:.0f} s ago; the daemon's "
                     "main loop seems stuck (it publishes about every second)")
    for name in state.get("providers") or []:  # e.g. completion: pending series, hooks
        values = state.get(name)
        if isinstance(values, dict):
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(values.items())))
    return lines


def _workers(state: Mapping[str, Any]) -> str:
    if state.get("workers") == 1:
        return "headers read in the main process"
    return f"{state.get('workers_alive')} worker process(es) alive"


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
