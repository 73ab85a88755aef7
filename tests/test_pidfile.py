"""The pid file lock, with second real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dcmsortd.model.errors import DaemonError
from dcmsortd.service.pidfile import PidFile, is_running, read_pid
from osprocs import run_py, start_py

TRY_ACQUIRE = """
    import sys
    from dcmsortd.model.errors import DaemonError
    from dcmsortd.service.pidfile import PidFile
    try:
        PidFile(sys.argv[1]).acquire()
    except DaemonError as exc:
        print(exc)
        sys.exit(1)
"""

HOLD = """
    import sys, time
    from dcmsortd.service.pidfile import PidFile
    with PidFile(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
"""


@pytest.fixture
def pid_path(tmp_path: Path) -> Path:
    return tmp_path / ".pids" / "processSingleFileABCD.pid"


def test_acquire_creates_folders_and_writes_our_pid(pid_path: Path) -> None:
    with PidFile(pid_path):
        assert pid_path.read_text() == f"{os.getpid()}\n"
        assert read_pid(pid_path) == os.getpid()
    assert not pid_path.exists()


def test_a_second_process_is_refused_clearly(pid_path: Path) -> None:
    with PidFile(pid_path):
        result = run_py(TRY_ACQUIRE, pid_path)
        assert result.returncode == 1
        assert result.stdout.strip() == (
            f"dcmsortd for this project already runs (pid {os.getpid()}, pid file {pid_path})"
        )
        assert read_pid(pid_path) == os.getpid()  # the holder's file is intact


def test_a_second_holder_in_the_same_process_is_refused(pid_path: Path) -> None:
    with PidFile(pid_path), pytest.raises(DaemonError, match="already runs"):
        PidFile(pid_path).acquire()


def test_is_running_sees_the_holder_from_another_process(pid_path: Path) -> None:
    probe = ("import sys; from dcmsortd.service.pidfile import is_running; "
             "print(is_running(sys.argv[1]))")
    with PidFile(pid_path):
        assert run_py(probe, pid_path).stdout.strip() == str(os.getpid())
    assert run_py(probe, pid_path).stdout.strip() == "None"


def test_a_stale_pid_file_is_replaced(pid_path: Path) -> None:
    pid_path.parent.mkdir()
    pid_path.write_text("99999\n")
    assert is_running(pid_path) is None
    assert read_pid(pid_path) == 99999
    with PidFile(pid_path):
        assert read_pid(pid_path) == os.getpid()


def test_a_killed_daemon_leaves_a_file_that_is_stale_at_once(pid_path: Path) -> None:
    holder = start_py(HOLD, pid_path)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        assert is_running(pid_path) == holder.pid
        assert run_py(TRY_ACQUIRE, pid_path).returncode == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=5)
    assert read_pid(pid_path) == holder.pid  # the file stays behind...
    assert is_running(pid_path) is None  # ...unlocked
    with PidFile(pid_path):
        assert read_pid(pid_path) == os.getpid()


@pytest.mark.parametrize("content", ["", "garbage\n", "-5\n", "0\n"])
def test_read_pid_of_junk_is_none(pid_path: Path, content: str) -> None:
    pid_path.parent.mkdir()
    pid_path.write_text(content)
    assert read_pid(pid_path) is None


def test_missing_pid_file(pid_path: Path) -> None:
    assert read_pid(pid_path) is None
    assert is_running(pid_path) is None


def test_a_symlinked_pid_file_is_refused(pid_path: Path, tmp_path: Path) -> None:
    pid_path.parent.mkdir()
    target = tmp_path / "elsewhere"
    pid_path.symlink_to(target)
    with pytest.raises(DaemonError, match="cannot take the pid file"):
        PidFile(pid_path).acquire()
    assert not target.exists()


def test_release_is_idempotent(pid_path: Path) -> None:
    held = PidFile(pid_path).acquire()
    held.release()
    held.release()
    assert not pid_path.exists()
