"""--workers N: a dead worker does not stop the daemon; a slow stream is not held in batches."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemonproc import Site, stop, wait_for
from dcmsortd.service.pipeline import WORKER_NICENESS
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
        # forked from the daemon itself: its children, running its program
        workers = [w for w in _children(daemon.pid) if _cmdline(w) == _cmdline(daemon.pid)]
        assert len(workers) == 2, "no worker processes found under the daemon"
        # header parsing yields to the writer (and to storescp)
        writer = os.getpriority(os.PRIO_PROCESS, daemon.pid)
        assert [os.getpriority(os.PRIO_PROCESS, w) for w in workers] == [
            min(writer + WORKER_NICENESS, 19)] * len(workers)
        os.kill(workers[0], signal.SIGTERM)  # not the daemon's handler: the worker ends
        feed(site.pipe, [f"{p}\n".encode() for p in second])
        wait_for(lambda: _num_files(site, series) == "120", 60, "all 120 images")
        assert daemon.poll() is None
    finally:
        code, out = stop(daemon, timeout=30)
    assert code == 0, out
    assert "a worker process died" in site.log_text()
    assert "Traceback" not in site.log_text()


def test_a_slow_steady_stream_is_on_disk_within_a_second_with_workers(tmp_path: Path) -> None:
    """Lines arriving every 0.12 s never leave the pipe idle for 0.2 s, so no idle tick
    flushes: with workers, what was sent must still show in the record within 1 s."""
    site = Site(tmp_path)
    corpus = Corpus(site.archive)
    src = pydicom_data("MR_small.dcm")
    warm = write_series(corpus, src, uid(71), uid(71, 1), 1, {})
    series = uid(71, 2)
    paths = write_series(corpus, src, uid(71), series, 30, {})
    daemon = site.start_run("--no-catch-up", "--workers", "2")
    lags: list[float] = []
    try:
        wait_listening(site.pipe)
        feed(site.pipe, [f"{p}\n".encode() for p in warm])
        wait_for(lambda: _num_files(site, uid(71, 1)) == "1", 30, "the warm-up image")
        time.sleep(1.5)  # the workers are up: lines now go to them
        sent_at: list[float] = []
        for path in paths:
            feed(site.pipe, [f"{path}\n".encode()])
            sent_at.append(time.monotonic())
            deadline = time.monotonic() + 0.12
            while time.monotonic() < deadline:
                shown = int(_num_files(site, series) or 0)
                now = time.monotonic()
                # the oldest image sent but not yet in the record: how long ago was it sent?
                if shown < len(sent_at):
                    lags.append(now - sent_at[shown])
                time.sleep(0.02)
        wait_for(lambda: _num_files(site, series) == "30", 30, "all 30 images")
    finally:
        code, out = stop(daemon, timeout=30)
    assert code == 0, out
    assert lags, "the record never lagged at all: the check saw nothing"
    assert max(lags) < 1.0, f"an image sent {max(lags):.2f} s before was not in the record"


_SLOW_PRELOAD = """\
import os, time
# imported by the fork server only (dcmsortd.service.workerboot.PRELOAD): it stands for a fork
# server whose imports take long. It waits for the test's go-ahead, at most 20 s.
go = os.environ["DCMSORTD_TEST_GO"]
deadline = time.monotonic() + 20
while not os.path.exists(go):
    if time.monotonic() > deadline:
        open(go + ".timed-out", "w").close()
        break
    time.sleep(0.02)
