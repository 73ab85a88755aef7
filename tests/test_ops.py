"""Operating a real ``dcmsortd run``: one daemon per project, a full or read-only disk,
signals, rules reload and log rotation.

Issue 4, items 4 (one daemon per project), 7 (disk full and read-only) and 11 (operations).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonproc import CLI, Site, is_fifo, stop, wait_for
from dcmsortd.cli.output import OneLineFormatter
from dcmsortd.sorting.failed import FailedList
from pipefeed import ERROR_SHAPE, error_lines, feed, line_for, linked, run_cli, wait_linked
from realfiles import restamp, shared_dicom

pytestmark = pytest.mark.e2e

STUDY = "1.2.826.0.1.3680043.8.498.6"
WHEN = {"StudyDate": "20240102", "StudyTime": "101010", "PatientID": "OPS01"}


def _image(folder: Path, series: int, n: int) -> Path:
    uid = f"{STUDY}.{series}"
    folder.mkdir(parents=True, exist_ok=True)
    return restamp(shared_dicom("siemens_vb17_axial.dcm"), folder / f"s{series}_{n}.dcm",
                   STUDY, uid, f"{uid}.{n}", InstanceNumber=n, **WHEN)


def _record(site: Site, series: int) -> dict[str, object] | None:
    path = site.site / "raw" / STUDY / f"{STUDY}.{series}.json"
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def _num_files(site: Site, series: int) -> str | None:
    record = _record(site, series)
    return None if record is None else str(record.get("NumFiles"))


# ------------------------------------------------------------ item 4: one daemon per project


def test_a_second_daemon_for_the_project_fails_and_the_first_keeps_working(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)
    first = site.start_run("--no-catch-up")
    try:
        pipe_inode = site.pipe.lstat().st_ino
        again = run_cli(site, "run", "--no-catch-up", timeout=20)
        assert again.returncode == 1
        assert f"already runs (pid {first.pid}" in again.stderr, again.stderr
        detached = run_cli(site, "start", "--no-catch-up", timeout=20)
        assert detached.returncode == 1
        assert f"already running for project '' (pid {first.pid}" in detached.stderr
        # the first one's pipe and pid file are untouched, and it still sorts
        assert site.pipe.lstat().st_ino == pipe_inode
        assert site.pid_file.read_text().strip() == str(first.pid)
        image = _image(site.archive, 1, 1)
        feed(site.pipe, [line_for(image)])
        wait_linked(site, image)
        assert first.poll() is None
    finally:
        code, out = stop(first)
    assert code == 0, out


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("stale", ["dead process", "live unrelated process"])
def test_a_stale_pid_file_is_replaced(tmp_path: Path, stale: str) -> None:
    site = Site(tmp_path)
    site.pid_dir.mkdir()
    site.pid_file.write_text(f"{_dead_pid() if stale == 'dead process' else 1}\n")
    daemon = site.start_run("--no-catch-up")
    try:
        wait_for(lambda: site.pid_file.read_text().strip() == str(daemon.pid), 10,
                 "our pid in the pid file")
        status = run_cli(site, "status")
        assert status.returncode == 0 and f"pid: {daemon.pid}" in status.stdout
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert not site.pid_file.exists()


def test_start_replaces_a_stale_pid_file_and_stop_ends_it(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.pid_dir.mkdir()
    site.pid_file.write_text(f"{_dead_pid()}\n")
    started = run_cli(site, "start", "--no-catch-up", timeout=40)
    try:
        assert started.returncode == 0, started.stderr
        pid = int(site.pid_file.read_text())
        image = _image(site.archive, 2, 1)
        feed(site.pipe, [line_for(image)])
        wait_linked(site, image)
    finally:
        stopped = run_cli(site, "stop", timeout=40)
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not site.pid_file.exists() and not site.pipe.exists()


# -------------------------------------------------------- item 7: disk full, read-only disk


def _mount(args: list[str], what: str) -> None:
    out = subprocess.run(["mount", *args], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot {what} here (mount: {out.stderr.strip()}); needs CAP_SYS_ADMIN")


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs with 400 inodes at tmp_path/data."""
    where = tmp_path / "data"
    where.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=16m,nr_inodes=400,mode=0755", "tmpfs", str(where)],
           "mount a small tmpfs")
    try:
        yield where
    finally:
        _umount(where)


