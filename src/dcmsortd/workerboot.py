"""Where worker processes come from: a fork server that has the header modules loaded.

Workers are forked from a server process (``multiprocessing``'s "forkserver" start method,
safe in a process with threads) that imported :data:`PRELOAD` once, so a worker starts in
milliseconds. :func:`start_early` starts that server at the very beginning of a command,
so its imports run while the command's own process does the same on the other core.
"""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

log = logging.getLogger(__name__)

PRELOAD = ["dcmsortd.processor"]  # header reading: pydicom, nibabel's CSA reader


def worker_context() -> ForkServerContext:
    """The start-method context worker pools use."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_early() -> None:
    """Start the fork server now (it inherits this process's umask: set that first).

    A failure is left for the worker pool to meet and report (it then examines files in
    the main process): starting early only saves time.
    """
    worker_context()
    try:
        forkserver.ensure_running()
    except OSError as exc:
        log.debug("fork server not started early: %s", exc)
