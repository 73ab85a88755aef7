"""The daemon's counters, rolling window and stop summary (service.stats), the status file's
reading and rendering (service.status) and the sd_notify datagrams (service.sdnotify):
pure parts with an injected clock; sd_notify over a real Unix datagram socket."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmsortd.model.notice import Arrival
from dcmsortd.service.config import Settings, resolve
from dcmsortd.service.pidfile import PidFile
from dcmsortd.service.sdnotify import SdNotify
from dcmsortd.service.stats import LATENCY_BUCKETS, Stats, duration, quantile, summary
from dcmsortd.service.status import as_json, look, publish, render, status_path

T0 = 1_800_000_000.0


def arrival(n: int) -> Arrival:
    return Arrival("SCANNER", "FIONA", "10.0.0.1", f"/data/site/archive/f{n}.dcm")


def sort_one(stats: Stats, n: int, read: float, linked: float, outcome: str = "sorted") -> None:
    stats.noticed(arrival(n), read)
    stats.done(arrival(n), outcome, linked)


def test_counts_rate_and_latency_over_the_last_minute() -> None:
    stats = Stats(started=T0)
    for n in range(100):  # 100 files in the first 10 s, 20 ms each but two of 1 s
        sort_one(stats, n, T0 + n / 10, T0 + n / 10 + (1.0 if n in (50, 60) else 0.02))
    sort_one(stats, 1000, T0 + 11, T0 + 11.002, outcome="bad")
    stats.done(arrival(2000), "rejected", T0 + 11)  # (a file no notice was read for)
    snap = stats.snapshot(T0 + 20)
    assert (snap["files_sorted"], snap["files_failed"]) == (100, 2)
    assert snap["outcomes"] == {"bad": 1, "rejected": 1, "sorted": 100}
    assert snap["rate_per_s"] == 5.0  # 100 files over the 20 s it has been up
    assert snap["latency_samples"] == 100
    assert 0.02 <= snap["latency_median_s"] <= 0.022  # the bucket's upper edge: 9 % wide
    assert 1.0 <= snap["latency_p99_s"] <= 1.09
    assert snap["uptime_s"] == 20.0
    assert sum(snap["latency_buckets"]) == 100
    assert snap["latency_buckets"][LATENCY_BUCKETS.index(0.025)] == 98  # 20 ms: le 0.025
    assert snap["latency_buckets"][LATENCY_BUCKETS.index(1.0)] == 2
    assert snap["latency_sum_s"] == pytest.approx(98 * 0.02 + 2.0)


def test_the_window_forgets_what_is_older_than_a_minute() -> None:
    stats = Stats(started=T0)
    for n in range(30):
        sort_one(stats, n, T0 + n, T0 + n + 5.0)  # slow, early
    for n in range(30, 40):
        sort_one(stats, n, T0 + 100 + n, T0 + 100 + n + 0.002)  # fast, later
    snap = stats.snapshot(T0 + 150)
    assert snap["files_sorted"] == 40  # the counts are since start
    assert snap["latency_samples"] == 10 and snap["latency_p99_s"] < 0.003
    assert snap["rate_per_s"] == pytest.approx(10 / 60, abs=0.001)
    later = stats.snapshot(T0 + 1000)
    assert later["latency_samples"] == 0 and later["rate_per_s"] == 0.0
    assert later["latency_median_s"] is None and later["latency_p99_s"] is None


def test_files_without_a_notice_count_but_have_no_latency() -> None:
    """The start-up catch-up finds files on disk: sorted, but no arrival time."""
    stats = Stats(started=T0)
    stats.done(arrival(1), "sorted", T0 + 1)
    sort_one(stats, 2, T0 + 1, T0 + 1.5)
    snap = stats.snapshot(T0 + 2)
    assert snap["files_sorted"] == 2 and snap["latency_samples"] == 1


def test_the_same_line_twice_is_matched_in_order() -> None:
    stats = Stats(started=T0)
    stats.noticed(arrival(1), T0)
    stats.noticed(arrival(1), T0 + 3)
    stats.done(arrival(1), "sorted", T0 + 4)  # 4 s after the first notice
    stats.done(arrival(1), "sorted", T0 + 4)  # 1 s after the second
    snap = stats.snapshot(T0 + 5)
    assert snap["latency_samples"] == 2
    assert 1.0 <= snap["latency_median_s"] <= 1.09 and 4.0 <= snap["latency_p99_s"] <= 4.4
    assert quantile(Counter(), 0.5) is None


def test_the_last_error_and_the_summary() -> None:
    stats = Stats(started=T0)
    for n in range(3):
        sort_one(stats, n, T0, T0 + 1)
    stats.done(arrival(9), "bad", T0 + 2)
    stats.done(arrival(8), "ignored", T0 + 2)
    stats.error("/x.dcm: not a DICOM file", T0 + 2)
    assert stats.snapshot(T0 + 3)["last_error"] == {"time": T0 + 2,
                                                     "message": "/x.dcm: not a DICOM file"}
    assert summary(stats, T0 + 3725) == \
        "3 file(s) sorted, 1 failed (1 bad), 1 ignored, up 1 h 02 min 05 s"
    assert summary(Stats(started=T0), T0 + 2.5) == "0 file(s) sorted, 0 failed, up 2.5 s"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.25, "0.2 s"), (59, "59.0 s"), (61, "1 min 01 s"), (7322, "2 h 02 min 02 s"),
    (90061, "1 d 01 h 01 min"),
])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# ---------------------------------------------------------------- the status file


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return resolve({"config": str(tmp_path / "c.json"), "pid_dir": str(tmp_path / "pids"),
                   "datadir": str(tmp_path / "mine"), "project": "P"}, home=str(tmp_path))


@pytest.fixture(autouse=True)
def config(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{}")


def test_status_shows_the_daemons_own_state_while_its_pid_file_is_locked(
    tmp_path: Path, settings: Settings
) -> None:
    path = status_path(settings)
    assert path == str(tmp_path / "pids" / "processSingleFileP.status.json")
    stats = Stats(started=T0)
    sort_one(stats, 1, T0, T0 + 0.004)
    state = {"pid": os.getpid(), "datadir": "/the/daemons/data", "pipe": "/tmp/p",
             "started_at": T0, "updated_at": T0 + 9, "workers": 2, "workers_alive": 2,
             "spool_backlog": 3, "providers": ["completion"],
             "completion": {"pending_series": 2, "hooks_failed_total": 1},
             **stats.snapshot(T0 + 9)}
    assert look(settings).pid is None  # no pid file, no daemon
    with PidFile(settings.pid_file):
        assert look(settings).state is None  # nothing published yet
        publish(path, state)
        view = look(settings, now=T0 + 10)
        assert view.pid == os.getpid() and view.state is not None
        assert view.state["uptime_s"] == 10.0 and view.state["published_s_ago"] == 1.0
        lines = render(view)
        assert lines[0] == "dcmsortd: running"
        assert "datadir: /the/daemons/data" in lines  # not the caller's "mine"
        assert "files sorted: 1" in lines and "spool backlog: 3" in lines
        assert "workers: 2 (2 worker process(es) alive)" in lines
        assert "completion: hooks_failed_total 1, pending_series 2" in lines
        assert "last error: none" in lines
        assert not [line for line in lines if line.startswith("warning:")]
        stuck = render(look(settings, now=T0 + 9 + 31))
        assert stuck[1].startswith("warning: this status was published 31 s ago")
        out = as_json(view)
        assert out["running"] is True and out["datadir"] == "/the/daemons/data"
        json.dumps(out)  # printable as is
        publish(path, {**state, "pid": os.getpid() + 1})  # another run's file
        assert look(settings).state is None
    view = look(settings)
    assert view.pid is None and render(view)[0].startswith("dcmsortd: not running")
    assert as_json(view) == {"running": False, "pid_file": settings.pid_file}


def test_publish_replaces_the_file_whole(tmp_path: Path) -> None:
    (tmp_path / "pids").mkdir()
    path = str(tmp_path / "pids" / "s.json")
    publish(path, {"a": 1})
    publish(path, {"b": 2})
    assert json.loads(Path(path).read_text()) == {"b": 2}
    assert os.listdir(tmp_path / "pids") == ["s.json"]  # no temporary file left


# ---------------------------------------------------------------- sd_notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_sd_notify_sends_ready_status_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notify = SdNotify.from_env({"NOTIFY_SOCKET": path})
    assert notify.active and notify.watchdog is None
    notify.ready("listening")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=listening",
                                                    f"MAINPID={os.getpid()}"]
    notify.stopping("stopping")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    notify.tick(0.0)  # no watchdog asked for: nothing sent
    notify.status("x")
    assert sock.recv(4096) == b"STATUS=x"


def test_sd_notify_abstract_socket_and_watchdog() -> None:
    name = f"dcmsortd-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notify = SdNotify.from_env({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert notify.watchdog == 1.0  # half of systemd's timeout
        sent = []
        for now in (10.0, 10.5, 11.0, 11.2, 12.1):
            notify.tick(now)
        sock.setblocking(False)
        while True:
            try:
                sent.append(sock.recv(4096))
            except BlockingIOError:
                break
        assert sent == [b"WATCHDOG=1"] * 3  # at 10.0, 11.0 and 12.1


def test_sd_notify_is_silent_without_a_socket_and_says_once_when_it_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not SdNotify.from_env({}).active
    assert SdNotify.from_env({}).send("READY=1") is False
    assert SdNotify.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10",
                              "WATCHDOG_PID": "1"}).watchdog is None  # not ours
    gone = SdNotify(str(tmp_path / "nobody"))
    assert gone.send("READY=1") is False and gone.send("READY=1") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1
