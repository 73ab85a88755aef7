"""The daemon's side of the journal, in process: its position is saved only once the records
of the lines before it are written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmsortd.intake.follower import Follower
from dcmsortd.intake.journal import JournalState
from dcmsortd.rules.engine import load_rules
from dcmsortd.service.config import Settings, resolve
from dcmsortd.service.daemon import Control, drain_journal, run_loop
from dcmsortd.service.runtime import Runtime, build
from realfiles import pydicom_data, restamp

STUDY = "1.2.826.0.1.3680043.8.498.300"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.json"
    config.write_text("{}")
    return resolve({"config": str(config), "datadir": str(tmp_path / "data"),
                    "pipe": str(tmp_path / "pipe"), "pid_dir": str(tmp_path),
                    "log_dir": str(tmp_path)}, home=str(tmp_path))


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build(settings, load_rules(None), heartbeat=False)
    yield rt
    rt.close()


def received(settings: Settings, series: str, count: int) -> list[str]:
    """``count`` images of one series in the archive, as journal lines."""
    archive = Path(settings.site) / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, count + 1):
        path = restamp(pydicom_data("MR_small.dcm"), archive / f"MR.{series}.{i}", STUDY,
                       series, f"{series}.{i}", InstanceNumber=i)
        lines.append(f"SCANNER,FIONA,10.0.0.9,{path.parent},{path.name}")
    return lines


def append(settings: Settings, lines: list[str]) -> None:
    Path(settings.journal_dir).mkdir(parents=True, exist_ok=True)
    with open(settings.journal, "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)


def saved_offset(settings: Settings) -> int:
    state = JournalState.from_bytes(Path(settings.journal + ".pos").read_bytes())
    assert state.active is not None
    return state.active.offset


def record_path(settings: Settings, series: str) -> Path:
    return Path(settings.site) / "raw" / STUDY / f"{series}.json"


def test_the_backlog_is_sorted_and_its_position_saved_after_the_records(
        settings: Settings, runtime: Runtime) -> None:
    append(settings, received(settings, STUDY + ".1", 3))
    journal = Follower(settings.journal_dir).open()
    try:
        assert drain_journal(runtime, journal) == 3
    finally:
        journal.close()
    assert json.loads(record_path(settings, STUDY + ".1").read_text())["NumFiles"] == "3"
    assert saved_offset(settings) == Path(settings.journal).stat().st_size


def test_a_record_that_cannot_be_written_holds_the_position_back(
        settings: Settings, runtime: Runtime) -> None:
    first, second = STUDY + ".1", STUDY + ".2"
    append(settings, received(settings, first, 2))
    journal = Follower(settings.journal_dir).open()
    try:
        drain_journal(runtime, journal)
        done = saved_offset(settings)
        blocked = record_path(settings, second)
        blocked.mkdir(parents=True)  # a folder where the record goes: its write fails
        append(settings, received(settings, second, 2))
        journal.wake()
        run_loop([journal.next_line(), journal.next_line(), None], runtime, Control(),
                 on_durable=journal.commit)
        assert runtime.store.dirty()
        assert saved_offset(settings) == done  # a restart would read both lines again
        blocked.rmdir()
        run_loop([None], runtime, Control(), on_durable=journal.commit)
    finally:
        journal.close()
    assert json.loads(record_path(settings, second).read_text())["NumFiles"] == "2"
    assert saved_offset(settings) == Path(settings.journal).stat().st_size
