"""dcmsortd import: the trees and records of the daemon, any worker count, idempotent, safe
next to another writer; the dry run writes nothing; the summary counts reasons."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bulkcorpus import Corpus, Site, build_corpus, restore_logging, snapshot, uid
from daemonproc import wait_for
from dcmsortd.batch.progress import Progress, duration
from dcmsortd.batch.tally import Tally, reason
from dcmsortd.model.notice import Arrival
from dcmsortd.sorting.index import ProcessedIndex
from dcmsortd.sorting.processor import Examined
from realfiles import nibabel_data, pydicom_data, shared_dicom

__all__ = ["restore_logging"]
pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("corpus")
    return build_corpus(base / "in", base / "scratch")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Site:
    """The corpus imported once with one worker (compared against by several tests)."""
    site = Site(tmp_path_factory.mktemp("one"))
    assert site.run("import", str(corpus.root)) == 0
    return site


def record(site: Site, study: str, series: str) -> dict[str, object]:
    data = json.loads((site.site / "raw" / study / f"{series}.json").read_text())
    assert isinstance(data, dict)
    return data


def test_import_files_every_image_like_the_daemon(corpus: Corpus, imported: Site) -> None:
    raw = imported.site / "raw"
    for (study, series), count in corpus.series.items():
        links = sorted((raw / study / series).iterdir())
        assert len(links) == count
        assert all(os.path.isabs(os.readlink(p)) for p in links)
        assert {os.readlink(p) for p in links} <= {str(p) for p in corpus.sortable}
        rec = record(imported, study, series)
        assert rec["NumFiles"] == str(count)
        assert rec["IncomingConnection"] == {
            "AETitleCaller": "unknown", "AETitleCalled": "unknown", "CallerIP": "unknown"}
        assert (imported.site / ".arrived" / f"unknown unknown unknown {study} {series}").exists()
    dwi = record(imported, uid(1), uid(1, 1))
    info = dwi["siemensDiffusionInformation"]
    assert isinstance(info, list) and len(info) == 15
    assert sorted({e["B_value"] for e in info}) == ["0", "1000"]
    assert os.readlink(imported.site / "participants" / "BULK1" / "20240102_101010") == str(
        raw / uid(1))
    sr_dirs = list((imported.site / "srs").glob(f"*/{uid(2)}"))
    assert len(sr_dirs) == 1 and len(list(sr_dirs[0].iterdir())) == 2
    listing = json.loads(sr_dirs[0].with_name(sr_dirs[0].name + ".json").read_text())
    assert [e["SOPInstanceUID"] for e in listing] == [f"{uid(2, 2)}.1", f"{uid(2, 2)}.2"]


def test_import_records_every_input_file_in_the_index(corpus: Corpus, imported: Site) -> None:
    index = ProcessedIndex(str(imported.site / ".dcmsortd" / "processed.sqlite"))
    try:
        known = index.snapshot()
    finally:
        index.close()
    for path in corpus.sortable + corpus.bad:
        st = path.stat()
        assert known[str(path)] == (st.st_size, st.st_mtime_ns)
    assert str(corpus.root / "b" / "link.dcm") not in known


def test_summary_counts_reasons_and_bad_files_do_not_stop(corpus: Corpus, imported: Site) -> None:
    text = imported.log_text()
    assert f"import of {corpus.root}: {len(corpus.sortable) + 2} file(s) found" in text
    assert f"sorted: {len(corpus.sortable)} into {len(corpus.series)} series" in text
    assert "skipped: 2" in text
    assert "bad: not DICOM  (e.g. " + str(corpus.root / "b" / "notes.txt") in text
    assert "bad: truncated" in text or "bad: corrupt" in text
    assert "failed: 0" in text
    assert "not followed: 1 symbolic link(s)" in text
    assert not (imported.site / ".dcmsortd" / "daemon.json").exists()  # no heartbeat


def test_two_workers_give_the_same_output(
    corpus: Corpus, imported: Site, tmp_path: Path
) -> None:
    site = Site(tmp_path)
    assert site.run("import", "--workers", "2", str(corpus.root)) == 0
    assert snapshot(site.datadir) == snapshot(imported.datadir)


def test_import_again_changes_nothing(corpus: Corpus, tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert site.run("import", str(corpus.root)) == 0
    before = snapshot(site.datadir, mtimes=True)
    assert site.run("import", str(corpus.root)) == 0
    assert snapshot(site.datadir, mtimes=True) == before  # not even rewritten


def test_lost_raw_tree_is_rebuilt(corpus: Corpus, imported: Site, tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert site.run("import", str(corpus.root)) == 0
    for path in sorted((site.site / "raw").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    assert site.run("import", str(corpus.root)) == 0
    assert snapshot(site.datadir) == snapshot(imported.datadir)


def test_dry_run_writes_nothing(corpus: Corpus, imported: Site, tmp_path: Path) -> None:
    fresh = Site(tmp_path / "fresh")
    assert fresh.run("import", "--dry-run", str(corpus.root)) == 0
    assert not fresh.datadir.exists()
    text = fresh.log_text()
    assert (f"would sort {len(corpus.sortable)} file(s) (0 linked already) into "
            f"{len(corpus.series)} series ({len(corpus.series)} new) of 2 stud(ies)") in text
    assert f"site/raw/{uid(1)}/{uid(1, 1)}.json: 15 file(s), 15 not linked yet" in text
    assert "would skip: 2" in text

    before = snapshot(imported.datadir, mtimes=True)
    assert imported.run("import", "--dry-run", str(corpus.root)) == 0
    assert snapshot(imported.datadir, mtimes=True) == before
    assert f"({len(corpus.sortable)} linked already)" in imported.log_text()


def test_dry_run_deletes_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    inbox = site.datadir / "site" / "archive"
    inbox.mkdir(parents=True)
    ct = inbox / "ct.dcm"
    ct.write_bytes(pydicom_data("CT_small.dcm").read_bytes())
    flags = ["--modalities", "MR", "--other-modalities", "delete"]
    assert site.run("import", "--dry-run", *flags, str(inbox)) == 0
    assert ct.exists()
    assert "deleted: modality CT deleted as configured" in site.log_text()
    assert site.run("import", *flags, str(inbox)) == 0
    assert not ct.exists()


def test_files_outside_the_roots_are_never_deleted(tmp_path: Path) -> None:
    site = Site(tmp_path)
    elsewhere = tmp_path / "backfill"
    elsewhere.mkdir()
    ct = elsewhere / "ct.dcm"
    ct.write_bytes(pydicom_data("CT_small.dcm").read_bytes())
    assert site.run("import", "--modalities", "MR", "--other-modalities", "delete",
                    str(elsewhere)) == 0
    assert ct.exists()
    assert "rejected: modality CT not deleted: outside the input roots" in site.log_text()


def test_write_failure_exits_1_and_is_summarised(corpus: Corpus, tmp_path: Path) -> None:
    site = Site(tmp_path)
    (site.site / "raw").mkdir(parents=True)
    (site.site / "raw" / uid(2)).write_text("in the way\n")  # study folder cannot be made
    assert site.run("import", str(corpus.root)) == 1
    text = site.log_text()
    assert "failed: 7" in text
    assert "       7  cannot write the output: [Errno 20] Not a directory  (e.g. " in text
    assert (site.site / "temp" / "failed.tsv").read_text().count("\n") == 7
    assert record(site, uid(1), uid(1, 2))["NumFiles"] == "15"  # the rest went on


def test_missing_path_exits_1(tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert site.run("import", str(tmp_path / "nowhere")) == 1
    assert "could not scan: 1 path(s)" in site.log_text()


def test_real_scanner_files_imported_in_place(tmp_path: Path) -> None:
    files = [shared_dicom(n) for n in ("siemens_ve11_fieldmap.dcm", "siemens_vb17_axial.dcm",
                                       "siemens_ve11_phoenixzip_sr.dcm")]
    site = Site(tmp_path)
    assert site.run("import", *map(str, files)) == 0
    targets = {os.readlink(p) for p in (site.site / "raw").glob("*/*/*")}
    assert targets == {str(f) for f in files}
    assert len(list((site.site / "srs").glob("*/*.json"))) == 1
    assert "sorted: 3 into 3 series" in site.log_text()


CONCURRENT = textwrap.dedent("""
    import os, sys, time
    from dcmsortd.batch import bulk  # the heavy imports before the start line
    from dcmsortd.cli import main as cli
    go = sys.argv[1]
    open(f"{go}.{os.getpid()}", "w").close()  # ready
    while not os.path.exists(go):
        time.sleep(0.002)
    sys.exit(cli.main(sys.argv[2:]))
