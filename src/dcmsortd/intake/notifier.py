"""Deliver one arrival notification without ever blocking the receiver and without losing it.

``notify`` is what storescp's ``--exec-on-reception`` runs (through ``dcmsortd notify``): the
line goes through the pipe when a daemon listens, else into the durable spool the daemon
drains when it (re)starts.
"""

from __future__ import annotations

import logging
import os

from dcmsortd.intake.pipewrite import StrPath, frame, open_writer, write_atomic
from dcmsortd.intake.spool import Spool
from dcmsortd.model.errors import DaemonError

log = logging.getLogger(__name__)


def notify(line: str, pipe_path: StrPath, spool: Spool, wait: float = 0.05) -> str:
    """Hand ``line`` to the daemon; return ``"pipe"`` or ``"spool"`` (where it went).

    Through the pipe when ``pipe_path`` is a FIFO with a reader and the line fits one atomic
    write (at most PIPE_BUF bytes, no newline inside); a full pipe is given ``wait`` seconds
    to drain. Otherwise (no pipe, no reader, a stray file or link there, too long, pipe
    still full) the line goes to ``spool``. Never creates anything at ``pipe_path``; the
    pipe part never blocks longer than ``wait``. Errors of the spool itself propagate.
    """
    line = line.removesuffix("\n")
    payload = frame(line)
    if payload is None:
        reason: str | None = "the line does not fit one atomic pipe write"
    else:
        reason = _through_pipe(pipe_path, payload, wait)
    if reason is None:
        return "pipe"
    entry = spool.put(line)
    log.warning("%s; spooled the notification as %s", reason, entry)
    return "spool"


def _through_pipe(pipe_path: StrPath, payload: bytes, wait: float) -> str | None:
    """Write ``payload`` into the pipe; None on success, else why it could not."""
    try:
        fd = open_writer(pipe_path)
    except DaemonError as exc:
        return str(exc)
    try:
        if write_atomic(fd, payload, wait):
            return None
        return f"the pipe {os.fspath(pipe_path)} stayed full for {wait} s"
    except OSError as exc:  # EPIPE: the reader left between open and write
        return f"cannot write to {os.fspath(pipe_path)}: {exc.strerror}"
    finally:
        os.close(fd)
