"""End to end through both hookups: storescu -> storescp started with exactly the line
``dcmsortd storescp-command`` prints -> storescp's receiver log (the default, ``log``) or the
arrivals journal (``--hookup journal``) -> ``dcmsortd run``.

storescp runs in a folder of its own below tmp_path (``cwd``): a command a sender smuggles
into the classic line (``touch P``, all 16 characters of an AE title allow) lands there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from daemonproc import Site, dcmtk_tool, free_port, stop, wait_for
from realfiles import nibabel_data, pydicom_data, restamp

pytestmark = pytest.mark.e2e

STUDY = "1.2.826.0.1.3680043.8.498.200"
MR_SERIES = STUDY + ".1"
DWI_SERIES = STUDY + ".2"
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def corpus(folder: Path, mr: int, dwi: int) -> list[Path]:
    """``mr`` images of pydicom's MR file and ``dwi`` of nibabel's Siemens DWI files
    (b=0 and b=1000 in turn), one study; DWI and MR interleaved."""
    folder.mkdir()
    sources = [nibabel_data(n, folder) for n in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")]
    when = {"StudyDate": "20240102", "StudyTime": "101010", "PatientID": "SUBJ02"}
    mrs = [restamp(pydicom_data("MR_small.dcm"), folder / f"mr{i}.dcm", STUDY, MR_SERIES,
                   f"{MR_SERIES}.{i}", InstanceNumber=i, **when) for i in range(1, mr + 1)]
    dwis = [restamp(sources[i % 2], folder / f"dwi{i}.dcm", STUDY, DWI_SERIES,
                    f"{DWI_SERIES}.{i}", InstanceNumber=i, **when) for i in range(1, dwi + 1)]
    out = []
    for i in range(max(mr, dwi)):
        out += mrs[i:i + 1] + dwis[i:i + 1]
    return out


class PrintedReceiver:
    """storescp started as ``bash -c`` of the line ``dcmsortd storescp-command`` printed."""

    def __init__(self, site: Site, aet: str = "FIONA", hookup: str = "log") -> None:
        self.port, self.aet, self.hookup, self.site = free_port(), aet, hookup, site
        self.cwd = site.root / "storescp-cwd"
        self.cwd.mkdir()
        printed = site.cli("storescp-command", "--port", str(self.port), "--aet", aet,
                           "--archive", str(site.archive), "--hookup", hookup)
        assert printed.returncode == 0, printed.stderr
        self.line = printed.stdout.strip()
        assert "\n" not in self.line and "TCP_NODELAY=1" in self.line
        self.proc = subprocess.Popen(["bash", "-c", self.line], start_new_session=True,
                                     cwd=self.cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._listening, 10, "storescp to listen")

    def _listening(self) -> bool:
        assert self.proc.poll() is None, "storescp ended"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def sender(self, files: list[Path], calling: str = "SCANNER",
               called: str | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [dcmtk_tool("storescu"), "-aet", calling, "-aec", called or self.aet, "127.0.0.1",
             str(self.port), *map(str, files)],
            env=NODELAY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def send(self, files: list[Path], calling: str = "SCANNER", called: str | None = None) -> None:
        proc = self.sender(files, calling, called)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"storescu failed: {out}"

    def announced(self) -> int:
        """Files announced so far: journal lines, or the receiver log's "storing" lines."""
        if self.hookup == "journal":
            path = journal(self.site)
            return len(path.read_text().splitlines()) if path.exists() else 0
        return receiver_log(self.site).read_text().count("|storing DICOM file: ")

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.fixture(params=["log", "journal"])
def receiver(site: Site, request: pytest.FixtureRequest) -> PrintedReceiver:
    dcmtk_tool("storescp")
    rec = PrintedReceiver(site, hookup=request.param)
    yield rec  # type: ignore[misc]
    rec.close()


def record(site: Site, series: str) -> dict[str, object]:
    path = site.site / "raw" / STUDY / f"{series}.json"
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def sorted_all(site: Site, mr: int, dwi: int) -> bool:
    return (record(site, MR_SERIES).get("NumFiles") == str(mr)
            and record(site, DWI_SERIES).get("NumFiles") == str(dwi))


def links(site: Site) -> list[Path]:
    raw = site.site / "raw"
    return sorted(p for p in raw.rglob("*") if p.is_symlink()) if raw.exists() else []


def journal(site: Site) -> Path:
    return site.site / ".dcmsortd" / "journal" / "arrivals"


def receiver_log(site: Site) -> Path:
    return site.site / ".dcmsortd" / "journal" / "storescp.log"


