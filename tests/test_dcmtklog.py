"""The receiver log read back (pure): when a file is announced, with which address and AE
titles; what is skipped; what a restart carries over. Lines are shaped exactly as dcmtk
3.6.7's storescp writes them with the configuration ``log_config`` builds (the end-to-end
tests in test_receiver_log_e2e.py run the real storescp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcmsortd.intake.dcmtklog import (
    MAX_ASSOCIATIONS,
    SETTLE,
    StorescpLog,
    log_config,
    version_warning,
)
from dcmsortd.model.notice import parse_line

A = "/data/site/archive/scp__1.2.3"


def line(pid: int, message: str, called: str = "FIONA") -> bytes:
    return f"{pid}|{called}|{message}".encode()


def arrivals(out: list[bytes]) -> list[tuple[str, str, str, str]]:
    parsed = [parse_line(raw) for raw in out]
    return [(a.caller, a.called, a.ip, a.path) for a in parsed]


def feed_all(log: StorescpLog, lines: list[bytes], now: float = 0.0) -> list[bytes]:
    out: list[bytes] = []
    for raw in lines:
        out += log.feed(raw, now)
    return out


def test_a_file_is_announced_once_its_process_moves_on() -> None:
    log = StorescpLog()
    assert log.feed(line(10, "Association Received: 10.1.2.3"), 0) == []
    assert log.feed(line(10, "Received Store Request (MsgID 1, MR)"), 0) == []
    assert log.feed(line(10, f"storing DICOM file: {A}/MR.1"), 0) == []  # not yet written
    assert log.pending() == 1
    out = log.feed(line(10, "Received Store Request (MsgID 2, MR)"), 0)
    assert arrivals(out) == [("<caller-from-file>", "FIONA", "10.1.2.3", f"{A}/MR.1")]
    assert log.feed(line(10, f"storing DICOM file: {A}/MR.2"), 0) == []
    assert arrivals(log.feed(line(10, "Association Release"), 0)) == [
        ("<caller-from-file>", "FIONA", "10.1.2.3", f"{A}/MR.2")]
    assert log.pending() == 0


def test_interleaved_associations_keep_their_own_addresses() -> None:
    log = StorescpLog()
    out = feed_all(log, [
        line(1, "Association Received: 10.0.0.1"), line(2, "Association Received: 10.0.0.2"),
        line(1, f"storing DICOM file: {A}/a1"), line(2, f"storing DICOM file: {A}/b1"),
        line(2, "Received Store Request"), line(2, f"storing DICOM file: {A}/b2"),
        line(1, "Association Aborted"), line(2, "Association Release")])
    assert [(ip, path) for _, _, ip, path in arrivals(out)] == [
        ("10.0.0.2", f"{A}/b1"), ("10.0.0.1", f"{A}/a1"), ("10.0.0.2", f"{A}/b2")]


def test_a_reused_process_id_takes_the_new_address_after_announcing_the_old_file() -> None:
    log = StorescpLog()
    out = feed_all(log, [line(5, "Association Received: 10.0.0.1"),
                         line(5, f"storing DICOM file: {A}/x"),
                         line(5, "Association Received: 10.0.0.9"),  # no release line seen
                         line(5, f"storing DICOM file: {A}/y"), line(5, "Association Release")])
    assert [(ip, path) for _, _, ip, path in arrivals(out)] == [
        ("10.0.0.1", f"{A}/x"), ("10.0.0.9", f"{A}/y")]


def test_the_called_ae_is_the_one_written_into_each_line() -> None:
    log = StorescpLog()
    out = feed_all(log, [line(3, "Association Received: ::1", called="RESEARCH 2"),
                         line(3, f"storing DICOM file: {A}/z", called="RESEARCH 2"),
                         line(3, "Association Release", called="RESEARCH 2")])
    assert arrivals(out) == [("<caller-from-file>", "RESEARCH2", "::1", f"{A}/z")]


def test_the_last_file_of_an_open_association_waits_until_it_stopped_changing() -> None:
    log = StorescpLog(settle=1.0)
    feed_all(log, [line(7, "Association Received: 10.0.0.7"),
                   line(7, f"storing DICOM file: {A}/last")], now=100.0)
    sizes = {f"{A}/last": (1000, 1)}
    assert log.due(100.5, sizes.get) == []  # too young
    assert log.due(101.0, sizes.get) == []  # first look: remember size and time
    sizes[f"{A}/last"] = (2000, 2)  # still being written
    assert log.due(102.0, sizes.get) == []
    assert log.due(102.5, sizes.get) == []  # unchanged, but not for a full second yet
    assert arrivals(log.due(103.0, sizes.get)) == [
        ("<caller-from-file>", "FIONA", "10.0.0.7", f"{A}/last")]
    assert log.due(200.0, sizes.get) == []  # announced once


def test_a_pending_file_that_is_gone_is_handed_on_for_the_sorter_to_report() -> None:
    log = StorescpLog()
    feed_all(log, [line(8, "Association Received: 10.0.0.8"),
                   line(8, f"storing DICOM file: {A}/gone")])
    assert len(log.due(SETTLE + 1, lambda path: None)) == 1


@pytest.mark.parametrize("raw", [
    b"no separators", b"12|FIONA", b"x1|FIONA|storing DICOM file: /a/b",
    b"1|AE TITLE LONGER THAN 16|storing DICOM file: /a/b", b"\xff\xfe|FIONA|x",
    b"9|FIONA|storing DICOM file: relative/b", b"9|FIONA|storing DICOM file: /a,b/c",
    b"12345678901|FIONA|Association Release",
])
def test_lines_of_other_shapes_are_skipped_with_a_warning(raw: bytes) -> None:
    warned: list[str] = []
    log = StorescpLog(warn=warned.append)
    assert log.feed(raw, 0) == [] and log.pending() == 0
    assert len(warned) == 1 and "skipped" in warned[0] and log.skipped == 1


def test_an_address_that_is_neither_ip_nor_host_name_is_unknown() -> None:
    log = StorescpLog()
    out = feed_all(log, [line(4, "Association Received: $(touch x)"),
                         line(4, f"storing DICOM file: {A}/q"), line(4, "Association Release")])
    assert arrivals(out)[0][2] == "unknown"
    out = feed_all(log, [line(6, "Association Received: scanner-1.example.org"),
                         line(6, f"storing DICOM file: {A}/r"), line(6, "Association Release")])
    assert arrivals(out)[0][2] == "scanner-1.example.org"


def test_a_file_without_its_association_line_gets_an_unknown_address_and_a_warning() -> None:
    warned: list[str] = []
    log = StorescpLog(warn=warned.append)
    out = feed_all(log, [line(11, f"storing DICOM file: {A}/m"), line(11, "Association Release")])
    assert arrivals(out) == [("<caller-from-file>", "FIONA", "unknown", f"{A}/m")]
    assert len(warned) == 1 and "without an association line" in warned[0]


def test_other_messages_change_nothing() -> None:
    log = StorescpLog()
    feed_all(log, [line(2, "Association Received: 10.0.0.2"),
                   line(2, f"storing DICOM file: {A}/k")])
    assert log.feed(line(2, "Association Acknowledged (Max Send PDV: 16372)"), 0) == []
    assert log.pending() == 1


def test_a_restart_carries_open_associations_and_pending_files_over() -> None:
    log = StorescpLog()
    feed_all(log, [line(1, "Association Received: 10.0.0.1"),
                   line(1, f"storing DICOM file: {A}/p1"),
                   line(2, "Association Received: 10.0.0.2")])
    again = StorescpLog()
    again.restore(log.snapshot(), now=50.0)
    assert again.pending() == 1
    assert arrivals(again.due(50.0 + SETTLE, lambda p: None)) == [
        ("<caller-from-file>", "FIONA", "10.0.0.1", f"{A}/p1")]
    out = feed_all(again, [line(2, f"storing DICOM file: {A}/p2"), line(2, "Association Release")])
    assert arrivals(out) == [("<caller-from-file>", "FIONA", "10.0.0.2", f"{A}/p2")]


@pytest.mark.parametrize("saved", [None, [], "x", {"x": {}}, {"1": "no"}, {"1": {"called": 1}}])
def test_a_saved_state_of_another_shape_is_ignored(saved: object) -> None:
    log = StorescpLog()
    log.restore(saved, now=0.0)
    assert log.pending() == 0 and log.snapshot() == {}


def test_the_configuration_keeps_only_what_is_read_back(tmp_path: Path) -> None:
    text = log_config(str(tmp_path / "storescp.log"), "AE%X")
    props = dict(row.split(" = ", 1) for row in text.splitlines() if not row.startswith("#"))
    key = "log4cplus.appender.receiverlog"
    assert props[f"{key}.File"] == str(tmp_path / "storescp.log")
    assert props[f"{key}.Append"] == "true" and props[f"{key}.ImmediateFlush"] == "true"
    assert props[f"{key}.layout.ConversionPattern"] == "%i|AE%%X|%m%n"
    assert props["log4cplus.logger.dcmtk.dcmnet"] == "DEBUG"  # the association's address
    assert props[f"{key}.filters.1.LogLevelMax"] == "INFO"  # no warning or error text
    matched = [v for k, v in props.items() if k.endswith(".StringToMatch")]
    assert matched == ["Association Received: ", "Received Store Request",
                       "storing DICOM file: ", "Association Release", "Association Aborted"]
    last = max(int(k.split(".")[4]) for k in props if ".filters." in k)
    assert props[f"{key}.filters.{last}"] == "log4cplus::spi::DenyAllFilter"


def test_a_storescp_version_it_was_not_tested_with_is_warned_about() -> None:
    assert version_warning("$dcmtk: storescp v3.6.7 2022-04-22 $\n\nstorescp: ...") is None
    other = version_warning("$dcmtk: storescp v3.6.9 2024-12-11 $")
    assert other is not None and "3.6.9" in other and "3.6.7" in other
    unknown = version_warning("storescp: command not found")
    assert unknown is not None and "cannot tell" in unknown


def test_associations_that_never_end_are_forgotten_but_not_active_ones_nor_files() -> None:
    """Port probes (a connection, an address line, nothing more) and crashed children
    leave associations without an end: the least recently heard from are dropped."""
    log = StorescpLog()
    feed_all(log, [line(1, "Association Received: 10.0.0.1"),
                   line(1, f"storing DICOM file: {A}/w")])
    feed_all(log, [line(2, "Association Received: 10.0.0.2")])
    for probe in range(100, 100 + 3 * MAX_ASSOCIATIONS):
        log.feed(line(probe, "Association Received: 10.9.9.9"), 0)
        if probe % 50 == 0:  # process 2 keeps sending
            feed_all(log, [line(2, f"storing DICOM file: {A}/s{probe}")])
    snapshot = log.snapshot()
    assert len(snapshot) <= MAX_ASSOCIATIONS
    assert snapshot["1"]["pending"] == f"{A}/w"  # a file not announced is never dropped
    assert snapshot["2"]["ip"] == "10.0.0.2"  # heard from lately: kept
    out = feed_all(log, [line(2, "Association Release"), line(1, "Association Release")])
    assert [(ip, path) for _, _, ip, path in arrivals(out)][-1] == ("10.0.0.1", f"{A}/w")
    assert log.pending() == 0
