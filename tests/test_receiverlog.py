"""Following the receiver log on disk: arrival lines out, the position and pending files
saved at commit and taken back at a restart, the file never renamed, the space of what is
sorted given back (a real file, a real fallocate), both sources joined."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcmsortd.intake import follower as follower_module
from dcmsortd.intake.follower import Follower
from dcmsortd.intake.receiverlog import ReceiverLog, Sources
from dcmsortd.model.notice import parse_line
from test_follower import Clock, append

A = "/data/site/archive/scp__1.2.3"


def drain(source: ReceiverLog | Sources) -> list[str]:
    out = []
    source.wake()
    while (raw := source.next_line()) is not None:
        out.append(parse_line(raw).path)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "journal"
    path.mkdir()
    (path / "storescp.log").touch()
    return path


def test_files_come_out_as_arrival_lines_and_a_restart_announces_the_pending_one(
        folder: Path) -> None:
    clock = Clock()
    log = ReceiverLog(str(folder), "storescp.log", clock=clock).open()
    append(folder / "storescp.log", "7|FIONA|Association Received: 10.0.0.7",
           f"7|FIONA|storing DICOM file: {A}/1", f"7|FIONA|storing DICOM file: {A}/2")
    assert drain(log) == [f"{A}/1"]
    log.commit()
    saved = (folder / "storescp.log.pos").read_text()
    assert f"{A}/2" in saved and "10.0.0.7" in saved
    log.close()  # as if killed now: /2 was never announced

    again = ReceiverLog(str(folder), "storescp.log", clock=clock).open()
    assert drain(again) == []  # read no line twice; /2 waits for its settling time
    clock.now += 5
    assert drain(again) == [f"{A}/2"]  # gone from disk here: the sorter will say so
    append(folder / "storescp.log", f"7|FIONA|storing DICOM file: {A}/3",
           "7|FIONA|Association Release")
    assert drain(again) == [f"{A}/3"]
    again.commit()
    again.close()


def test_the_log_is_never_renamed_and_its_sorted_part_gives_its_space_back(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follower_module, "PUNCH_EVERY", 64 * 1024)
    path = folder / "storescp.log"
    log = ReceiverLog(str(folder), "storescp.log").open()
    lines = ["3|FIONA|Association Received: 10.0.0.3"]
    lines += [f"3|FIONA|storing DICOM file: {A}/MR.{i:06d}" for i in range(3000)]
    lines.append("3|FIONA|Association Release")
    append(path, *lines)
    size = path.stat().st_size
    assert size > 128 * 1024
    assert len(drain(log)) == 3000
    log.commit()
    st = path.stat()
    assert st.st_size == size and (folder / "storescp.log").exists()  # same file, same size
    assert not (folder / "storescp.log.old").exists()
    with open(path, "rb") as fh:
        first_data = os.lseek(fh.fileno(), 0, os.SEEK_DATA)
    assert first_data >= 64 * 1024  # the start is a hole now
    assert st.st_blocks * 512 < size  # fewer blocks than bytes
    log.close()

    append(path, "4|FIONA|Association Received: 10.0.0.4", f"4|FIONA|storing DICOM file: {A}/n",
           "4|FIONA|Association Release")
    again = ReceiverLog(str(folder), "storescp.log").open()
    assert drain(again) == [f"{A}/n"]  # resumed at its position, after the hole
    again.close()


def test_without_a_saved_position_reading_starts_after_the_hole(
        folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(follower_module, "PUNCH_EVERY", 16 * 1024)
    path = folder / "storescp.log"
    log = ReceiverLog(str(folder), "storescp.log").open()
    append(path, "3|FIONA|Association Received: 10.0.0.3",
           *[f"3|FIONA|storing DICOM file: {A}/MR.{i:06d}" for i in range(1000)],
           "3|FIONA|Association Release")
    assert len(drain(log)) == 1000
    log.commit()
    log.close()
    (folder / "storescp.log.pos").unlink()
    again = ReceiverLog(str(folder), "storescp.log").open()
    got = drain(again)  # the rest of the file, read again (sorting twice files once)
    assert 0 < len(got) < 1000 and got[-1] == f"{A}/MR.000999"
    assert not any(b"\x00" in r.getMessage().encode() for r in caplog.records)
    again.close()


def test_journal_and_receiver_log_are_read_as_one_source(folder: Path) -> None:
    journal = Follower(str(folder), "arrivals").open()
    log = ReceiverLog(str(folder), "storescp.log").open()
    both = Sources([journal, log])
    append(folder / "arrivals", f"SCANNER,FIONA,10.0.0.1,{A},j1")
    append(folder / "storescp.log", "5|FIONA|Association Received: 10.0.0.5",
           f"5|FIONA|storing DICOM file: {A}/r1", "5|FIONA|Association Release")
    assert sorted(drain(both)) == [f"{A}/j1", f"{A}/r1"]
    both.commit()
    assert both.summary() == {"backlog_bytes": 0, "receiver_pending": 0}
    both.close()


def test_a_log_replaced_under_its_name_is_read_to_its_end_then_the_new_one_from_its_start(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = folder / "storescp.log"
    log = ReceiverLog(str(folder), "storescp.log").open()
    append(path, "1|FIONA|Association Received: 10.0.0.1", f"1|FIONA|storing DICOM file: {A}/a")
    assert drain(log) == []  # pending: its process has not moved on yet
    path.rename(folder / "storescp.log.1")  # someone rotated it (storescp writes on there)
    append(folder / "storescp.log.1", f"1|FIONA|storing DICOM file: {A}/b",
           "1|FIONA|Association Release")
    append(path, "2|FIONA|Association Received: 10.0.0.2", f"2|FIONA|storing DICOM file: {A}/c",
           "2|FIONA|Association Release")  # a restarted storescp made a new one
    assert drain(log) == [f"{A}/a", f"{A}/b", f"{A}/c"]  # the old file's lines first
    assert "was replaced by another file" in caplog.text
    append(folder / "storescp.log.1", "3|FIONA|Association Received: 10.0.0.3",
           f"3|FIONA|storing DICOM file: {A}/d", "3|FIONA|Association Release")
    assert drain(log) == [f"{A}/d"]  # its writer still writes there: still read
    log.commit()
    assert (folder / "storescp.log.1").exists()  # someone else's file: never removed
    log.close()
    again = ReceiverLog(str(folder), "storescp.log").open()  # the new file's position kept
    assert drain(again) == []
    again.close()


def test_a_replaced_log_is_let_go_after_its_quiet_time_and_never_deleted(folder: Path) -> None:
    clock = Clock()
    path = folder / "storescp.log"
    follower = Follower(str(folder), "storescp.log", rotate_bytes=None, grace=5.0,
                        clock=clock, watch=False).open()
    append(path, "x")
    follower.wake()
    assert follower.next_line() == b"x"
    path.rename(folder / "storescp.log.old")  # even under the name the journal rotates to
    append(path, "y")
    follower.wake()
    assert follower.next_line() == b"y"
    assert follower.next_line() is None
    for _ in range(3):
        follower.commit()
        clock.now += 10
    assert (folder / "storescp.log.old").read_text() == "x\n"  # someone else's: kept
    append(path, "z")
    follower.wake()
    assert follower.next_line() == b"z"
    follower.close()