def check_exactly_once(site: Site, mr: int, dwi: int) -> None:
    """Every file linked once, counted once; one diffusion entry per DWI image."""
    assert len(links(site)) == mr + dwi
    assert all(p.resolve().parent.parent == site.archive for p in links(site))
    assert record(site, MR_SERIES)["NumFiles"] == str(mr)
    info = record(site, DWI_SERIES)["siemensDiffusionInformation"]
    assert isinstance(info, list) and len(info) == dwi


def test_the_printed_line_feeds_the_daemon_with_caller_called_and_address(
        site: Site, receiver: PrintedReceiver, tmp_path: Path) -> None:
    files = corpus(tmp_path / "send", mr=6, dwi=4)
    daemon = site.start_run("--no-catch-up")
    try:
        receiver.send(files, calling="SCANNER7")
        wait_for(lambda: sorted_all(site, 6, 4), 30, "both series sorted")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    check_exactly_once(site, 6, 4)
    for series in (MR_SERIES, DWI_SERIES):
        conn = record(site, series)["IncomingConnection"]
        assert isinstance(conn, dict)
        assert conn == {"AETitleCaller": "SCANNER7", "AETitleCalled": "FIONA",
                        "CallerIP": "127.0.0.1"}  # -dhl: #r is the numeric address
    markers = sorted(p.name for p in (site.site / ".arrived").iterdir())
    assert markers == sorted(f"SCANNER7 FIONA 127.0.0.1 {STUDY} {s}"
                             for s in (MR_SERIES, DWI_SERIES))
    wait_for(lambda: receiver.announced() == 10, 10, "10 announced")
    assert not site.pipe.exists()  # nothing went through the pipe: the journal carried all


