"""The named pipe with real FIFOs and real writer processes."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcmsortd.intake.pipe import (
    LONG_LINE_HEAD,
    MAX_STRAY_BYTES,
    PIPE_BUF,
    Line,
    LineSplitter,
    LongLine,
    PipeReader,
    prepare_fifo,
    write_lines,
)
from dcmsortd.model.errors import DaemonError
from dcmsortd.model.notice import parse_line
from osprocs import start_py

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown files to nobody")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / ".processSingleFilePipe"
    prepare_fifo(path)
    return path


def take(items: Iterator[Line | None], count: int, timeout: float = 5.0) -> list[Line]:
    """The next ``count`` lines, skipping idle ticks; fails after ``timeout`` seconds."""
    got: list[Line] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} lines: {got[-3:]}"
        item = next(items)
        if item is not None:
            got.append(item)
    return got


def write_raw(path: Path, *chunks: bytes, pause: float = 0.0) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for chunk in chunks:
            os.write(fd, chunk)
            time.sleep(pause)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- prepare_fifo


def test_new_fifo_has_exactly_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    old = os.umask(0o077)
    try:
        assert prepare_fifo(path, 0o620) == []
    finally:
        os.umask(old)
    found = os.lstat(path)
    assert stat.S_ISFIFO(found.st_mode)
    assert stat.S_IMODE(found.st_mode) == 0o620


def test_stale_fifo_of_ours_is_reused_with_the_mode_reapplied(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    os.chmod(path, 0o666)
    inode = os.lstat(path).st_ino
    assert prepare_fifo(path, 0o600) == []
    assert os.lstat(path).st_ino == inode
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_writer_blocked_on_a_stale_fifo_is_served_once_we_read(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    writer = subprocess.Popen(["sh", "-c", f"echo 'a,b,c,/d,e' > {path}"])
    time.sleep(0.2)  # the echo now waits for a reader
    prepare_fifo(path)
    with PipeReader(path) as reader:
        assert take(iter(reader), 1) == [b"a,b,c,/d,e"]
    assert writer.wait(timeout=5) == 0


def test_symlink_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "pipe"
    link.symlink_to(target)
    with pytest.raises(DaemonError, match="symbolic link"):
        prepare_fifo(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "precious\n"


def test_dangling_symlink_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    link = tmp_path / "pipe"
    link.symlink_to(tmp_path / "planted")
    with pytest.raises(DaemonError, match="symbolic link"):
        prepare_fifo(link)
    assert not (tmp_path / "planted").exists()


@as_root
@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_anything_owned_by_another_user_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "pipe"
    if kind == "file":
        path.write_text("/planted/line\n")
    else:
        os.mkfifo(path, 0o666)
    os.chown(path, NOBODY, NOBODY)
    before = os.lstat(path)
    with pytest.raises(DaemonError, match=f"belongs to uid {NOBODY}"):
        prepare_fifo(path)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_uid) == (before.st_ino, before.st_mode, NOBODY)
    if kind == "file":
        assert path.read_text() == "/planted/line\n"


def test_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    path.mkdir()
    with pytest.raises(DaemonError, match="directory"):
        prepare_fifo(path)
    assert path.is_dir()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DaemonError, match="cannot prepare the pipe"):
        prepare_fifo(tmp_path / "no" / "pipe")


def test_stray_regular_file_gives_its_lines_and_becomes_the_fifo(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    path.write_bytes(b"a,b,c,/d,e\n/x/y.dcm\n\n/bad/\xff\n/no/newline")
    lines = prepare_fifo(path, 0o620)
    assert lines == ["a,b,c,/d,e", "/x/y.dcm", "/bad/\udcff", "/no/newline"]
    assert lines[2].encode("utf-8", "surrogateescape") == b"/bad/\xff"
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o620


def test_oversized_stray_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    with open(path, "wb") as sparse:
        sparse.truncate(MAX_STRAY_BYTES + 1)
    with pytest.raises(DaemonError, match="move it away by hand"):
        prepare_fifo(path)
    assert path.is_file() and path.stat().st_size == MAX_STRAY_BYTES + 1


# ---------------------------------------------------------------- LineSplitter (pure)

LIMIT = 64
piece = st.binary(max_size=2 * LIMIT).map(lambda b: b.replace(b"\n", b""))


@given(lines=st.lists(piece, max_size=30), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_splitter_yields_each_line_once_however_the_bytes_arrive(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    splitter = LineSplitter(LIMIT)
    got: list[Line] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        got += splitter.feed(stream[start:end])
    expected = [line if len(line) <= LIMIT else LongLine(line[:LIMIT], LIMIT) for line in lines]
    assert got == expected
    assert splitter.rest() == []


def test_splitter_rest_gives_an_unterminated_tail() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.rest() == [b"tw"]
    assert splitter.rest() == []


# ---------------------------------------------------------------- PipeReader


def test_32_writer_processes_500_lines_each_nothing_lost_or_merged(fifo: Path) -> None:
    writer = """
        import os, sys
        path, wid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        pad = "x" * (40 + 5 * wid)
        for i in range(count):
            fd = os.open(path, os.O_WRONLY)  # like storescp's echo: open, write, close
            os.write(fd, f"w{wid:02d} {i:04d} {pad}\\n".encode())
            os.close(fd)
    """
    writers, count = 32, 500
    with PipeReader(fifo, idle_interval=0.1) as reader:
        procs = [start_py(writer, fifo, wid, count, capture=False) for wid in range(writers)]
        got = take(iter(reader), writers * count, timeout=25)
        assert [p.wait(timeout=10) for p in procs] == [0] * writers
        assert reader.pending() == []  # nothing extra
    seen: dict[int, list[int]] = {wid: [] for wid in range(writers)}
    for line in got:
        assert isinstance(line, bytes)
        match = re.fullmatch(rb"w(\d\d) (\d{4}) (x+)", line)
        assert match, line[:100]
        wid = int(match[1])
        assert len(match[3]) == 40 + 5 * wid, line[:100]
        seen[wid].append(int(match[2]))
    assert all(numbers == list(range(count)) for numbers in seen.values())


def test_idle_reader_ticks_and_does_not_spin(fifo: Path) -> None:
    idle = """
        import json, sys, time
        from dcmsortd.intake.pipe import PipeReader
        with PipeReader(sys.argv[1], idle_interval=0.2) as reader:
            print("open", flush=True)
            ticks, lines = 0, 0
            cpu, start = time.process_time(), time.monotonic()
            for item in reader:
                ticks += item is None
                lines += item is not None
                if time.monotonic() - start >= 1.0:
                    break
            print(json.dumps({"ticks": ticks, "lines": lines, "cpu": time.process_time() - cpu}))
    """
    proc = start_py(idle, fifo)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "open\n"
    for _ in range(20):  # writers coming and going without writing must not cause EOF
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=10)
    facts = json.loads(out)
    assert facts["lines"] == 0
    assert 3 <= facts["ticks"] <= 6
    assert facts["cpu"] < 0.1


def test_a_partial_line_waits_for_its_end(fifo: Path) -> None:
    with PipeReader(fifo, idle_interval=0.05) as reader:
        items = iter(reader)
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b"abc")
        assert [next(items) for _ in range(3)] == [None, None, None]
        os.write(fd, b"def\nnext\n")
        os.close(fd)
        assert take(items, 2) == [b"abcdef", b"next"]


def test_crlf_is_left_to_the_line_parser(fifo: Path) -> None:
    with PipeReader(fifo) as reader:
        write_raw(fifo, b"AE1,AE2,10.0.0.1,/data/in,x.dcm\r\n")
        (line,) = take(iter(reader), 1)
    assert line == b"AE1,AE2,10.0.0.1,/data/in,x.dcm\r"
    assert isinstance(line, bytes)
    assert parse_line(line).path == "/data/in/x.dcm"


def test_over_long_line_is_reported_once_and_the_reader_resyncs(fifo: Path) -> None:
    with PipeReader(fifo, idle_interval=0.05) as reader:
        items = iter(reader)
        write_raw(fifo, b"A" * 10_000 + b"\nok\n" + b"C" * 4096 + b"\n")
        assert take(items, 3) == [LongLine(b"A" * LONG_LINE_HEAD, 4096), b"ok", b"C" * 4096]
        write_raw(fifo, b"B" * 3000, b"B" * 3000, b"B" * 3000 + b"\nnext\n", pause=0.1)
        assert take(items, 2) == [LongLine(b"B" * LONG_LINE_HEAD, 4096), b"next"]


def test_stop_from_another_thread_ends_the_iteration(fifo: Path) -> None:
    with PipeReader(fifo, idle_interval=10) as reader:
        threading.Timer(0.2, reader.stop).start()
        start = time.monotonic()
        assert list(reader) == []
        assert time.monotonic() - start < 2


def test_stop_from_a_signal_handler_closes_every_descriptor(fifo: Path) -> None:
    program = """
        import os, signal, sys
        from dcmsortd.intake.pipe import PipeReader
        before = len(os.listdir("/proc/self/fd"))
        reader = PipeReader(sys.argv[1], idle_interval=30).open()
        signal.signal(signal.SIGTERM, lambda *_: reader.stop())
        print("open", flush=True)
        items = sum(1 for _ in reader)
        reader.close()
        print(items, len(os.listdir("/proc/self/fd")) - before, flush=True)
    """
    proc = start_py(program, fifo)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "open\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert out.split() == ["0", "0"]


def test_pending_returns_what_was_not_yet_yielded(fifo: Path) -> None:
    with PipeReader(fifo) as reader:
        items = iter(reader)
        write_lines(fifo, ["one", "two", "three"])
        assert take(items, 1) == [b"one"]
        reader.stop()
        with pytest.raises(StopIteration):
            next(items)
        write_raw(fifo, b"four\nfi")
        assert reader.pending() == [b"two", b"three", b"four", b"fi"]


def test_reader_refuses_a_path_that_is_not_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    path.write_text("")
    with pytest.raises(DaemonError, match="not a pipe"):
        PipeReader(path).open()


# ---------------------------------------------------------------- write_lines


def test_write_lines_reaches_the_reader(fifo: Path) -> None:
    with PipeReader(fifo) as reader:
        write_lines(fifo, ["a,b,c,/d,e", b"/x/y.dcm\n"])
        assert take(iter(reader), 2) == [b"a,b,c,/d,e", b"/x/y.dcm"]


def test_write_lines_without_a_pipe_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    with pytest.raises(DaemonError, match=f"no daemon listens on {path}"):
        write_lines(path, ["/x"])
    assert not os.path.lexists(path)


def test_write_lines_to_a_fifo_without_reader_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    start = time.monotonic()
    with pytest.raises(DaemonError, match=f"no daemon listens on {path}"):
        write_lines(path, ["/x"])
    assert time.monotonic() - start < 1


def test_write_lines_never_writes_into_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "pipe"
    path.write_text("stray\n")
    with pytest.raises(DaemonError, match="no daemon listens on .*regular file"):
        write_lines(path, ["/x"])
    assert path.read_text() == "stray\n"


@pytest.mark.parametrize("bad", ["x" * PIPE_BUF, "two\nlines"])
def test_write_lines_checks_every_line_before_writing(fifo: Path, bad: str) -> None:
    with PipeReader(fifo) as reader:
        with pytest.raises(DaemonError, match="cannot be sent in one piece"):
            write_lines(fifo, ["/fine", bad])
        reader.stop()
        assert reader.pending() == []


def test_write_lines_gives_up_when_the_daemon_does_not_read(fifo: Path) -> None:
    stuck = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        start = time.monotonic()
        with pytest.raises(DaemonError, match="does not read"):
            write_lines(fifo, ["x" * 4000] * 40, timeout=0.3)
        assert time.monotonic() - start < 2
    finally:
        os.close(stuck)