def _fill(folder: Path) -> None:
    """Use up every block and every inode of the file system holding ``folder``."""
    folder.mkdir()
    fd = os.open(folder / "blocks", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    n = 0
    try:
        while True:
            (folder / f"inode{n}").touch()
            n += 1
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


def _assert_no_temp_file_left(site: Site) -> None:
    """No temporary file stays behind. A running daemon retries what failed, each retry
    with a temporary file of a new name that lives for a moment: one seen twice, half a
    second apart, was left behind."""
    first = set((site.site / "temp").glob("*.tmp"))
    time.sleep(0.5)
    assert not first & set((site.site / "temp").glob("*.tmp"))


def _failed_list(site: Site) -> list[list[str]]:
    path = site.site / "temp" / "failed.tsv"
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines()]


def _failed_lines(site: Site, path: Path) -> list[str]:
    return [x for x in site.log_text().splitlines() if f"] {path}: " in x]


def test_a_full_disk_fails_per_file_keeps_records_and_recovers_by_itself(
    small_disk: Path, tmp_path: Path
) -> None:
    site = Site(tmp_path)
    incoming = tmp_path / "incoming"  # storescp's archive, on another (not full) disk
    a = [_image(incoming, 1, n) for n in range(1, 5)]
    b = [_image(incoming, 2, n) for n in range(1, 4)]
    daemon = site.start_run("--no-catch-up", "--input-root", str(incoming))
    try:
        feed(site.pipe, [line_for(a[0]), line_for(a[1])])
        wait_for(lambda: _num_files(site, 1) == "2", 15, "series A with two images")
        record_a = (site.site / "raw" / STUDY / f"{STUDY}.1.json").read_bytes()

        _fill(small_disk / "filler")
        errors_before = len(error_lines(site))
        missing = incoming / "gone.dcm"
        feed(site.pipe, [line_for(a[2]), line_for(b[0]), line_for(b[1]), line_for(missing)])
        for path in (a[2], b[0], b[1], missing):
            wait_for(lambda p=path: _failed_lines(site, p), 15, f"the error line of {path}")
        time.sleep(1.0)  # idle ticks with a full disk: no error line repeats
        while_full = error_lines(site)[errors_before:]
        assert daemon.poll() is None
        for path in (a[2], b[0], b[1]):
            (line,) = _failed_lines(site, path)
            assert " ERROR " in line and "No space left on device" in line, line
        # one line per file, and at most one per thing that keeps failing (never repeated)
        assert len(while_full) <= 4 + 3, "\n".join(while_full)
        for what in ("heartbeat", "failed list", "processed-files index", "record"):
            assert len([x for x in while_full if f"cannot write the {what}" in x or
                        f"cannot append to the {what}" in x or
                        f"cannot update the {what}" in x]) <= 1, what
        assert (site.site / "raw" / STUDY / f"{STUDY}.1.json").read_bytes() == record_a
        _assert_no_temp_file_left(site)

        for p in (small_disk / "filler").iterdir():  # space is back
            p.unlink()
        feed(site.pipe, [line_for(a[3]), line_for(b[2])])
        wait_for(lambda: _num_files(site, 1) == "3" and _num_files(site, 2) == "1", 15,
                 "sorting to resume by itself")
        wait_for(lambda: len(_failed_list(site)) == 3, 15, "the failed list")
        failed = _failed_list(site)
        assert [row[1] for row in failed] == [str(a[2]), str(b[0]), str(b[1])]
        assert all("No space left on device" in row[2] for row in failed)
        # an operator re-sends what failed
        feed(site.pipe, [line_for(Path(row[1])) for row in failed])
        wait_for(lambda: _num_files(site, 1) == "4" and _num_files(site, 2) == "3", 15,
                 "the re-sent files")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert sorted(linked(site).values()) == sorted(map(str, a + b))
    for line in error_lines(site):
        assert ERROR_SHAPE.match(line), line


