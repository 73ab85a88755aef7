"""--workers N: a worker process that dies (killed, out of memory) does not stop the daemon."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from daemonproc import Site, stop, wait_for
from feeder import feed, wait_listening
from manyfiles import Corpus, uid, write_series
from realfiles import pydicom_data

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


def _num_files(site: Site, series: str) -> str | None:
    for name, record in site.records().items():
        if Path(name).stem == series:
            return str(record.get("NumFiles"))
    return None


def test_a_killed_worker_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    site = Site(tmp_path)
    corpus = Corpus(site.archive)
    series = uid(70, 1)
    first = write_series(corpus, pydicom_data("MR_small.dcm"), uid(70), series, 60, {})
    second = write_series(corpus, pydicom_data("MR_small.dcm"), uid(70), series, 60, {},
                          first=61)
    daemon = site.start_run("--no-catch-up", "--workers", "2")
    try:
        wait_listening(site.pipe)
        feed(site.pipe, [f"{p}\n".encode() for p in first])
        wait_for(lambda: _num_files(site, series) == "60", 60, "the first 60 images")
        workers = [w for child in _children(daemon.pid) for w in _children(child)]
        assert workers, "no worker processes found under the daemon"
        os.kill(workers[0], signal.SIGKILL)
        feed(site.pipe, [f"{p}\n".encode() for p in second])
        wait_for(lambda: _num_files(site, series) == "120", 60, "all 120 images")
        assert daemon.poll() is None
    finally:
        code, out = stop(daemon, timeout=30)
    assert code == 0, out
    assert "Traceback" not in site.log_text()
