"""Run hooks: subprocesses in a few threads, never in the sorting path.

Each run gets the event as one JSON line on stdin and the ``DCMSORTD_*`` variables in its
environment, runs in a process group of its own (a timeout kills the whole group), and
is retried when it fails (non-zero exit, timeout, cannot start) after growing delays, at
most ``len(delays)`` times; then it is given up. ``report`` hears every outcome (the
journal records it); the threads start with the first run, so a daemon that forks its
workers first has no thread yet when it does.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dcmsortd.completion.hooks import Hook, hook_env

log = logging.getLogger(__name__)

RETRY_DELAYS = (2.0, 10.0, 60.0)  # seconds before the 1st, 2nd and 3rd retry
STDERR_LINES = 5  # last lines of a failing hook's stderr that are logged
READ_AFTER_KILL = 5.0  # seconds to collect output after a timeout killed the group


@dataclass(frozen=True)
class Job:
    """One hook to run for one event; ``attempt`` 0 is the first run."""

    event: dict[str, Any]
    hook: Hook
    attempt: int = 0

    def describe(self) -> str:
        e = self.event
        what = e.get("SeriesInstanceUID") or e.get("StudyInstanceUID")
        return f"hook {json.dumps(list(self.hook.run))} for {e.get('event')} {what} " \
               f"(event {e.get('id')})"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: str  # "exit 0", "exit 3", "killed by signal 9", "timed out after 2 s", ...
    exit: int | None = None
    stderr: str = ""  # its last lines, joined by " | "


def _tail(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return " | ".join(lines[-STDERR_LINES:])


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


class HookRunner:
    """At most ``workers`` hooks at a time; retries wait in a queue, not in a thread."""

    def __init__(self, workers: int, report: Callable[[Job, Outcome, str], None],
                 delays: tuple[float, ...] = RETRY_DELAYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.workers, self.report, self.delays, self.clock = workers, report, delays, clock
        self.runs = self.failures = self.given_up = 0
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._running = 0
        self._closing = False

    def submit(self, job: Job, delay: float = 0.0) -> None:
        with self._cond:
            if self._closing:
                return
            heapq.heappush(self._queue, (self.clock() + delay, next(self._order), job))
            if not self._threads:
                self._threads = [threading.Thread(target=self._work, daemon=True,
                                                  name=f"dcmsortd-hook-{n}")
                                 for n in range(self.workers)]
                for thread in self._threads:
                    thread.start()
            self._cond.notify()

    def busy(self) -> int:
        """Hooks queued (retries included) or running."""
        with self._cond:
            return len(self._queue) + self._running

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False when ``timeout`` passed first."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while self._queue or self._running:
                left = None if deadline is None else deadline - self.clock()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def close(self, grace: float = 5.0) -> None:
        """Run nothing new; give running hooks ``grace`` seconds, then kill their groups.

        A hook killed here is not reported: its delivery stays unfinished in the journal
        and runs again at the next start (at-least-once).
        """
        with self._cond:
            self._closing = True
            self._queue.clear()
            self._cond.notify_all()
            deadline = self.clock() + grace
            while self._running and self.clock() < deadline:
                self._cond.wait(0.05)
            left = list(self._procs.values())
        for proc in left:
            log.warning("stopping: hook pid %d killed; it runs again at the next start",
                        proc.pid)
            self._kill(proc)
        for thread in self._threads:
            thread.join(timeout=READ_AFTER_KILL + 1)

    # ------------------------------------------------------------------ the threads
    def _next(self) -> Job | None:
        with self._cond:
            while not self._closing:
                if self._queue:
                    wait = self._queue[0][0] - self.clock()
                    if wait <= 0:
                        self._running += 1
                        return heapq.heappop(self._queue)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                outcome = self._run(job)
                with self._cond:
                    closing = self._closing
                if not (closing and not outcome.ok):  # killed by close(): not reported
                    self._settle(job, outcome)
            except Exception:  # never let a thread die silently
                log.exception("%s: unexpected error", job.describe())
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _settle(self, job: Job, outcome: Outcome) -> None:
        self.runs += 1
        if outcome.ok:
            self.report(job, outcome, "done")
            return
        self.failures += 1
        stderr = f"; stderr: {outcome.stderr}" if outcome.stderr else ""
        if job.attempt < len(self.delays):
            delay = self.delays[job.attempt]
            log.error("%s failed (%s)%s; retry %d of %d in %.0f s", job.describe(),
                      outcome.status, stderr, job.attempt + 1, len(self.delays), delay)
            self.report(job, outcome, "failed")
            self.submit(Job(job.event, job.hook, job.attempt + 1), delay)
            return
        self.given_up += 1
        log.error("%s failed (%s)%s; given up after %d runs", job.describe(), outcome.status,
                  stderr, job.attempt + 1)
        self.report(job, outcome, "given-up")

    def _run(self, job: Job) -> Outcome:
        payload = (json.dumps(job.event, ensure_ascii=False, sort_keys=True) + "\n").encode()
        # the daemon's environment without DCMSORTD_* variables of its own: a study hook
        # must never see a DCMSORTD_SERIES it did not get from its event
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("DCMSORTD_")}
        env = {**inherited, **hook_env(job.event)}
        try:
            proc = subprocess.Popen(list(job.hook.run), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            return Outcome(False, f"cannot start: {exc.strerror or exc}")
        with self._cond:
            self._procs[proc.pid] = proc
        try:
            return self._wait(proc, payload, job.hook.timeout)
        finally:
            with self._cond:
                self._procs.pop(proc.pid, None)

    def _wait(self, proc: subprocess.Popen[bytes], payload: bytes, timeout: float) -> Outcome:
        try:
            _, err = proc.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            try:
                _, err = proc.communicate(timeout=READ_AFTER_KILL)
            except subprocess.TimeoutExpired:  # something outside its group holds stderr
                err = b""
            return Outcome(False, f"timed out after {timeout:g} s, killed", proc.returncode,
                           _tail(err or b""))
        code = proc.returncode
        return Outcome(code == 0, _status(code), code, _tail(err or b""))

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):  # gone already (its pid is its group's id)
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=READ_AFTER_KILL)
        except subprocess.TimeoutExpired:
            log.error("hook pid %d did not end after SIGKILL", proc.pid)