def test_a_read_only_study_folder_fails_per_file_and_recovers_by_itself(tmp_path: Path) -> None:
    """The study folder is made read-only (a read-only bind mount), its series A folder
    stays writable (a writable bind mount inside): a new image of A is linked but its
    record cannot be replaced; a new series B cannot be created at all."""
    site = Site(tmp_path)
    a = [_image(site.archive, 1, n) for n in range(1, 4)]
    b = _image(site.archive, 2, 1)
    study = site.site / "raw" / STUDY
    series_a = study / f"{STUDY}.1"
    daemon = site.start_run("--no-catch-up")
    mounted: list[Path] = []
    try:
        feed(site.pipe, [line_for(a[0])])
        wait_for(lambda: _num_files(site, 1) == "1", 15, "series A")
        record_a = (study / f"{STUDY}.1.json").read_bytes()
        for where, mode in ((study, "ro"), (series_a, "rw")):
            _mount(["--bind", str(where), str(where)], f"bind-mount {where.name}")
            mounted.insert(0, where)
            _mount(["-o", f"remount,bind,{mode}", str(where)], f"remount {where.name} {mode}")

        feed(site.pipe, [line_for(a[1]), line_for(b)])
        wait_for(lambda: len(_failed_list(site)) == 1, 15, "the failed list")
        wait_for(lambda: "cannot write the record" in site.log_text(), 15, "the record error")
        time.sleep(1.0)  # idle ticks retry the record: no error line repeats
        (failed,) = _failed_lines(site, b)
        assert " ERROR " in failed and "Read-only file system" in failed, failed
        assert _failed_list(site)[0][1] == str(b)
        record_errors = [x for x in error_lines(site) if "cannot write the record" in x]
        assert len(record_errors) == 1 and f"{STUDY}.1.json: " in record_errors[0]
        assert not _failed_lines(site, a[1])  # linked; only its record waits
        assert (study / f"{STUDY}.1.json").read_bytes() == record_a  # old record intact
        _assert_no_temp_file_left(site)
        assert daemon.poll() is None

        for where in mounted:
            _umount(where)
        mounted.clear()
        wait_for(lambda: _num_files(site, 1) == "2", 15, "the record written by itself")
        assert _record(site, 2) is None  # no record for a series none of whose files is filed
        feed(site.pipe, [line_for(a[2]), *[line_for(Path(r[1])) for r in _failed_list(site)]])
        wait_for(lambda: _num_files(site, 1) == "3" and _num_files(site, 2) == "1", 15,
                 "new and re-sent files sorted")
    finally:
        for where in mounted:
            _umount(where)
        code, out = stop(daemon)
    assert code == 0, out
    assert "written now" in site.log_text()
    for line in error_lines(site):
        assert ERROR_SHAPE.match(line), line


# ---------------------------------------------------------------- item 11: operations


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_flush_and_exit_0_within_5_seconds(
    tmp_path: Path, signum: signal.Signals
) -> None:
    site = Site(tmp_path)
    images = [_image(site.archive, 3, n) for n in range(1, 31)]
    daemon = site.start_run("--no-catch-up")
    feed(site.pipe, [line_for(p) for p in images])
    wait_linked(site, images[0])
    daemon.send_signal(signum)
    started = time.monotonic()
    code, out = stop(daemon, timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert code == 0, out
    assert not site.pipe.exists() and not site.pid_file.exists()
    links = len(list((site.site / "raw" / STUDY / f"{STUDY}.3").iterdir()))
    assert _num_files(site, 3) == str(links)  # every record written
    spooled = list((site.site / ".dcmsortd" / "spool").glob("*.line"))
    assert links + len(spooled) == len(images)  # the rest waits in the spool
    assert not list((site.site / "temp").glob("*.tmp"))
    # the next start sorts what was left
    daemon = site.start_run("--no-catch-up")
    try:
        wait_for(lambda: _num_files(site, 3) == str(len(images)), 15, "every image")
    finally:
        code, out = stop(daemon)
    assert code == 0, out


RULES_1 = [{"type": "ALPHA", "rules": [{"tag": ["Modality"], "value": "MR"}]}]
RULES_2 = [*RULES_1, {"type": "BETA", "rules": [{"tag": ["Modality"], "value": "^MR$"}]}]
RULES_BAD = [*RULES_2, {"type": "GAMMA",
                        "rules": [{"tag": ["Modality"], "operator": "~", "value": "MR"}]}]


def test_sighup_reloads_the_rules_and_keeps_them_when_the_new_file_is_invalid(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES_1))
    daemon = site.start_run("--no-catch-up", "--rules", str(rules))
    try:
        feed(site.pipe, [line_for(_image(site.archive, 4, 1))])
        wait_for(lambda: _record(site, 4), 15, "series 4")
        assert _record(site, 4)["ClassifyType"] == ["ALPHA"]  # type: ignore[index]

        rules.write_text(json.dumps(RULES_2))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules reloaded" in site.log_text(), 10, "the reload")
        feed(site.pipe, [line_for(_image(site.archive, 5, 1))])
        wait_for(lambda: _record(site, 5), 15, "series 5")
        assert _record(site, 5)["ClassifyType"] == ["ALPHA", "BETA"]  # type: ignore[index]

        rules.write_text(json.dumps(RULES_BAD))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules not reloaded" in site.log_text(), 10, "the refusal")
        feed(site.pipe, [line_for(_image(site.archive, 6, 1))])
        wait_for(lambda: _record(site, 6), 15, "series 6")
        assert _record(site, 6)["ClassifyType"] == ["ALPHA", "BETA"]  # type: ignore[index]
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    (refusal,) = error_lines(site)
    assert ERROR_SHAPE.match(refusal), refusal
    assert str(rules) in refusal and 'unknown operator "~"' in refusal


