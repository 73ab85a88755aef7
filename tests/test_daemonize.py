"""detach: a real double fork, readiness and failure reported to the starting process."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osprocs import run_py

START = """
    import json, os, sys, time
    from dcmsortd.service.daemonize import detach
    from dcmsortd.model.errors import DaemonError
    mode, facts, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    starter = os.getpid()
    try:
        child = detach(ready_timeout=timeout)
    except DaemonError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    if child is None:
        print("started")
        sys.exit(0)
    with child:
        fd = {n: os.readlink(f"/proc/self/fd/{n}") for n in (0, 1, 2)}
        known = dict(pid=os.getpid(), sid=os.getsid(0), starter=starter, cwd=os.getcwd(), fd=fd)
        with open(facts + ".tmp", "w") as out:
            json.dump(known, out)
        os.rename(facts + ".tmp", facts)
        if mode == "ready":
            time.sleep(0.3)
            child.report_ready()
            time.sleep(60)
        elif mode == "fail":
            raise DaemonError("dcmsortd for this project already runs (pid 1, pid file /p)")
        elif mode == "silent":
            time.sleep(60)
        elif mode == "crash":
            os._exit(3)
"""


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def facts(tmp_path: Path) -> Iterator[Path]:
    """Where the daemon writes what it sees; the daemon is killed afterwards if still there."""
    path = tmp_path / "facts.json"
    yield path
    if path.exists():
        pid = json.loads(path.read_text())["pid"]
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)


def test_start_returns_only_once_the_daemon_is_ready(facts: Path) -> None:
    start = time.monotonic()
    result = run_py(START, "ready", facts, 10)
    assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "")
    assert time.monotonic() - start >= 0.3
    known = json.loads(facts.read_text())
    assert not gone(known["pid"])
    assert known["pid"] != known["starter"]
    assert known["sid"] not in (known["pid"], os.getsid(0))  # own session, not its leader
    assert known["cwd"] == "/"
    assert set(known["fd"].values()) == {os.devnull}
    os.kill(known["pid"], signal.SIGTERM)
    assert wait_gone(known["pid"])


def test_the_daemons_failure_message_reaches_the_starter(facts: Path) -> None:
    result = run_py(START, "fail", facts, 10)
    assert result.returncode == 1
    assert result.stderr.strip() == "dcmsortd for this project already runs (pid 1, pid file /p)"
    assert wait_gone(json.loads(facts.read_text())["pid"])


def test_a_daemon_ending_without_a_report_is_a_failure(facts: Path) -> None:
    result = run_py(START, "quit", facts, 10)
    assert result.returncode == 1
    assert result.stderr.strip() == "the daemon ended before it was ready"


def test_a_silent_daemon_times_out(facts: Path) -> None:
    start = time.monotonic()
    result = run_py(START, "silent", facts, 0.5)
    assert time.monotonic() - start < 5
    assert result.returncode == 1
    pid = json.loads(facts.read_text())["pid"]
    assert result.stderr.strip() == f"the daemon (pid {pid}) did not report ready within 0.5 s"


def test_a_daemon_dying_without_a_word_is_a_failure(facts: Path) -> None:
    result = run_py(START, "crash", facts, 10)
    assert result.returncode == 1
    pid = json.loads(facts.read_text())["pid"]
    assert result.stderr.strip() == f"the daemon (pid {pid}) ended before it was ready; see its log"
