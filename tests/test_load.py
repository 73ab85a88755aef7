"""Load (issue 4 item 8): 32 writer processes at once, like ``storescp --fork`` children.

Every line names its own file (a distinct SOP instance), and every line has the same
length, so lines written, processed and spooled can be counted from outside: a writer's
``/proc/<pid>/io`` ``wchar`` over the line length is the number of lines it wrote.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemonproc import Site, stop, wait_for
from feeder import backlog, outcome_counts, status, wait_listening
from manyfiles import clone_bytes, template, uid
from osprocs import start_py
from realfiles import pydicom_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITERS = 32
LINES_EACH = 500
WAITING = 50_000
MEMORY_LIMIT_KB = 250 * 1024

# Writes each line of the file argv[2] into the FIFO argv[1] (one write per line, blocking
# while the pipe is full), as fast as it can.
WRITER = """
import os, sys
with open(sys.argv[2], "rb") as fh:
    lines = fh.read().splitlines(keepends=True)
fd = os.open(sys.argv[1], os.O_WRONLY)
for line in lines:
    os.write(fd, line)
os.close(fd)
"""


@dataclass(frozen=True)
class LoadFiles:
    """WRITERS series of LINES_EACH distinct images, one series per writer."""

    root: Path
    paths: list[list[Path]]  # per writer
    series: list[str]

    def line(self, path: Path) -> bytes:
        return f"SCANNER,FIONA,127.0.0.1,{path.parent},{path.name}\n".encode()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> LoadFiles:
    """16 000 small real MR images (pydicom's MR_small re-stamped, then cloned)."""
    root = tmp_path_factory.mktemp("load-files")
    paths, series = [], []
    for w in range(WRITERS):
        folder = root / f"w{w:02d}"
        folder.mkdir()
        uid_w = uid(5, w + 1)
        data = template(pydicom_data("MR_small.dcm"), root / "template.dcm", uid(5), uid_w,
                        {"PatientID": "LOAD1", "StudyDate": "20240105", "StudyTime": "120000"})
        mine = []
        for number in range(1, LINES_EACH + 1):
            path = folder / f"{number:05d}.dcm"
            path.write_bytes(clone_bytes(data, uid_w, number))
            mine.append(path)
        paths.append(mine)
        series.append(uid_w)
    (root / "template.dcm").unlink()
    return LoadFiles(root, paths, series)


def _site(base: Path, files: LoadFiles) -> Site:
    return Site(base, config={"dcmsortd": {"input_roots": [str(files.root)]}})


@dataclass
class Writer:
    """One writer process and the number of bytes it has to write."""

    proc: subprocess.Popen[str]
    size: int

    def written(self) -> int:
        """Bytes written so far: its ``wchar``, or all of them once it exited cleanly."""
        if self.proc.poll() is None:
            with suppress(OSError):  # gone meanwhile: it exited
                io = Path(f"/proc/{self.proc.pid}/io").read_text()
                return int(io.split("wchar:")[1].split()[0])
        assert self.proc.wait() == 0, "a writer failed"
        return self.size

    def frozen(self) -> bool:
        if self.proc.poll() is not None:
            return True
        with suppress(OSError):
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] in ("T", "t", "Z")
        return True


@contextmanager
def writers(pipe: Path, work: Path, lines: list[list[bytes]]) -> Iterator[list[Writer]]:
    """One writer process per list of lines, all started at once; killed when left early."""
    work.mkdir(exist_ok=True)
    started = []
    for n, mine in enumerate(lines):
        listing = work / f"writer{n:02d}.lines"
        listing.write_bytes(b"".join(mine))
        started.append(Writer(start_py(WRITER, pipe, listing), listing.stat().st_size))
    try:
        yield started
    finally:
        for writer in started:
            if writer.proc.poll() is None:
                writer.proc.kill()
            writer.proc.communicate(timeout=30)


def _stop_writers(started: list[Writer]) -> int:
    """Freeze every writer still running (SIGSTOP), add up the bytes they all wrote, then
    kill them."""
    for writer in started:
        if writer.proc.poll() is None:
            writer.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: all(w.frozen() for w in started), 10, "the writers to stop")
    written = sum(w.written() for w in started)
    for writer in started:
        if writer.proc.poll() is None:
            writer.proc.kill()
            writer.proc.wait()
    return written


def _sorted_images(site: Site) -> int:
    """The images the series records count (records lag at most a second behind)."""
    return sum(int(r["NumFiles"]) for r in site.records().values())


def _log_errors(site: Site) -> list[str]:
    return [line for line in site.log_text().splitlines() if " ERROR " in line]


