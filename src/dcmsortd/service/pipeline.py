"""Turn a stream of pipe lines into filed images: parse, examine (maybe in workers), sort.

Results are applied in the order the lines came, whatever the number of workers, so the
output of one worker and of N workers is the same.

Arrivals go to the workers in batches (fewer round trips), but a batch never waits for
company while a worker has nothing to do: with fewer batches in flight than workers, what
is waiting goes at once. So a slow, steady stream is examined line by line as it comes,
and a fast one (a bulk import, a scanner's burst) in full batches.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dcmsortd.model.errors import NotificationError
from dcmsortd.model.instance import TagKey
from dcmsortd.model.notice import Arrival, parse_line
from dcmsortd.service.workerboot import fork_context, forking, worker_context
from dcmsortd.sorting.processor import Examined, Examiner, Sorter

log = logging.getLogger(__name__)

BATCH = 64  # arrivals per round trip to a worker, when all of them are busy
WORKER_NICENESS = 5  # added to the workers' nice value: see _init_worker

_worker_examiner: Examiner | None = None


def _init_worker(examiner: Examiner, forked: bool = False) -> None:
    global _worker_examiner
    _worker_examiner = examiner
    if forked:  # the command's signal handlers are not the worker's: it ends on SIGTERM
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        _exit_with_parent()
    # Ctrl-C on a terminal reaches the whole process group: the main process stops the
    # workers once it has filed what they examined; they must not die on it first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The writer (links, records, in arrival order) is the one step that cannot run in
    # parallel, and storescp must keep receiving: both go before header parsing. When
    # links are slow (kernel time) the writer is the bottleneck, and workers at the same
    # priority took a third of its CPU.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def _exit_with_parent() -> None:
    """A worker forked from the command's own process inherited the writing end of its
    task queue, so it would never see that queue end if the command were killed: it
    would wait for work forever. It watches its parent instead, and ends with it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent is gone
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="dcmsortd-exit-with-parent").start()


def _not_started(exc: Exception) -> None:
    log.error("worker processes did not start (%s); examining in the main process",
              exc or type(exc).__name__)


def _ready() -> int:
    return os.getpid()


def _examine_batch(batch: list[Arrival], keys: frozenset[TagKey]) -> list[Examined]:
    assert _worker_examiner is not None
    return [_worker_examiner(a, keys) for a in batch]