"""

# Another thread runs, as in the daemon: the workers come from the fork server, not from a
# fork of the command's own process (see test_import_forks_its_workers_from_itself).
_OTHER_THREAD = (
    "import threading\n"
    "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
)

_IMPORT_WITH_SLOW_FORK_SERVER = _OTHER_THREAD + """\
import dcmsortd.service.workerboot
dcmsortd.service.workerboot.PRELOAD.append("slowpreload")
from dcmsortd.cli.main import main_entry
main_entry()
"""


def test_files_are_sorted_while_the_workers_are_still_starting(tmp_path: Path) -> None:
    """Starting a worker waits for the fork server's imports: that waiting must not hold
    up the files. Here (another thread runs, so the workers come from the fork server) the
    fork server cannot finish starting until every file has been sorted and recorded, so
    ``import --workers 2`` must do it all in its own process, then still use and stop
    its workers cleanly."""
    site = Site(tmp_path)
    corpus = Corpus(site.archive)
    series = uid(72, 1)
    write_series(corpus, pydicom_data("MR_small.dcm"), uid(72), series, 12, {})
    preload = tmp_path / "preload"
    preload.mkdir()
    (preload / "slowpreload.py").write_text(_SLOW_PRELOAD)
    go = tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, "-c", _IMPORT_WITH_SLOW_FORK_SERVER, "import",
         *site.args("--workers", "2", str(site.archive))],
        # PYTHONPATH: the fork server ignores the sys.path of the process that starts it
        env={**os.environ, "DCMSORTD_TEST_GO": str(go),
             "PYTHONPATH": os.pathsep.join([str(preload), *sys.path])},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _num_files(site, series) == "12", 15,
                 "all 12 images recorded while the fork server was still starting")
        ended = proc.poll()
    finally:
        go.touch()
        out, _ = proc.communicate(timeout=60)
    assert ended is None, f"import ended before its workers could start:\n{out}"
    assert not Path(f"{go}.timed-out").exists(), "the fork server was never let go"
    assert proc.returncode == 0, out
    assert "examined: 12" in out, out
    assert "ERROR" not in out and "Traceback" not in out, out


def test_workers_that_cannot_start_leave_the_work_to_the_main_process(
    tmp_path: Path,
) -> None:
    """No fork server (here: its program cannot run; another thread runs, so the workers
    would come from it): one error line, every file sorted."""
    site = Site(tmp_path)
    corpus = Corpus(site.archive)
    series = uid(73, 1)
    write_series(corpus, pydicom_data("MR_small.dcm"), uid(73), series, 8, {})
    script = _OTHER_THREAD + (
        "import multiprocessing.spawn\n"
        "multiprocessing.spawn.set_executable('/nonexistent/python')\n"  # the fork server's
        "from dcmsortd.cli.main import main_entry\n"
        "main_entry()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "import",
         *site.args("--workers", "2", str(site.archive))],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "worker processes did not start" in out.stderr, out.stderr
    assert "examined: 8" in out.stderr, out.stderr
    assert _num_files(site, series) == "8"


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()
    except OSError:
        return None


def _import_of(tmp_path: Path, key: int, images: int
               ) -> tuple[Site, str, subprocess.Popen[str]]:
    """``import --workers 2`` started on one series of ``images`` images; its output piped."""
    site = Site(tmp_path)
    series = uid(key, 1)
    write_series(Corpus(site.archive), pydicom_data("MR_small.dcm"), uid(key), series, images,
                 {})
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dcmsortd.cli.main import main_entry; main_entry()",
         "import", *site.args("--workers", "2", str(site.archive))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return site, series, proc


def test_import_forks_its_workers_from_itself(tmp_path: Path) -> None:
    """``import --workers 2`` (one thread) forks its workers from its own process: they
    are its children, running its own program with what it imported; no fork server or
    resource tracker (a second interpreter importing it all again) is started."""
    site, series, proc = _import_of(tmp_path, 75, 600)
    own = None
    children: dict[int, str] = {}
    while proc.poll() is None:
        own = own or _cmdline(proc.pid)
        try:
            found = _children(proc.pid)
        except OSError:  # it just ended
            break
        for child in found:
            cmdline = _cmdline(child)
            if cmdline and child not in children:
                children[child] = cmdline
        time.sleep(0.002)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "examined: 600" in out, out
    assert len(children) >= 2, (children, out)
    assert set(children.values()) == {own}, children
    assert _num_files(site, series) == "600"


def test_a_worker_of_an_import_killed_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    """A forked worker of ``import`` killed mid-run: its batch is examined again, a new
    pool (from the fork server: the pool's own threads run now) takes over, every file is
    sorted and the import succeeds."""
    site, series, proc = _import_of(tmp_path, 76, 1500)
    killed = None
    deadline = time.monotonic() + 30
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            found = _children(proc.pid)
            if len(found) >= 2:
                os.kill(found[0], signal.SIGKILL)
                killed = found[0]
        time.sleep(0.002)
    out, _ = proc.communicate(timeout=120)
    assert killed is not None, f"no worker seen to kill:\n{out}"
    assert proc.returncode == 0, out
    assert "a worker process died" in out, out
    assert "examined: 1500" in out and "failed: 0" in out, out
    assert _num_files(site, series) == "1500"
    assert "Traceback" not in out


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_import_killed_takes_its_forked_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL of ``import``: its forked workers (which hold a copy of their task queue's
    writing end, so they never see it end) notice their parent is gone and end too,
    instead of waiting for work forever."""
    _, _, proc = _import_of(tmp_path, 77, 3000)
    workers: list[int] = []
    deadline = time.monotonic() + 30
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            workers = _children(proc.pid)
        time.sleep(0.002)
    proc.kill()
    proc.communicate(timeout=30)
    assert len(workers) >= 2, "no workers seen"
    wait_for(lambda: not any(map(_running, workers)), 10, "the workers to end with the import")


def test_a_daemon_killed_takes_its_forked_workers_with_it(tmp_path: Path) -> None:
    site = Site(tmp_path)
    daemon = site.start_run("--no-catch-up", "--workers", "2")
    try:
        wait_listening(site.pipe)
        workers = [w for w in _children(daemon.pid) if _cmdline(w) == _cmdline(daemon.pid)]
        assert len(workers) == 2, _children(daemon.pid)
        # nor do they hold the pid file's lock: the daemon's end is seen at once
        for worker in workers:
            held = {os.readlink(f"/proc/{worker}/fd/{fd}")
                    for fd in os.listdir(f"/proc/{worker}/fd")}
            assert str(site.pid_file) not in held, held
    finally:
        daemon.kill()
        daemon.communicate(timeout=30)
    wait_for(lambda: not any(map(_running, workers)), 10, "the workers to end with the daemon")


_WORKERS_LOST_FOR_GOOD = """\
import glob, logging, os, signal, sys, time
import multiprocessing.spawn
from dcmsortd.service.config import resolve
from dcmsortd.model.notice import parse_line
from dcmsortd.rules.engine import load_rules
from dcmsortd.service.runtime import build

def main(archive, base):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    paths = sorted(glob.glob(os.path.join(archive, "*", "*.dcm")))
    settings = resolve({"datadir": os.path.join(base, "data"), "workers": 2,
                        "config": os.path.join(base, "config.json"),
                        "input_roots": [archive]}, base)
    runtime = build(settings, load_rules(None), heartbeat=False)
    for path in paths[:60]:
        runtime.pipeline.feed(parse_line(path))
    runtime.pipeline.settle()
    time.sleep(1.0)  # the workers are up
    for path in paths[60:120]:
        runtime.pipeline.feed(parse_line(path))
    runtime.pipeline.settle()
    # no new worker can ever start: the interpreter is gone and the fork server and the
    # resource tracker (this process's children; the workers are the fork server's) die
    multiprocessing.spawn.set_executable("/nonexistent/python")
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as fh:
        for pid in fh.read().split():
            os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)
    for path in paths[120:]:
        runtime.pipeline.feed(parse_line(path))
    runtime.close()
    print("linked", len([p for p in glob.glob(os.path.join(base, "data", "site", "raw",
                                                           "*", "*", "*"))
                         if os.path.islink(p)]))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
"""


def test_workers_lost_for_good_leave_every_file_to_the_main_process(tmp_path: Path) -> None:
    """Workers die and no new one can start (no fork server, no interpreter to start one):
    the pipeline says so and examines the rest itself; every file is linked."""
    site = Site(tmp_path)
    corpus = Corpus(site.archive)
    write_series(corpus, pydicom_data("MR_small.dcm"), uid(74), uid(74, 1), 180, {})
    script = tmp_path / "lost.py"
    script.write_text(_WORKERS_LOST_FOR_GOOD)
    out = subprocess.run([sys.executable, str(script), str(site.archive), str(site.root)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "linked 180", out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "worker processes did not start" in errors[0], out.stderr
