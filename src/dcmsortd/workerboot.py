"""Where worker processes come from: this process itself, or a fork server.

A one-shot command (``import``, ``catch-up``) with no other thread running forks its
workers from itself (``multiprocessing``'s "fork" start method) when it creates them:
they start at once with everything it has imported, and no second interpreter imports
pydicom, numpy and nibabel again on the other core (a third of a short import's time).

Otherwise (the daemon, which runs threads; a worker replaced later, when the pool's own
threads run) workers are forked from a server process ("forkserver", safe in a process
with threads) that imported :data:`PRELOAD` once, so a worker starts in milliseconds.
:func:`start_early` starts that server at the very beginning of the daemon, so its
imports run while the daemon's own process does the same on the other core.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
import threading
import warnings
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.context import BaseContext, ForkContext, ForkServerContext

log = logging.getLogger(__name__)

PRELOAD = ["dcmsortd.processor"]  # header reading: pydicom, nibabel's CSA reader


def worker_context() -> ForkServerContext:
    """The fork server's start-method context."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def fork_context() -> ForkContext | None:
    """The "fork" context, if this process may fork its workers now: the platform has
    fork and no other Python thread runs (a thread could hold a lock the children would
    inherit held). The caller must fork at once, from this thread."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return None
    return multiprocessing.get_context("fork")


@contextlib.contextmanager
def forking(context: BaseContext) -> Iterator[None]:
    """Around the calls that start workers through ``context``.

    Output still buffered would be written again by each child as it exits. Python 3.12+
    warns about a fork while any thread runs, numpy's own (OpenBLAS) included; those
    handle a fork themselves, and no Python thread runs (see :func:`fork_context`).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if not isinstance(context, ForkContext):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                category=DeprecationWarning)
        yield


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
