"""The receiver log hookup, what only it has to get right, with a real storescp started from
the printed line: each association's address (several senders at once, from different
addresses), a file announced only once written (also the last one of an association left
open), lines of other shapes skipped, storescp started before any daemon ran."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from daemonproc import Site, stop, wait_for
from realfiles import pydicom_data, restamp
from test_receive_e2e import PrintedReceiver, links, receiver_log

pytestmark = pytest.mark.e2e

STUDY = "1.2.826.0.1.3680043.8.498.300"


def series_files(folder: Path, series: str, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [restamp(pydicom_data("MR_small.dcm"), folder / f"{series}-{i}.dcm", STUDY,
                    f"{STUDY}.{series}", f"{STUDY}.{series}.{i}", InstanceNumber=i,
                    PatientID="SUBJ03", StudyDate="20240105", StudyTime="090000")
            for i in range(1, count + 1)]


def send_from(address: str, port: int, calling: str, files: list[Path],
              hold: float = 0.0, sent: threading.Event | None = None,
              abort: bool = False) -> None:
    """pynetdicom, bound to ``address`` (127.0.0.0/8 is all loopback): one association,
    ``files`` in it, kept open ``hold`` seconds after the last one (``sent`` set then)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="FIONA", bind_address=(address, 0))
    assert assoc.is_established, f"no association from {address}"
    try:
        for path in files:
            status = assoc.send_c_store(dcmread(path))
            assert status and status.Status == 0, f"{path}: {status}"
        if sent is not None:
            sent.set()
        time.sleep(hold)
    finally:
        if abort:
            assoc.abort()  # A-ABORT: storescp logs "Association Aborted"
        else:
            assoc.release()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def record(site: Site, series: str) -> dict[str, object]:
    return site.records().get(f"raw/{STUDY}/{STUDY}.{series}.json") or {}


def connection(site: Site, series: str) -> object:
    return record(site, series).get("IncomingConnection")


def test_senders_at_once_from_different_addresses_keep_their_own_address(
        site: Site, tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    receiver = PrintedReceiver(site)
    senders = {"1": ("127.0.0.2", "SCANNER_A"), "2": ("127.0.0.3", "SCANNER_B"),
               "3": ("127.0.0.4", "SCANNER_C")}
    files = {s: series_files(tmp_path / "send", s, 15) for s in senders}
    daemon = site.start_run("--no-catch-up")
    try:
        threads = [threading.Thread(target=send_from, args=(addr, receiver.port, ae, files[s]))
                   for s, (addr, ae) in senders.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        wait_for(lambda: len(links(site)) == 45, 30, "45 links")
        wait_for(lambda: all(record(site, s).get("NumFiles") == "15"
                             for s in senders), 30, "three records of 15")
    finally:
        code, out = stop(daemon)
        receiver.close()
    assert code == 0, out
    for series, (address, calling) in senders.items():
        assert connection(site, series) == {"AETitleCaller": calling, "AETitleCalled": "FIONA",
                                            "CallerIP": address}
        assert (site.site / ".arrived" /
                f"{calling} FIONA {address} {STUDY} {STUDY}.{series}").exists()
    text = receiver_log(site).read_text()
    storing = [line for line in text.splitlines() if "|storing DICOM file: " in line]
    assert len({line.split("|")[0] for line in storing}) == 3  # three storescp processes
    assert "skipped" not in site.log_text() and "Traceback" not in site.log_text()


def test_the_last_file_of_an_association_left_open_is_sorted_while_it_is_open(
        site: Site, tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    receiver = PrintedReceiver(site)
    files = series_files(tmp_path / "send", "5", 4)
    sent = threading.Event()
    daemon = site.start_run("--no-catch-up")
    try:
        sender = threading.Thread(target=send_from,
                                  args=("127.0.0.5", receiver.port, "HOLDER", files, 8.0, sent))
        sender.start()
        assert sent.wait(30)
        # three are announced by the next request; the fourth once unchanged for a while
        wait_for(lambda: len(links(site)) == 4, 6, "all four linked, the association open")
        assert sender.is_alive()
        sender.join(30)
    finally:
        code, out = stop(daemon)
        receiver.close()
    assert code == 0, out
    assert connection(site, "5") == {"AETitleCaller": "HOLDER", "AETitleCalled": "FIONA",
                                     "CallerIP": "127.0.0.5"}


def test_lines_of_other_shapes_are_skipped_with_one_warning_each(
        site: Site, tmp_path: Path) -> None:
    receiver = PrintedReceiver(site)
    files = series_files(tmp_path / "send", "6", 3)
    bad = ["no separators at all", "12|FIONA", "x1|FIONA|storing DICOM file: /etc/hosts",
           "77|FIONA|storing DICOM file: relative/path", "88|FIONA|storing DICOM file: /a,b/c"]
    outside = "99|FIONA|storing DICOM file: /etc/passwd"  # well formed, outside the roots
    with open(receiver_log(site), "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in [*bad, outside])
    daemon = site.start_run("--no-catch-up")
    try:
        receiver.send(files, calling="GOOD")
        wait_for(lambda: record(site, "6").get("NumFiles") == "3", 30, "the good files sorted")
        wait_for(lambda: "/etc/passwd is outside the input roots" in site.log_text(), 10,
                 "the passwd line refused (once unchanged for the settling time)")
    finally:
        code, out = stop(daemon)
        receiver.close()
    assert code == 0, out
    log = site.log_text().splitlines()
    assert sum("receiver log line skipped" in line for line in log) == len(bad)
    for text in ("no separators", "'12|FIONA'", "x1|", "relative/path", "/a,b/c"):
        assert sum(text in line for line in log) == 1, text
    refused = [line for line in log if "/etc/passwd is outside" in line]
    assert len(refused) == 1, refused
    assert len(links(site)) == 3


def test_storescp_started_before_any_daemon_ran_loses_nothing(
        site: Site, tmp_path: Path) -> None:
    receiver = PrintedReceiver(site)  # storescp-command made the log; no daemon yet
    config = site.site / ".dcmsortd" / "journal" / "storescp.cfg"
    assert "receiverlog.File = " + str(receiver_log(site)) in config.read_text()
    try:
        receiver.send(series_files(tmp_path / "send", "7", 5), calling="EARLY")
        wait_for(lambda: receiver.announced() == 5, 10, "5 announced")
        daemon = site.start_run("--no-catch-up")
        try:
            wait_for(lambda: len(links(site)) == 5, 30, "five links")
        finally:
            code, out = stop(daemon)
    finally:
        receiver.close()
    assert code == 0, out
    assert connection(site, "7") == {"AETitleCaller": "EARLY", "AETitleCalled": "FIONA",
                                     "CallerIP": "127.0.0.1"}


def test_an_aborted_association_has_every_stored_file_sorted(
        site: Site, tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    receiver = PrintedReceiver(site)
    files = series_files(tmp_path / "send", "8", 3)
    daemon = site.start_run("--no-catch-up")
    try:
        send_from("127.0.0.8", receiver.port, "ABORTER", files, abort=True)
        wait_for(lambda: record(site, "8").get("NumFiles") == "3", 30, "three sorted")
    finally:
        code, out = stop(daemon)
        receiver.close()
    assert code == 0, out
    assert "|FIONA|Association Aborted" in receiver_log(site).read_text()
    assert connection(site, "8") == {"AETitleCaller": "ABORTER", "AETitleCalled": "FIONA",
                                     "CallerIP": "127.0.0.8"}