class Pipeline:
    """Feed it lines (or Arrivals); it files them in order. ``settle()`` waits for all."""

    def __init__(
        self,
        sorter: Sorter,
        examiner: Examiner,
        rule_keys: Callable[[], frozenset[TagKey]],
        workers: int = 1,
        on_done: Callable[[Arrival, str], None] | None = None,
        fork: bool = False,
    ) -> None:
        self.sorter = sorter
        self.examiner = examiner
        self.rule_keys = rule_keys
        self.workers = workers
        self.on_done = on_done
        self.on_fed: Callable[[Arrival], None] | None = None  # a parsed pipe or spool line
        self._batch: list[Arrival] = []
        self._inflight: deque[
            tuple[list[Arrival], Future[list[Examined]], ProcessPoolExecutor]
        ] = deque()
        self._starter: threading.Thread | None = None
        self._starting: list[Future[int]] = []
        self._up = False
        self._start_failed = False  # starting the workers failed (and said so)
        self._fork = fork  # the first pool may be forked from this process (see _new_pool)
        self._pool: ProcessPoolExecutor | None = self._new_pool() if workers > 1 else None

    def _new_pool(self) -> ProcessPoolExecutor | None:
        """A pool whose workers all start now (not one by one later, while images wait).

        With ``fork`` (the daemon, import and catch-up set it, creating the pipeline before
        any thread) the first pool's workers are forked from this process at once, if no
        other thread runs (:func:`~dcmsortd.service.workerboot.fork_context`). Otherwise, and for a
        pool that replaces a broken one, they are forked from the fork server, which
        imports the header-reading modules once. Starting those waits until it has done
        its imports (about half a second): a thread does that waiting, and meanwhile
        arrivals are examined here, in this process, with nothing in flight, so the order
        of results is kept.
        """
        self._up = self._start_failed = False
        context = fork_context() if self._fork else None
        self._fork = False
        try:
            pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context or worker_context(),
                initializer=_init_worker, initargs=(self.examiner, context is not None),
            )
        except Exception as exc:  # e.g. no semaphores here: examine in this process
            _not_started(exc)
            return None
        self._starting = []
        if context is not None:
            self._starter = None
            with forking():  # now, from this thread
                self._start_workers(pool, self._starting)
            return pool
        self._starter = threading.Thread(
            target=self._start_workers, args=(pool, self._starting), daemon=True,
            name="dcmsortd-start-workers")
        self._starter.start()
        return pool

    def _start_workers(self, pool: ProcessPoolExecutor, starting: list[Future[int]]) -> None:
        """Start every worker of ``pool``; ``starting`` gets a future each answers."""
        try:
            for _ in range(self.workers):  # each submit with no idle worker starts one
                starting.append(pool.submit(_ready))
        except Exception as exc:  # no fork server, no processes: examine in this process
            self._start_failed = True
            _not_started(exc)

    def _workers_up(self) -> bool:
        """True once the workers are started and one has answered (or died: then the
        first batch finds the pool broken and starts a new one)."""
        if not self._up:
            starter = self._starter  # None: started from this thread
            if starter is not None and starter.is_alive():
                return False
            self._up = any(f.done() for f in self._starting)
        return self._up

    def _renew_pool(self, broken: ProcessPoolExecutor) -> None:
        """A worker died (killed, out of memory): the pool is broken; start a new one."""
        if self._pool is broken:
            log.warning("a worker process died (killed, or out of memory?); "
                        "starting new worker processes")
            self._drop_pool()
            self._pool = self._new_pool()

    def feed_line(self, raw: bytes | str) -> None:
        try:
            arrival = parse_line(raw)
        except NotificationError as exc:
            log.error("pipe line rejected: %s", exc)
            return
        if self.on_fed is not None:
            self.on_fed(arrival)
        self.feed(arrival)

    def feed(self, arrival: Arrival) -> None:
        if self._pool is None:
            self._submit()  # what still waits for workers that are gone goes first
            self._apply(self._examine_inline(arrival))
            return
        if not self._inflight and not self._batch and not self._workers_up():
            self._apply(self._examine_inline(arrival))
            return
        self._batch.append(arrival)
        if len(self._batch) >= BATCH or self._a_worker_is_idle():
            self._submit()
        self._collect(block=len(self._inflight) > 4 * self.workers)

    def workers_alive(self) -> int:
        """Worker processes alive now (0 when files are examined in this process)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return sum(1 for p in list(processes.values()) if p.is_alive())

    def poll(self) -> None:
        """File what the workers have finished; hand what waits to an idle worker."""
        if self._a_worker_is_idle():
            self._submit()  # nothing without a pool or with nothing waiting
        self._collect(block=False)

    def _a_worker_is_idle(self) -> bool:
        return len(self._inflight) < self.workers

    def _examine_inline(self, arrival: Arrival) -> Examined:
        return self.examiner(arrival, self.rule_keys())

    def _submit(self) -> None:
        if not self._batch:
            return
        if self._pool is None:  # the workers are gone for good (a new pool failed to start)
            self._examine_waiting_here()
            return
        batch, self._batch = self._batch, []
        pool = self._pool
        try:
            future = pool.submit(_examine_batch, batch, self.rule_keys())
        except BrokenProcessPool:  # a worker died: a new pool gets the batch
            self._renew_pool(pool)
            resubmitted = self._resubmit(batch)
            if resubmitted is None:
                self._batch = batch
                self._examine_waiting_here()
                return
            future, pool = resubmitted
        self._inflight.append((batch, future, pool))

    def _resubmit(
        self, batch: list[Arrival]
    ) -> tuple[Future[list[Examined]], ProcessPoolExecutor] | None:
        """``batch`` handed to the new pool; None when there is none (``_new_pool`` said
        why) or it cannot take work: the workers are then given up, said once."""
        pool = self._pool
        if pool is None:
            return None
        try:
            return pool.submit(_examine_batch, batch, self.rule_keys()), pool
        except Exception as exc:  # noqa: BLE001 - whatever it is, the files go on here
            starter = self._starter
            if starter is not None:
                starter.join(timeout=10.0)  # it fails the same way: one line for both
            if not self._start_failed:
                _not_started(exc)
            self._drop_pool()
            return None

    def _drop_pool(self) -> None:
        """Give up on worker processes: from now on every file is examined here."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _examine_waiting_here(self) -> None:
        """File what is in flight, then examine what waits in this process, in order."""
        self._drain()
        batch, self._batch = self._batch, []
        for arrival in batch:
            self._apply(self._examine_inline(arrival))

    def _collect(self, block: bool) -> None:
        while self._inflight and (block or self._inflight[0][1].done()):
            batch, future, pool = self._inflight.popleft()
            try:
                results = future.result()
            except Exception as exc:  # a worker died: examine this batch here instead
                log.error("worker failed (%s); examining %d file(s) in the main process",
                          exc or type(exc).__name__, len(batch))
                if isinstance(exc, BrokenProcessPool):
                    self._renew_pool(pool)
                results = [self._examine_inline(a) for a in batch]
            for ex in results:
                self._apply(ex)
            block = block and len(self._inflight) > 4 * self.workers

    def settle(self) -> None:
        """Examine and file everything fed so far."""
        self._submit()
        self._drain()

    def _drain(self) -> None:
        """Wait for and file every batch in flight."""
        while self._inflight:
            self._collect(block=True)

    def _apply(self, ex: Examined) -> None:
        try:
            outcome = self.sorter.handle(ex)
        except Exception as exc:  # the one place a notification's failure is contained
            log.exception("%s: unexpected error, skipped: %s", ex.arrival.path, exc)
            outcome = "failed"
        if self.on_done is not None:
            self.on_done(ex.arrival, outcome)

    def close(self) -> None:
        self.settle()
        if self._starter is not None:
            self._starter.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