def test_the_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    site = Site(tmp_path)
    daemon = site.start_run("--no-catch-up")
    rotated = site.log_file.with_suffix(".log.1")
    try:
        feed(site.pipe, [line_for(site.archive / "before-rotation.dcm")])
        wait_for(lambda: "before-rotation.dcm" in site.log_text(), 10, "the first line")
        site.log_file.rename(rotated)  # logrotate's default 'create' mode
        feed(site.pipe, [line_for(site.archive / "after-rotation.dcm")])
        wait_for(lambda: site.log_file.exists() and "after-rotation.dcm" in site.log_text(),
                 10, "a new log file with the new line")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert "after-rotation.dcm" not in rotated.read_text()
    assert "before-rotation.dcm" not in site.log_text()
    assert "dcmsortd stopped" in site.log_text()
    assert is_fifo(site.pipe) is False


def test_failed_list_lines_wait_until_they_can_be_appended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dcmsortd")
    folder = tmp_path / "temp"  # missing: appending fails like on a full disk
    failed = FailedList(str(folder / "failed.tsv"), clock=lambda: 0.0)
    failed.add("/a/one.dcm", "cannot write: full")
    failed.add("/a/tab\there.dcm", "two\nlines")
    failed.flush()
    assert failed.waiting() == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    folder.mkdir()
    failed.flush()
    assert failed.waiting() == 0
    rows = [line.split("\t") for line in (folder / "failed.tsv").read_text().splitlines()]
    assert [row[1:] for row in rows] == [["/a/one.dcm", "cannot write: full"],
                                         ["/a/tab here.dcm", "two lines"]]
    assert "written again" in caplog.text


def test_a_log_message_is_always_one_line() -> None:
    record = logging.LogRecord("dcmsortd", logging.ERROR, __file__, 1, "%s: %s",
                               ("/a/b\x1b[2J\nc\u2028\udcff.dcm", "two\nlines"), None)
    text = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert text == "ERROR /a/b\\x1b[2J\\nc\\u2028\\udcff.dcm: two\\nlines"
    assert ERROR_SHAPE.match("2026-11-29 10:00:00,123 [1] " + text) is None  # shape needs pid


def test_ctrl_c_on_a_terminal_stops_a_daemon_with_workers_cleanly(tmp_path: Path) -> None:
    """Ctrl-C sends SIGINT to the whole foreground process group, worker processes
    included: the daemon still files what was sent, exits 0 and prints no traceback."""
    site = Site(tmp_path)
    images = [_image(site.archive, 4, n) for n in range(1, 21)]
    daemon = subprocess.Popen(  # its own process group, as a shell gives a foreground job
        [*CLI, "run", *site.args("--no-catch-up", "--workers", "2")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
    try:
        wait_for(lambda: is_fifo(site.pipe) or daemon.poll() is not None, 15, "the pipe")
        feed(site.pipe, [line_for(p) for p in images])
        wait_for(lambda: _num_files(site, 4) == str(len(images)), 30, "every image")
        os.killpg(daemon.pid, signal.SIGINT)
        out, _ = daemon.communicate(timeout=15)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.communicate()
    assert daemon.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "Traceback" not in site.log_text()
