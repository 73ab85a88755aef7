"""start / status / stop / restart on real detached daemons, through dcmsortd and through
FIONA's ``processSingleFile3.py`` verbs. No test leaves a daemon running."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonproc import Site, is_fifo, wait_for
from dcmsortd.model.errors import DaemonError
from dcmsortd.service.pidfile import is_running
from realfiles import pydicom_data, restamp

pytestmark = pytest.mark.e2e

STUDY = "1.2.826.0.1.3680043.8.498.300"
SERIES = STUDY + ".1"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ours(pid: int) -> bool:
    try:
        return b"dcmsortd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Reaper:
    """Daemons a test may leave behind: by pid file and by pid; all ended at teardown."""

    def __init__(self) -> None:
        self.pid_files: list[Path] = []
        self.pids: set[int] = set()
        self.pipes: list[Path] = []

    def end_all(self) -> None:
        for pid_file in self.pid_files:
            try:
                pid = is_running(pid_file)
            except DaemonError:
                pid = None
            if pid is not None:
                self.pids.add(pid)
        for pid in self.pids:
            if alive(pid) and ours(pid):
                os.kill(pid, signal.SIGTERM)
                try:
                    wait_for(lambda pid=pid: not alive(pid), 5, f"pid {pid} to end")
                except AssertionError:
                    os.kill(pid, signal.SIGKILL)
        for pipe in self.pipes:
            if is_fifo(pipe) and pipe.lstat().st_uid == os.getuid():
                pipe.unlink()


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.end_all()


def status_of(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert out.returncode == 0, out.stdout + out.stderr
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert {"pid", "pipe", "datadir"} <= set(fields), out.stdout
    return fields


def dicom_into(folder: Path, number: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return restamp(pydicom_data("MR_small.dcm"), folder / f"mr{number}.dcm", STUDY, SERIES,
                   f"{SERIES}.{number}", InstanceNumber=number)


def num_files(datadir: Path) -> str | None:
    record = datadir / "site" / "raw" / STUDY / f"{SERIES}.json"
    try:
        return str(json.loads(record.read_text())["NumFiles"])
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------- dcmsortd start|status|stop


def test_start_status_second_start_restart_stop(tmp_path: Path, reaper: Reaper) -> None:
    site = Site(tmp_path)
    reaper.pid_files.append(site.pid_file)
    assert site.cli("status").returncode == 3

    started = site.cli("start")
    assert started.returncode == 0, started.stderr
    assert is_fifo(site.pipe)  # start returns once the pipe exists
    first = status_of(site.cli("status"))
    pid = int(first["pid"])
    reaper.pids.add(pid)
    assert alive(pid) and pid != os.getpid()
    assert (first["pipe"], first["datadir"]) == (str(site.pipe), str(site.datadir))
    assert site.log_file.is_file()

    again = site.cli("start")
    assert again.returncode == 1
    assert "already running" in again.stderr and f"pid {pid}" in again.stderr
    assert int(status_of(site.cli("status"))["pid"]) == pid  # the first one keeps working
    one = dicom_into(site.archive, 1)
    sent = site.cli("send", f"SCANNER,FIONA,127.0.0.1,{one.parent},{one.name}")
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: num_files(site.datadir) == "1", 20, "the first file sorted")

    restarted = site.cli("restart")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = int(status_of(site.cli("status"))["pid"])
    reaper.pids.add(new_pid)
    assert new_pid != pid and not alive(pid)
    two = dicom_into(site.archive, 2)
    assert site.cli("send", str(two)).returncode == 0
    wait_for(lambda: num_files(site.datadir) == "2", 20, "the second file sorted")

    stopped = site.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not alive(new_pid)  # stop returned only once the process was gone
    assert not os.path.lexists(site.pipe) and not site.pid_file.exists()
    assert site.cli("status").returncode == 3
    log = site.log_text()
    assert "Traceback" not in log and f"[{pid}]" in log and f"[{new_pid}]" in log


def test_after_a_crash_status_says_not_running_and_restart_starts(
    tmp_path: Path, reaper: Reaper
) -> None:
    site = Site(tmp_path)
    reaper.pid_files.append(site.pid_file)
    assert site.cli("start", "--no-catch-up").returncode == 0
    pid = int(status_of(site.cli("status"))["pid"])
    reaper.pids.add(pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the killed daemon to end")
    assert site.pid_file.exists() and is_fifo(site.pipe)  # left behind by the crash
    assert site.cli("status").returncode == 3  # the lock, not the file, tells
    restarted = site.cli("restart", "--no-catch-up")
    assert restarted.returncode == 0, restarted.stderr
    assert "not running" in restarted.stdout
    new_pid = int(status_of(site.cli("status"))["pid"])
    reaper.pids.add(new_pid)
    assert new_pid != pid
    assert site.cli("stop").returncode == 0
    assert not alive(new_pid) and not os.path.lexists(site.pipe)


def test_stop_and_status_without_a_daemon(tmp_path: Path) -> None:
    site = Site(tmp_path)
    stopped = site.cli("stop")
    assert stopped.returncode == 0 and "not running" in stopped.stdout
    status = site.cli("status")
    assert status.returncode == 3 and str(site.pid_file) in status.stdout


def test_start_with_invalid_rules_fails_before_detaching(tmp_path: Path, reaper: Reaper) -> None:
    site = Site(tmp_path)
    reaper.pid_files.append(site.pid_file)
    bad = tmp_path / "rules.json"
    bad.write_text("[{]")
    out = site.cli("start", "--rules", str(bad))
    assert out.returncode == 2
    assert f"{bad}: 1 problem(s)" in out.stderr and "invalid JSON at line 1" in out.stderr
    assert not os.path.lexists(site.pipe) and is_running(site.pid_file) is None


def test_a_daemon_that_cannot_start_reports_why(tmp_path: Path, reaper: Reaper) -> None:
    """The pipe path is a symlink (planted in /tmp, say): the daemon refuses, `start` says so,
    the log says so, and nothing is left running."""
    site = Site(tmp_path)
    reaper.pid_files.append(site.pid_file)
    target = tmp_path / "elsewhere"
    target.write_text("")
    site.pipe.symlink_to(target)
    out = site.cli("start")
    assert out.returncode == 1
    assert str(site.pipe) in out.stderr and "symbolic link" in out.stderr
    assert is_running(site.pid_file) is None and not site.pid_file.exists()
    assert site.pipe.is_symlink() and target.read_text() == ""  # untouched
    assert "symbolic link" in site.log_text()


# ---------------------------------------------------------------- processSingleFile3.py

# processSingleFile3.py takes no path flags: pid and log go to ~/.pids and ~/logs (HOME is
# tmp_path here), the pipe to /tmp/.processSingleFilePipe<project> (a unique project), and
# the data folder comes from SITES.<project>.DATADIR of the default config file. That file
# is FIONA's /data/config/config.json, outside tmp: this child points the default at a
# config under tmp_path and changes nothing else.
COMPAT = """
import sys
import dcmsortd.service.config
dcmsortd.service.config.DEFAULT_CONFIG = sys.argv[1]
from dcmsortd.cli.compat import main
sys.exit(main(sys.argv[2:]))
"""


def test_processsinglefile3_verbs_on_a_real_daemon(tmp_path: Path, reaper: Reaper) -> None:
    project = f"dcmsortdtest{secrets.token_hex(4)}"
    home, data, conf = tmp_path / "home", tmp_path / "data", tmp_path / "config"
    home.mkdir()
    conf.mkdir()
    config = conf / "config.json"
    config.write_text(json.dumps({"SITES": {project: {"DATADIR": str(data)}}}))
    rules = [{"type": "PHANTOMTEST", "id": "P", "rules": [{"tag": ["Modality"], "value": "MR"}]}]
    (conf / "classifyRules.json").write_text(json.dumps(rules))
    pipe = Path(f"/tmp/.processSingleFilePipe{project}")
    pid_file = home / ".pids" / f"processSingleFile{project}.pid"
    reaper.pid_files.append(pid_file)
    reaper.pipes.append(pipe)
    env = {**os.environ, "HOME": str(home)}

    def fiona(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", COMPAT, str(config), *argv], env=env,
                              capture_output=True, text=True, timeout=60)

    tested = fiona("test", project)
    assert tested.returncode == 0, tested.stderr
    assert [r["type"] for r in json.loads(tested.stdout)] == ["PHANTOMTEST"]

    assert fiona("status", project).returncode == 3
    started = fiona("start", project)
    assert started.returncode == 0, started.stderr
    assert is_fifo(pipe) and pid_file.is_file()
    assert (home / "logs" / f"processSingleFile{project}.log").is_file()
    first = status_of(fiona("status", project))
    pid = int(first["pid"])
    reaper.pids.add(pid)
    assert (first["pipe"], first["datadir"]) == (str(pipe), str(data))

    again = fiona("start", project)
    assert again.returncode == 1 and "already running" in again.stderr
    one = dicom_into(data / "site" / "archive", 1)
    sent = subprocess.run(  # `processSingleFile3.py send` only reaches the default project
        [sys.executable, "-c", "from dcmsortd.cli.main import main_entry; main_entry()",
         "send", "--project", project, f"A,B,127.0.0.1,{one.parent},{one.name}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: num_files(data) == "1", 20, "the file sorted")
    record = json.loads((data / "site" / "raw" / STUDY / f"{SERIES}.json").read_text())
    assert record["ClassifyType"] == ["PHANTOMTEST"]  # the rules next to the config

    assert fiona("restart", project).returncode == 0
    new_pid = int(status_of(fiona("status", project))["pid"])
    reaper.pids.add(new_pid)
    assert new_pid != pid and not alive(pid)

    stopped = fiona("stop", project)
    assert stopped.returncode == 0, stopped.stderr
    assert not alive(new_pid)
    assert not os.path.lexists(pipe) and not pid_file.exists()
    assert fiona("status", project).returncode == 3


def test_the_installed_processsinglefile3_script_answers_with_its_usage() -> None:
    script = Path(sysconfig.get_path("scripts")) / "processSingleFile3.py"
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    started = time.monotonic()
    out = subprocess.run([str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "usage: processSingleFile3.py start|stop|restart|status|test [project]" in out.stderr
    assert time.monotonic() - started < 10