""")


def test_two_processes_on_one_series_give_exact_records(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    parts = Corpus(tmp_path / "in")
    dwi = nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path / "scratch")
    study, series = uid(9), uid(9, 1)
    for n, half in enumerate(("p1", "p2")):
        parts.add_series(dwi, parts.root / half, study, series, 60, first=1 + 60 * n)
    together, racing = Site(tmp_path / "together"), Site(tmp_path / "racing")
    assert together.run("import", str(parts.root)) == 0
    racing.base.mkdir()
    (racing.base / "config.json").write_text('{"dcmsortd": {"flush_interval": 0.01}}\n')
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(go), "import",
                          *racing.flags(), str(parts.root / half)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for half in ("p1", "p2")
    ]
    wait_for(lambda: len(list(tmp_path.glob("go.*"))) == 2 or any(p.poll() for p in procs),
             30, "both importers ready")
    go.touch()
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    got, want = record(racing, study, series), record(together, study, series)
    assert got["NumFiles"] == "120"
    assert got["InstanceNumber"] in ("1", "61")  # the first image of whichever wrote first
    got.pop("InstanceNumber"), want.pop("InstanceNumber")
    assert got == want
    state = json.loads((racing.site / ".dcmsortd" / "series" / study / f"{series}.json")
                       .read_text())
    assert len(state["accounted"]) == 120


def test_progress_logs_rate_and_eta_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    caplog.set_level("INFO", logger="dcmsortd.batch.progress")
    with Progress("import", 100, terminal=False, clock=lambda: now[0], every=5.0) as progress:
        for _ in range(10):
            now[0] += 1.0
            progress.advance(2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["import: 10/100 files (10%), 2 files/s, about 45 s left",
                     "import: 20/100 files (20%), 2 files/s, about 40 s left"]


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("import", 4, terminal=True, stream=stream) as progress:
        for _ in range(4):
            progress.advance()
    assert "import: 100%" in stream.getvalue() and "4/4" in stream.getvalue()


def test_duration_is_readable() -> None:
    assert [duration(s) for s in (0.04, 42, 185, 7620)] == [
        "0.0 s", "42 s", "3 min 05 s", "2 h 07 min"]


def test_summary_groups_reasons_and_stays_short() -> None:
    tally = Tally()
    for n in range(12):
        for _ in range(n + 1):
            tally.add("bad", f"/in/{n}", f"reason {n:02d}", f"reason {n:02d}: detail")
    failure = "cannot write the output: [Errno 28] No space left on device: '/data/site/x'"
    examined = Examined(Arrival("unknown", "unknown", "unknown", "/in/f"), None, None)
    tally.add("failed", "/in/f", *reason(examined, "failed", failure))
    lines = tally.lines()
    assert lines[:3] == ["sorted: 0", "skipped: 78",
                         "        12  bad: reason 11  (e.g. /in/11: reason 11: detail)"]
    assert "         3  for 2 other reason(s), see the log" in lines
    assert lines[-2:] == ["failed: 1", "         1  cannot write the output: [Errno 28] No space "
                          f"left on device  (e.g. /in/f: {failure})"]
