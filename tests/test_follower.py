"""The journal follower on real files: order, durable positions, rotation, many writers."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from dcmsortd.intake.follower import Follower
from dcmsortd.intake.inotify import FolderWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def append(path: Path, *lines: str) -> None:
    """As storescp's shell line does: O_APPEND, one write per line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        for line in lines:
            os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def take(follower: Follower) -> list[bytes]:
    follower.wake()
    out = []
    while (line := follower.next_line()) is not None:
        out.append(line)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "journal"


def test_lines_come_in_order_and_a_partial_line_waits(folder: Path) -> None:
    with_follower = Follower(str(folder)).open()
    assert take(with_follower) == []  # no journal yet: nothing, no error
    journal = folder / "arrivals"
    append(journal, "a,b,c,/d,1", "a,b,c,/d,2")
    with open(journal, "ab") as fh:
        fh.write(b"a,b,c,/d,3")  # no newline yet
    assert take(with_follower) == [b"a,b,c,/d,1", b"a,b,c,/d,2"]
    with open(journal, "ab") as fh:
        fh.write(b"\n")
    assert take(with_follower) == [b"a,b,c,/d,3"]
    with_follower.close()


def test_a_restart_resumes_after_the_last_commit(folder: Path) -> None:
    journal = folder / "arrivals"
    first = Follower(str(folder)).open()
    append(journal, "1", "2", "3")
    assert take(first) == [b"1", b"2", b"3"]
    first.commit()
    append(journal, "4", "5")
    assert take(first) == [b"4", b"5"]  # handed out, never committed (a crash now)
    first.close()
    second = Follower(str(folder)).open()
    assert take(second) == [b"4", b"5"]  # read again: never lost
    second.commit()
    second.close()
    third = Follower(str(folder)).open()
    assert take(third) == []
    third.close()