def test_32_writers_500_lines_each_every_line_sorted_exactly_once(
    files: LoadFiles, tmp_path: Path
) -> None:
    """32 processes each write 500 lines as fast as they can: all 16 000 are processed
    (each series has NumFiles 500), none twice (the daemon's outcome counts are exactly
    16 000 sorted and the processed-files index holds 16 000 distinct paths), none merged
    or torn (no line rejected, no error logged)."""
    site = _site(tmp_path / "site", files)
    lines = [[files.line(p) for p in mine] for mine in files.paths]
    daemon = site.start_run("--no-catch-up")
    started = time.monotonic()
    try:
        wait_listening(site.pipe)
        with writers(site.pipe, tmp_path / "writers", lines) as running:
            assert [w.proc.wait(timeout=120) for w in running] == [0] * WRITERS
        written = time.monotonic() - started
        wait_for(lambda: _sorted_images(site) == WRITERS * LINES_EACH, 120, "all sorted")
        peak = status(daemon.pid)
    finally:
        code, out = stop(daemon, timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert outcome_counts(site.log_text())[-1] == {"sorted": WRITERS * LINES_EACH}
    assert _log_errors(site) == []
    assert "pipe line rejected" not in site.log_text()
    records = site.records()
    assert sorted(Path(k).stem for k in records) == sorted(files.series)
    assert {r["NumFiles"] for r in records.values()} == {str(LINES_EACH)}
    with sqlite3.connect(site.site / ".dcmsortd" / "processed.sqlite") as db:
        rows = db.execute("SELECT COUNT(DISTINCT path), COUNT(*) FROM files "
                          "WHERE outcome = 'sorted'").fetchone()
    db.close()
    assert rows == (WRITERS * LINES_EACH, WRITERS * LINES_EACH)
    assert peak["VmHWM"] < MEMORY_LIMIT_KB
    print(f"{WRITERS * LINES_EACH} lines: written in {written:.1f} s, sorted in {elapsed:.1f} s; "
          f"daemon VmHWM {peak['VmHWM'] // 1024} MB, VmRSS {peak['VmRSS'] // 1024} MB")


def test_memory_stays_bounded_while_50000_lines_wait_and_none_is_lost_at_stop(
    files: LoadFiles, tmp_path: Path
) -> None:
    """32 writers hold 60 000 lines (blocked on the full pipe) while the daemon sorts: its
    memory stays bounded while 50 000 or more wait (VmHWM under 250 MB, hardly growing).
    Then the writers die and the daemon is stopped with the pipe full: every line a writer
    got into the pipe is either processed or spooled (SIGTERM spools what it read but did
    not sort)."""
    site = _site(tmp_path / "site", files)
    flat = [p for mine in files.paths for p in mine]
    each = -(-(WAITING + 10_000) // WRITERS)  # so that 50 000 still wait a while later
    lines = [[files.line(flat[(w * each + i) % len(flat)]) for i in range(each)]
             for w in range(WRITERS)]
    size = len(lines[0][0])
    assert {len(line) for mine in lines for line in mine} == {size}
    total = sum(map(len, lines))
    daemon = site.start_run("--no-catch-up")
    samples: list[tuple[int, int, int]] = []  # (lines waiting, VmRSS kB, VmHWM kB)
    try:
        wait_listening(site.pipe)
        probe = os.open(site.pipe, os.O_WRONLY | os.O_NONBLOCK)
        try:
            with writers(site.pipe, tmp_path / "writers", lines) as started:
                wait_for(lambda: backlog(probe) > 60_000, 30, "the pipe to fill up")
                for _ in range(6):
                    time.sleep(0.5)
                    sent = sum(w.written() for w in started) // size
                    waiting = total - sent + backlog(probe) // size
                    mem = status(daemon.pid)
                    samples.append((waiting, mem["VmRSS"], mem["VmHWM"]))
                sent = _stop_writers(started) // size
        finally:
            os.close(probe)
    finally:
        code, out = stop(daemon, timeout=60)
    assert code == 0, out
    print("lines waiting, daemon VmRSS, VmHWM (MB):",
          [(w, r // 1024, h // 1024) for w, r, h in samples])
    assert len([w for w, _, _ in samples if w >= WAITING]) >= 3
    assert max(h for _, _, h in samples) < MEMORY_LIMIT_KB
    assert samples[-1][1] - samples[0][1] < 50 * 1024
    counts = outcome_counts(site.log_text())[-1]
    spool = site.site / ".dcmsortd" / "spool"
    spooled = len(list(spool.glob("*.line")))
    assert counts == {"sorted": counts.get("sorted", 0)} and spooled > 0
    assert counts["sorted"] + spooled == sent


def test_send_waits_as_long_as_the_daemon_keeps_reading(files: LoadFiles, tmp_path: Path) -> None:
    """``dcmsortd send`` of many lines (an operator re-sending ``failed.tsv``) to a daemon
    frozen twice for 3 s (SIGSTOP) with 0.1 s of work in between: sending takes longer than
    send's 5 s limit for a full pipe, yet the pipe never stays full that long. Every line
    goes in and is sorted: the limit applies to a pipe that stays full, not to the send."""
    site = _site(tmp_path / "site", files)
    lines: list[str] = []
    size = 0
    for path in (p for mine in files.paths for p in mine):
        if size > 200 * 1024:  # more than the pipe and one read of the daemon (128 KiB)
            break
        lines.append(files.line(path).decode().removesuffix("\n"))
        size += len(lines[-1]) + 1
    daemon = site.start_run("--no-catch-up")

    def freeze_twice() -> None:
        time.sleep(3.0)
        os.kill(daemon.pid, signal.SIGCONT)
        time.sleep(0.1)
        os.kill(daemon.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(daemon.pid, signal.SIGCONT)

    thread = threading.Thread(target=freeze_twice)
    try:
        wait_listening(site.pipe)
        os.kill(daemon.pid, signal.SIGSTOP)
        thread.start()
        started = time.monotonic()
        result = site.cli("send", *lines, timeout=120)
        took = time.monotonic() - started
        thread.join()
        assert result.returncode == 0, result.stderr
        wait_for(lambda: _sorted_images(site) == len(lines), 60, "all sorted")
    finally:
        if thread.is_alive():
            thread.join()
        os.kill(daemon.pid, signal.SIGCONT)
        code, out = stop(daemon)
    assert code == 0, out
    assert took > 5.0, "the daemon read too fast to prove anything"
    assert outcome_counts(site.log_text())[-1] == {"sorted": len(lines)}
    print(f"send of {len(lines)} lines took {took:.1f} s")
