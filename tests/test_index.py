"""The processed-files index: processes opening a new index at the same moment all work."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from dcmsortd.sorting.index import QUERY_PATHS, ProcessedIndex


def _open_and_record(path: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    index = ProcessedIndex(path)
    index.record(f"/archive/{os.getpid()}", 1, 2, "sorted")
    index.commit()
    index.close()


def test_processes_creating_the_index_at_once_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(15):
        path = str(tmp_path / f"r{round_}" / "processed.sqlite")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_and_record, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        index = ProcessedIndex(path)
        assert len(index.snapshot()) == 4
        index.close()


def test_known_answers_for_the_paths_asked_across_query_batches(tmp_path: Path) -> None:
    """Lookups go a few hundred paths a query: every batch boundary and odd path works."""
    index = ProcessedIndex(str(tmp_path / "processed.sqlite"))
    odd = ["/a/it's \"quoted\"", "/a/ünï cödé", "/a/comma,and;semicolon", "/a/%_wild*"]
    held = [f"/archive/{n:05d}" for n in range(0, 2 * QUERY_PATHS + 7, 2)] + odd
    for n, path in enumerate(held):
        index.record(path, n, 10 * n, "sorted")
    index.commit()
    asked = [f"/archive/{n:05d}" for n in range(2 * QUERY_PATHS + 9)] + odd + ["/a/%"]
    found = index.known(asked)
    assert found == {p: (n, 10 * n) for n, p in enumerate(held)}
    assert index.known([]) == {}
    index.close()