@pytest.mark.parametrize(("name", "propose"), [
    ("JPEG2000.dcm", "-xw"), ("MR_small_jp2klossless.dcm", "-xv"),
    ("SC_rgb_jpeg_dcmtk.dcm", "-xy"), ("MR_small_RLE.dcm", "-xr"), ("image_dfl.dcm", "-xd"),
])
def test_a_compressed_image_is_received_as_sent_and_sorted(
        site: Site, receiver: PrintedReceiver, name: str, propose: str) -> None:
    """A sender proposing a compressed transfer syntax: storescp stores the image as sent,
    the daemon reads its header and links it."""
    import pydicom

    source = pydicom_data(name)
    daemon = site.start_run("--no-catch-up")
    try:
        proc = subprocess.run(
            [dcmtk_tool("storescu"), propose, "-aet", "SCANNER", "-aec", receiver.aet,
             "127.0.0.1", str(receiver.port), str(source)],
            env=NODELAY, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for(lambda: len(links(site)) == 1, 30, "the image linked")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    (stored,) = [p for p in site.archive.rglob("*") if p.is_file()]
    sent = pydicom.dcmread(source, stop_before_pixels=True)
    got = pydicom.dcmread(stored, stop_before_pixels=True)
    assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    (link,) = links(site)
    assert link.name == sent.SOPInstanceUID and link.resolve() == stored.resolve()


def test_arrivals_while_the_daemon_is_stopped_are_sorted_when_it_starts(
        site: Site, receiver: PrintedReceiver, tmp_path: Path) -> None:
    files = corpus(tmp_path / "send", mr=8, dwi=4)
    receiver.send(files)  # no daemon: storescp does not wait, the lines wait in the journal
    wait_for(lambda: receiver.announced() == 12, 10, "12 announced")
    assert links(site) == []
    daemon = site.start_run("--no-catch-up")
    try:
        wait_for(lambda: sorted_all(site, 8, 4), 30, "everything sorted from the journal")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    check_exactly_once(site, 8, 4)
    assert "sorted 12 journal line(s) written while no daemon ran" in site.log_text()
    if receiver.hookup == "log":  # the log holds 12 files and their association's lines
        assert not (site.site / ".dcmsortd" / "journal" / "arrivals").exists()
    before = site.snapshot()
    again = site.start_run("--no-catch-up")  # the position was saved: nothing is read twice
    code, out = stop(again)
    assert code == 0, out
    assert site.log_text().count("journal line(s) written while no daemon ran") == 1
    assert site.snapshot() == before


def test_a_daemon_killed_mid_stream_loses_and_doubles_nothing(
        site: Site, receiver: PrintedReceiver, tmp_path: Path) -> None:
    files = corpus(tmp_path / "send", mr=40, dwi=20)
    daemon = site.start_run("--no-catch-up")
    sender = receiver.sender(files)
    try:
        wait_for(lambda: links(site), 30, "the first link")
        daemon.send_signal(signal.SIGKILL)  # no flush, no saved position, pid file left
        daemon.communicate(timeout=10)  # reaped, its output pipe closed
        out, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, out
        # storescp runs the last file's line as the association ends: a moment later
        wait_for(lambda: receiver.announced() == 60, 10, "60 announced")
        restarted = site.start_run("--no-catch-up")
    finally:
        if daemon.poll() is None:
            daemon.kill()
    try:
        wait_for(lambda: sorted_all(site, 40, 20), 30, "everything sorted after the restart")
    finally:
        code, out = stop(restarted)
    assert code == 0, out
    check_exactly_once(site, 40, 20)
    assert "Traceback" not in site.log_text()


@pytest.mark.parametrize("receiver", ["journal"], indirect=True)  # the log's: test_receiver_log
def test_malformed_journal_lines_are_logged_once_each_and_skipped(
        site: Site, receiver: PrintedReceiver, tmp_path: Path) -> None:
    files = corpus(tmp_path / "send", mr=2, dwi=2)
    daemon = site.start_run("--no-catch-up")
    try:
        bad = ["garbage-without-fields", "a,b,c", "x,y,10.0.0.1,relative/dir,f.dcm",
               "\xe9t\xe9,AE,1.2.3.4," + ","]
        with open(journal(site), "a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in bad)
        receiver.send(files)
        wait_for(lambda: sorted_all(site, 2, 2), 30, "the good lines sorted")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    log = site.log_text()
    for text in ("garbage-without-fields", "'a,b,c'", "relative/dir"):
        assert sum(text in line for line in log.splitlines()) == 1, text
    assert log.count("line rejected") == len(bad)
    check_exactly_once(site, 2, 2)


HOSTILE_CALLING, HOSTILE_CALLED = "X'$(touch P)'", "Y'$(touch Q)'"  # 13 characters each


def test_hostile_ae_titles_run_nothing_and_the_records_keep_caller_called_and_address(
        site: Site, receiver: PrintedReceiver, tmp_path: Path) -> None:
    files = corpus(tmp_path / "send", mr=3, dwi=2)
    daemon = site.start_run("--no-catch-up")
    try:
        receiver.send(files, calling=HOSTILE_CALLING, called=HOSTILE_CALLED)
        wait_for(lambda: sorted_all(site, 3, 2), 30, "both series sorted")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    check_exactly_once(site, 3, 2)
    assert sorted(p.name for p in receiver.cwd.iterdir()) == []  # no P, no Q: nothing ran
    assert not (Path.cwd() / "P").exists() and not (Path.cwd() / "Q").exists()
    for series in (MR_SERIES, DWI_SERIES):
        conn = record(site, series)["IncomingConnection"]
        # the caller from each file's (0002,0016), cleaned as the pipe cleans AE titles;
        # the called AE storescp was configured with, not the one the sender asked for
        assert conn == {"AETitleCaller": "X$(touchP)", "AETitleCalled": "FIONA",
                        "CallerIP": "127.0.0.1"}
    markers = sorted(p.name for p in (site.site / ".arrived").iterdir())
    assert markers == sorted(f"X$(touchP) FIONA 127.0.0.1 {STUDY} {s}"
                             for s in (MR_SERIES, DWI_SERIES))
    if receiver.hookup == "journal":
        lines = journal(site).read_text().splitlines()
        assert len(lines) == 5
        assert all(line.startswith("<caller-from-file>,FIONA,") for line in lines)
    else:  # no AE title reaches the receiver log: only the configured called AE
        text = receiver_log(site).read_text()
        assert "touch" not in text and text.count("|FIONA|storing DICOM file: ") == 5


def test_the_classic_line_runs_a_command_hidden_in_the_calling_ae_title(tmp_path: Path) -> None:
    """The hole the printed line closes, with a real storescp: FIONA's line (appending to a
    file here) runs ``touch P`` from the calling AE title, in storescp's folder (tmp_path)."""
    archive, cwd = tmp_path / "archive", tmp_path / "storescp-cwd"
    archive.mkdir()
    cwd.mkdir()
    port = free_port()
    classic = f"echo '#a,#c,#r,#p,#f' >> {tmp_path / 'arrivals'}"
    proc = subprocess.Popen(
        [dcmtk_tool("storescp"), "--fork", "-aet", "FIONA", "-od", str(archive),
         "--exec-on-reception", classic, str(port)],
        cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            assert proc.poll() is None, "storescp ended"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 10, "storescp to listen")
        out = subprocess.run(
            [dcmtk_tool("storescu"), "-aet", HOSTILE_CALLING, "-aec", "FIONA", "127.0.0.1",
             str(port), str(pydicom_data("MR_small.dcm"))],
            env=NODELAY, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: (cwd / "P").exists(), 10, "the sender's command to run")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert [p.name for p in cwd.iterdir()] == ["P"]
