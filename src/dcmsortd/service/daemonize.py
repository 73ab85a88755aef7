"""Detach as a proper daemon, and tell the starting process whether the daemon came up.

``detach`` double-forks; the original process waits on a readiness pipe and returns only
once the daemon said "ready", or raises ``DaemonError`` with the daemon's own message
(for instance "dcmsortd for this project already runs ...") or on timeout. ``cli start``::

    child = detach(ready_timeout=30)   # the starting process stops here until ready
    if child is None:
        return 0                       # the daemon runs: `dcmsortd start` exits 0
    with child:                        # in the daemon; an exception before ready is reported
        with PidFile(pid_path):
            strays = prepare_fifo(pipe_path, mode)
            with PipeReader(pipe_path) as reader:
                child.report_ready()
                serve(reader, strays)

Resolve every path to an absolute one before calling ``detach`` (the daemon runs in ``/``),
and configure logging afterwards: the daemon's stdin, stdout and stderr are ``/dev/null``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import time
from types import TracebackType

from dcmsortd.model.errors import DaemonError

log = logging.getLogger(__name__)


class Child:
    """The daemon's end of the readiness pipe. Each report is sent once; later ones are ignored.

    As a context manager: leaving the block before ``report_ready`` reports a failure (the
    exception's message, if any), so the starting process never waits for the timeout.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @property
    def pid(self) -> int:
        return os.getpid()

    def report_ready(self) -> None:
        """Tell the starting process that the daemon is up (pipe placed, pid file locked)."""
        self._send("ready")

    def report_failure(self, message: str) -> None:
        """Tell the starting process that the daemon cannot run, and why."""
        self._send("fail " + " ".join(message.split()))

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception) and str(exc):
            self.report_failure(str(exc))
        elif exc_type is not None:
            self.report_failure(f"the daemon failed to start ({exc_type.__name__})")
        else:
            self.report_failure("the daemon ended before it was ready")

    def _send(self, message: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, message.encode("utf-8", "replace")[:4000] + b"\n")
        except OSError:  # the starting process gave up waiting
            log.warning("the starting process no longer waits for the daemon's report")
        finally:
            os.close(fd)


def detach(ready_timeout: float = 30.0) -> Child | None:
    """Double-fork into a daemon (new session, cwd ``/``, stdio on ``/dev/null``).

    In the starting process: returns None once the daemon reported ready, raises
    ``DaemonError`` when it reported a failure, ended without a report, or stayed silent
    for ``ready_timeout`` seconds. In the daemon: returns the ``Child`` to report with.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        try:
            with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: reaped already
                os.waitpid(first, 0)
            _await_report(read_end, ready_timeout)
        finally:
            os.close(read_end)
        return None
    os.close(read_end)
    _leave_session(write_end)
    _to_background()
    os.write(write_end, f"pid {os.getpid()}\n".encode())
    return Child(write_end)


def _leave_session(write_end: int) -> None:
    """In the first child: new session, fork again, and let only the grandchild go on."""
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException as exc:  # never return into the caller's code from here
        message = f"fail cannot detach: {exc}\n"
        try:
            os.write(write_end, message.encode())
        finally:
            os._exit(1)


def _to_background() -> None:
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _await_report(fd: int, timeout: float) -> None:
    """Read the daemon's reports until "ready" (return) or anything else (raise)."""
    deadline = time.monotonic() + timeout
    buffer = b""
    pid = "?"
    while True:
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            word, _, rest = raw.decode("utf-8", "replace").partition(" ")
            if word == "ready":
                return
            if word == "fail":
                raise DaemonError(rest)
            if word == "pid":
                pid = rest
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise DaemonError(f"the daemon (pid {pid}) did not report ready within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise DaemonError(f"the daemon (pid {pid}) ended before it was ready; see its log")
        buffer += chunk
