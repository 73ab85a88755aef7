"""notify: through the pipe when a daemon listens, else into the spool; never blocks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from dcmsortd.intake.notifier import notify
from dcmsortd.intake.pipe import PIPE_BUF, PipeReader, prepare_fifo
from dcmsortd.intake.spool import Spool

LINE = "AE1,AE2,10.0.0.1,/data/in,x.dcm"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    prepare_fifo(path)
    return path


def spooled(spool: Spool) -> list[str]:
    return [spool.read(entry) for entry in spool.entries()]


def fill(fd: int) -> None:
    """Write into a non-blocking pipe until it is full."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, b"f" * 4095 + b"\n")
    except BlockingIOError:
        return


def test_no_pipe_goes_to_the_spool_and_creates_nothing_there(tmp_path: Path, spool: Spool) -> None:
    path = tmp_path / "pipe"
    assert notify(LINE + "\n", path, spool) == "spool"
    assert spooled(spool) == [LINE]
    assert not os.path.lexists(path)


def test_fifo_without_reader_goes_to_the_spool_at_once(fifo: Path, spool: Spool) -> None:
    start = time.monotonic()
    assert notify(LINE, fifo, spool) == "spool"
    assert time.monotonic() - start < 1
    assert spooled(spool) == [LINE]


def test_with_a_reader_the_line_goes_through_the_pipe(fifo: Path, spool: Spool) -> None:
    with PipeReader(fifo) as reader:
        assert notify(LINE, fifo, spool) == "pipe"
        items = iter(reader)
        assert next(item for item in items if item is not None) == LINE.encode()
    assert spool.entries() == []


def test_a_stray_file_at_the_pipe_path_is_left_alone(tmp_path: Path, spool: Spool) -> None:
    path = tmp_path / "pipe"
    path.write_text("/earlier/line\n")
    assert notify(LINE, path, spool) == "spool"
    assert path.read_text() == "/earlier/line\n"
    assert spooled(spool) == [LINE]


def test_a_symlink_at_the_pipe_path_is_not_followed(
    fifo: Path, tmp_path: Path, spool: Spool
) -> None:
    link = tmp_path / "link"
    link.symlink_to(fifo)
    with PipeReader(fifo) as reader:
        assert notify(LINE, link, spool) == "spool"
        reader.stop()
        assert reader.pending() == []
    assert spooled(spool) == [LINE]


@pytest.mark.parametrize("line", ["/x" * PIPE_BUF, "/one\n/two"])
def test_lines_that_cannot_be_one_atomic_write_go_to_the_spool(
    fifo: Path, spool: Spool, line: str
) -> None:
    with PipeReader(fifo) as reader:
        assert notify(line, fifo, spool) == "spool"
        reader.stop()
        assert reader.pending() == []
    assert spooled(spool) == [line]


def test_a_full_pipe_is_given_wait_seconds_then_the_spool(fifo: Path, spool: Spool) -> None:
    stuck = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        fill(writer)
        start = time.monotonic()
        assert notify(LINE, fifo, spool, wait=0.05) == "spool"
        assert time.monotonic() - start < 1
    finally:
        os.close(writer)
        os.close(stuck)
    assert spooled(spool) == [LINE]


def test_a_full_pipe_that_drains_in_time_still_takes_the_line(fifo: Path, spool: Spool) -> None:
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    drain = threading.Timer(0.02, os.read, (reader, 65536))
    try:
        fill(writer)
        drain.start()
        assert notify(LINE, fifo, spool, wait=2.0) == "pipe"
    finally:
        drain.join()
        os.close(writer)
        os.close(reader)
    assert spool.entries() == []