def test_a_damaged_position_file_means_reading_from_the_start(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder.mkdir()
    append(folder / "arrivals", "1", "2")
    (folder / "arrivals.pos").write_text("garbage")
    follower = Follower(str(folder)).open()
    assert take(follower) == [b"1", b"2"]
    assert "reading the journal from its start" in caplog.text
    follower.close()


def test_rotation_keeps_a_late_writers_line_and_retires_the_old_file(folder: Path) -> None:
    clock = Clock()
    journal = folder / "arrivals"
    follower = Follower(str(folder), rotate_bytes=10, grace=60.0, clock=clock).open()
    append(journal, "line-1", "line-2")
    late = os.open(journal, os.O_WRONLY | os.O_APPEND)  # a writer that opened before
    assert take(follower) == [b"line-1", b"line-2"]
    follower.commit()  # read to the end and over 10 bytes: rotated
    assert (folder / "arrivals.old").exists() and not journal.exists()
    os.write(late, b"late-line\n")  # lands in the rotated file
    os.close(late)
    append(journal, "new-1")  # a new live file
    assert take(follower) == [b"late-line", b"new-1"]
    follower.commit()
    clock.now += 59
    follower.commit()
    assert (folder / "arrivals.old").exists()  # within the grace time: still followed
    clock.now += 2
    follower.commit()
    assert not (folder / "arrivals.old").exists()
    follower.close()
    again = Follower(str(folder)).open()
    assert take(again) == []  # nothing read twice after the rotation
    again.close()


def test_stopped_between_rename_and_saving_nothing_is_read_twice(folder: Path) -> None:
    journal = folder / "arrivals"
    first = Follower(str(folder)).open()
    append(journal, "1", "2")
    assert take(first) == [b"1", b"2"]
    first.commit()
    first.close()
    os.rename(journal, folder / "arrivals.old")  # the rotation's rename, state not saved
    append(folder / "arrivals.old", "3")
    append(journal, "4")
    second = Follower(str(folder)).open()
    assert take(second) == [b"3", b"4"]
    second.close()


def test_the_watch_turns_readable_on_an_append(folder: Path) -> None:
    folder.mkdir()
    watch = FolderWatch.open(str(folder))
    if watch is None:
        pytest.skip("no inotify here")
    try:
        poller = select.poll()
        poller.register(watch.fileno(), select.POLLIN)
        assert poller.poll(0) == []
        append(folder / "arrivals", "x")
        assert poller.poll(1000)
        assert watch.clear() is True
        assert poller.poll(0) == []
    finally:
        watch.close()


def test_many_shell_writers_at_once_lose_no_line_and_tear_none(folder: Path) -> None:
    """storescp --fork runs a shell per file: 8 shells append 250 lines each at once, the
    lines 60 to 3 060 bytes long (a single write each, as dash's echo does)."""
    folder.mkdir()
    journal = folder / "arrivals"
    script = ('i=0; pad=$(printf "%0*d" "$2" 0); while [ $i -lt 250 ]; do '
              'echo "W$1,$i,${pad}${pad}${pad}" >> "$3"; i=$((i+1)); done')
    writers = [subprocess.Popen(["/bin/sh", "-c", script, "sh", str(w), str(20 + 333 * w),
                                 str(journal)]) for w in range(8)]
    follower = Follower(str(folder)).open()
    got: list[bytes] = []
    while any(w.poll() is None for w in writers):
        got += take(follower)
    assert all(w.wait() == 0 for w in writers)
    got += take(follower)
    follower.close()
    assert len(got) == 8 * 250
    seen = set()
    for line in got:
        writer, number, pad = line.decode().split(",")
        assert pad == "0" * (3 * (20 + 333 * int(writer[1:]))), line[:80]
        seen.add((writer, int(number)))
    assert len(seen) == 8 * 250


def test_a_line_end_missing_for_a_megabyte_is_skipped_with_one_log_line(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder.mkdir()
    with open(folder / "arrivals", "wb") as fh:
        fh.write(b"first\n" + b"x" * (5 * 1024 * 1024 + 10) + b"\nok\n")
    follower = Follower(str(folder)).open()
    with caplog.at_level(logging.ERROR):
        got = take(follower)
    assert got == [b"first", b"ok"]  # the overlong line is dropped whole, its end included
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "without a line end" in errors[0].getMessage()
    follower.close()


@pytest.mark.parametrize("extra", [0, 1])
def test_an_overlong_line_ending_at_a_chunk_edge_takes_no_line_with_it(
        folder: Path, extra: int) -> None:
    folder.mkdir()
    with open(folder / "arrivals", "wb") as fh:
        fh.write(b"x" * (1024 * 1024 + extra) + b"\nnext\nok\n")
    follower = Follower(str(folder)).open()
    assert take(follower) == [b"next", b"ok"]
    follower.close()


def test_without_inotify_journal_lines_come_while_the_pipe_stays_busy(
        folder: Path, tmp_path: Path) -> None:
    """No watch: the journal is looked at every idle interval, not only when the pipe is quiet."""
    from dcmsortd.intake.pipe import PipeReader, prepare_fifo

    pipe = tmp_path / "pipe"
    prepare_fifo(pipe)
    follower = Follower(str(folder), watch=False).open()
    assert follower.fileno() == -1
    reader = PipeReader(pipe, idle_interval=0.05, source=follower).open()
    writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"".join(b"pipe-%04d\n" % i for i in range(3000)))  # ~30 KB
        append(folder / "arrivals", "journal-line")
        seen: list[bytes] = []
        for item in reader:
            assert isinstance(item, bytes), "the pipe never went quiet: no idle tick"
            seen.append(item)
            if item == b"journal-line":
                break
            time.sleep(0.001)  # a sorter at work: the pipe stays busy for about 3 s
        assert len(seen) < 3000  # it came long before the pipe was drained
    finally:
        os.close(writer)
        reader.close()
        follower.close()


def test_with_inotify_journal_lines_come_while_the_pipe_stays_busy(
        folder: Path, tmp_path: Path) -> None:
    from dcmsortd.intake.pipe import PipeReader, prepare_fifo

    pipe = tmp_path / "pipe"
    prepare_fifo(pipe)
    follower = Follower(str(folder)).open()
    reader = PipeReader(pipe, idle_interval=0.05, source=follower).open()
    writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"".join(b"pipe-%04d\n" % i for i in range(3000)))
        seen: list[bytes] = []
        for item in reader:
            assert isinstance(item, bytes), "the pipe never went quiet: no idle tick"
            seen.append(item)
            if len(seen) == 5:
                append(folder / "arrivals", "journal-line")
            if item == b"journal-line":
                break
            time.sleep(0.001)
        assert len(seen) < 3000
    finally:
        os.close(writer)
        reader.close()
        follower.close()
