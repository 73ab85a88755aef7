"""Where worker processes come from: this process itself, or a fork server.

The daemon, ``import`` and ``catch-up`` create their workers before they start any
thread or open the pipe, and fork them from their own process then (``multiprocessing``'s
"fork" start method): the workers start at once with everything already imported, and
no second interpreter imports pydicom, numpy and nibabel again (a short import's time
and a fork server's 55 MB).

A pool made later, to replace one whose worker died, is made while the pool's own threads
run: its workers are forked from a server process ("forkserver", safe in a process with
threads) that imports :data:`PRELOAD` once, so each starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import warnings
from collections.abc import Iterator
from multiprocessing.context import ForkContext, ForkServerContext

PRELOAD = ["dcmsortd.sorting.processor"]  # header reading: pydicom, nibabel's CSA reader


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
def forking() -> Iterator[None]:
    """Around the calls that fork workers through :func:`fork_context`'s context.

    Output still buffered would be written again by each child as it exits. Python 3.12+
    warns about a fork while any thread runs, numpy's own (OpenBLAS) included; those
    handle a fork themselves, and no Python thread runs (see :func:`fork_context`).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                category=DeprecationWarning)
        yield
