"""The catch-up scan: reads no header of a handled file, sorts what was missed, honours
--since and the start-up window, skips dcmsortd's own folders; the index it trusts is
committed only once records are on disk."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkcorpus import Corpus, Site, build_corpus, restore_logging, snapshot, uid
from daemonproc import Site as DaemonSite
from daemonproc import wait_for
from dcmsortd.batch.bulk import catch_up, catch_up_at_start, open_runtime
from dcmsortd.batch.walk import (
    CHOOSE_BATCH,
    FileEntry,
    WalkStats,
    collect,
    distinct_tops,
    output_folders,
    parse_since,
    walk,
)
from dcmsortd.cli.main import build_parser, settings_from
from dcmsortd.dicom import header
from dcmsortd.model.instance import TagKey
from dcmsortd.model.notice import Arrival
from dcmsortd.rules.engine import load_rules
from dcmsortd.service.config import Settings
from dcmsortd.service.runtime import Runtime, build
from dcmsortd.sorting.index import ProcessedIndex
from dcmsortd.sorting.processor import Examined, Examiner
from feeder import feed, wait_listening
from manyfiles import Corpus as ManyCorpus
from manyfiles import uid as many_uid
from manyfiles import write_series
from realfiles import pydicom_data

__all__ = ["restore_logging"]
pytestmark = pytest.mark.usefixtures("restore_logging")
HOUR = 3600.0


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Site, Corpus]:
    """The corpus received into ``<datadir>/site/archive`` (the default input root)."""
    site = Site(tmp_path)
    corpus = build_corpus(site.site / "archive", tmp_path / "scratch")
    return site, corpus


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose header the (in-process) examiner reads, in order."""
    reads: list[str] = []
    real = header.read_instance

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr("dcmsortd.sorting.processor.read_instance", counting)
    return reads


def settings_for(site: Site, *extra: str) -> Settings:
    return settings_from(build_parser().parse_args(["catch-up", *site.flags(*extra)]))


@pytest.fixture
def runtime(archived: tuple[Site, Corpus]) -> Iterator[Runtime]:
    settings = settings_for(archived[0])
    rt = open_runtime(settings, load_rules(settings.rules_path))
    yield rt
    rt.close()


class CountingExaminer:
    """The real examiner, counting its calls."""

    def __init__(self, real: Examiner) -> None:
        self.real, self.calls = real, 0

    def __call__(self, arrival: Arrival, keys: frozenset[TagKey]) -> Examined:
        self.calls += 1
        return self.real(arrival, keys)


def test_catch_up_after_import_reads_no_header_and_sorts_only_new_files(
    archived: tuple[Site, Corpus], header_reads: list[str]
) -> None:
    site, corpus = archived
    assert site.run("import", str(corpus.root)) == 0
    total = len(corpus.sortable) + len(corpus.bad)
    assert len(header_reads) == total
    before = snapshot(site.datadir, mtimes=True)
    header_reads.clear()

    assert site.run("catch-up") == 0  # default root: the data folder itself
    assert header_reads == []
    assert snapshot(site.datadir, mtimes=True) == before
    assert f"not read: {total} already handled (same size and mtime)" in site.log_text()

    more = corpus.add_series(pydicom_data("MR_small.dcm"), corpus.root / "a" / "mr", uid(1),
                             uid(1, 2), 2, first=16)
    more += corpus.add_series(pydicom_data("CT_small.dcm"), corpus.root / "c", uid(3),
                              uid(3, 1), 1)
    assert site.run("catch-up") == 0
    assert sorted(header_reads) == sorted(map(str, more))
    mr = json.loads((site.site / "raw" / uid(1) / f"{uid(1, 2)}.json").read_text())
    assert mr["NumFiles"] == "17"
    assert (site.site / "raw" / uid(3) / uid(3, 1) / f"{uid(3, 1)}.1").is_symlink()


def test_catch_up_report_shows_the_index_path_was_taken(
    archived: tuple[Site, Corpus], runtime: Runtime
) -> None:
    site, corpus = archived
    first = catch_up(runtime, [str(site.datadir)], None)
    assert (first.known, first.examined, first.tally.counts["sorted"]) == (
        0, len(corpus.sortable) + 2, len(corpus.sortable))
    counting = CountingExaminer(runtime.pipeline.examiner)
    runtime.pipeline.examiner = counting  # type: ignore[assignment]
    second = catch_up(runtime, [str(site.datadir)], None)
    assert (second.known, second.examined, counting.calls) == (first.walk.files, 0, 0)
    assert second.walk.files == len(corpus.sortable) + 2  # nothing from raw/, srs/, ...
    assert second.walk.excluded == 6  # raw participants srs .arrived temp .dcmsortd


def test_changed_file_is_read_again(archived: tuple[Site, Corpus], runtime: Runtime) -> None:
    site, corpus = archived
    catch_up(runtime, [str(corpus.root)], None)
    changed = corpus.bad[0]
    changed.write_text("still not DICOM, but longer\n")
    again = catch_up(runtime, [str(corpus.root)], None)
    assert again.examined == 1 and again.tally.counts["bad"] == 1


def test_since_filters_on_mtime(archived: tuple[Site, Corpus], header_reads: list[str]) -> None:
    site, corpus = archived
    now = time.time()
    old = corpus.sortable[:10]
    for path in corpus.sortable + corpus.bad:
        when = now - 3 * 24 * HOUR if path in old else now
        os.utime(path, (when, when))
    assert site.run("catch-up", "--since", "2d") == 0
    assert len(header_reads) == len(corpus.sortable) + 2 - 10
    assert "10 modified earlier" in site.log_text()
    header_reads.clear()
    assert site.run("catch-up", "--since", "2000-01-01T00:00") == 0
    assert sorted(header_reads) == sorted(map(str, old))


def test_since_accepts_durations_and_iso_times() -> None:
    now = 1_000_000.0
    assert parse_since("3600s", now) == parse_since("1h", now) == parse_since("60m", now)
    assert parse_since("3600", now) == now - HOUR
    assert parse_since("7d", now) == now - 7 * 24 * HOUR == parse_since("1w", now)
    assert parse_since("2024-05-01T12:30:00+00:00", now) == 1714566600.0
    assert parse_since("2024-05-01", now) == parse_since("2024-05-01T00:00", now)


def test_bad_since_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert Site(tmp_path).run("catch-up", "--since", "yesterday") == 1
    assert "--since 'yesterday': expected an ISO date/time" in capsys.readouterr().err


def test_an_output_folder_given_as_root_is_not_scanned(
    archived: tuple[Site, Corpus], header_reads: list[str]
) -> None:
    site, corpus = archived
    assert site.run("import", str(corpus.root)) == 0
    header_reads.clear()
    assert site.run("catch-up", str(site.site / "raw")) == 0
    assert header_reads == []
    assert "own output folder, not scanned" in site.log_text()


def test_start_up_catch_up_without_a_heartbeat_only_hints(
    archived: tuple[Site, Corpus], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    site, _ = archived
    settings = settings_for(site)
    rt = build(settings, load_rules(settings.rules_path))
    try:
        catch_up_at_start(rt, None)
    finally:
        rt.close()
    assert rt.sorter.counts.total() == 0
    assert "run `dcmsortd catch-up` once" in caplog.text


@pytest.mark.parametrize(("last_alive", "window", "expected"), [
    (-3 * HOUR, 7 * 24 * HOUR, {"1h", "2h"}),  # since the last heartbeat minus 5 minutes
    (-30 * 24 * HOUR, 1.5 * HOUR, {"1h"}),  # but never further back than the window
    (-30 * 24 * HOUR, 7 * 24 * HOUR, {"1h", "2h", "4h"}),
])
def test_start_up_catch_up_is_bounded(
    archived: tuple[Site, Corpus], last_alive: float, window: float, expected: set[str]
) -> None:
    site, corpus = archived
    now = 2_000_000_000.0
    ages = {"1h": HOUR, "2h": 2 * HOUR, "4h": 4 * HOUR, "40d": 40 * 24 * HOUR}
    stamped: dict[str, list[Path]] = {}
    for n, path in enumerate(corpus.sortable + corpus.bad):
        age = list(ages)[n % 4]
        stamped.setdefault(age, []).append(path)
        os.utime(path, (now - ages[age], now - ages[age]))
    (site.base / "config.json").write_text(json.dumps(
        {"dcmsortd": {"catch_up_window": window}}))
    settings = settings_for(site)
    rt = build(settings, load_rules(settings.rules_path))
    counting = CountingExaminer(rt.pipeline.examiner)
    rt.pipeline.examiner = counting  # type: ignore[assignment]
    try:
        catch_up_at_start(rt, now + last_alive, clock=lambda: now)
    finally:
        rt.close()
    assert counting.calls == sum(len(stamped[age]) for age in expected)


def test_index_is_committed_only_once_records_are_written(
    archived: tuple[Site, Corpus], runtime: Runtime
) -> None:
    site, corpus = archived
    first, second = corpus.sortable[0], corpus.sortable[1]  # one series
    reader = ProcessedIndex(str(site.site / ".dcmsortd" / "processed.sqlite"))
    try:
        runtime.pipeline.feed(Arrival("unknown", "unknown", "unknown", str(first)))
        runtime.flush()  # the new record is due at once: written, then the index committed
        assert set(reader.snapshot()) == {str(first)}
        runtime.pipeline.feed(Arrival("unknown", "unknown", "unknown", str(second)))
        runtime.flush()  # not due yet: the record waits, so must the index
        assert runtime.store.dirty()
        assert set(reader.snapshot()) == {str(first)}
        runtime.flush(everything=True)
        assert set(reader.snapshot()) == {str(first), str(second)}
    finally:
        reader.close()



def test_a_record_not_yet_written_holds_back_only_its_own_files(
    archived: tuple[Site, Corpus], runtime: Runtime
) -> None:
    """A file's row waits for the records it is counted in, not for every record: a
    series whose record cannot be written (here a folder stands where it goes) does not
    keep the rows of other series from the index, nor piling up in memory."""
    site, corpus = archived
    mr = sorted(corpus.root.glob("a/mr/*"))
    ct = sorted(corpus.root.glob("b/ct/*"))
    reader = ProcessedIndex(str(site.site / ".dcmsortd" / "processed.sqlite"))
    try:
        for path in (mr[0], ct[0]):
            runtime.pipeline.feed(Arrival("unknown", "unknown", "unknown", str(path)))
        runtime.flush(everything=True)
        assert set(reader.snapshot()) == {str(mr[0]), str(ct[0])}
        mr_record = site.site / "raw" / uid(1) / f"{uid(1, 2)}.json"
        mr_record.unlink()
        mr_record.mkdir()  # the MR record can no longer be replaced
        for path in (mr[1], ct[1]):
            runtime.pipeline.feed(Arrival("unknown", "unknown", "unknown", str(path)))
        runtime.flush(everything=True)
        assert runtime.store.dirty_records() == {str(mr_record)}
        assert set(reader.snapshot()) == {str(mr[0]), str(ct[0]), str(ct[1])}
        mr_record.rmdir()
        runtime.flush(everything=True)
        assert runtime.store.dirty_records() == set()
        assert set(reader.snapshot()) == {str(mr[0]), str(ct[0]), str(ct[1]), str(mr[1])}
    finally:
        reader.close()

def test_daemon_catches_up_at_start_on_files_missed_while_it_was_down(tmp_path: Path) -> None:
    site = DaemonSite(tmp_path)
    early = site.archive / "early.dcm"
    early.write_bytes(pydicom_data("MR_small.dcm").read_bytes())
    proc = site.start_run()
    try:
        wait_for(lambda: "dcmsortd catch-up` once" in site.log_file.read_text(), 15, "the hint")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "run `dcmsortd catch-up` once" in out  # first run: no scan, a hint
    assert not (site.site / "raw").exists() or not any((site.site / "raw").iterdir())

    missed = site.archive / "missed.dcm"  # received while the daemon was down
    missed.write_bytes(pydicom_data("CT_small.dcm").read_bytes())
    hour_ago = time.time() - HOUR
    os.utime(early, (hour_ago, hour_ago))  # before the last run: left to `catch-up`
    proc = site.start_run()
    try:
        links = wait_for(lambda: list((site.site / "raw").glob("*/*/*")), 15, "a link")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert [os.readlink(p) for p in links] == [str(missed)]
    assert "start-up catch-up of" in out


def test_a_stopped_catch_up_leaves_the_rest_to_the_next(
    archived: tuple[Site, Corpus], runtime: Runtime
) -> None:
    site, corpus = archived
    total = len(corpus.sortable) + len(corpus.bad)
    first = catch_up(runtime, [str(corpus.root)], None,
                     stop=lambda: runtime.sorter.counts.total() >= 5)
    assert first.examined == 5
    second = catch_up(runtime, [str(corpus.root)], None)
    assert (second.known, second.examined) == (5, total - 5)


def test_walk_is_sorted_never_follows_links_and_skips_output_folders(tmp_path: Path) -> None:
    top = tmp_path / "top"
    for rel in ("b/2", "a/1", "a/z/3", "a.txt", "c", "site/raw/x", "site/archive/4"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(rel)
    (top / "a" / "dirlink").symlink_to(top / "b")
    (top / "a" / "filelink").symlink_to(top / "c")
    os.mkfifo(top / "fifo")
    (tmp_path / "toplink").symlink_to(top)
    stats = WalkStats()
    found = list(walk([str(tmp_path / "toplink"), str(tmp_path / "toplink" / "a")],
                      output_folders(str(tmp_path / "toplink" / "site")), stats))
    rel = [os.path.relpath(e.path, tmp_path / "toplink") for e in found]
    assert rel == ["a/1", "a/z/3", "a.txt", "b/2", "c", "site/archive/4"]
    assert all(e.size == len(r) and e.mtime_ns > 0 for e, r in zip(found, rel, strict=True))
    assert (stats.files, stats.symlinks, stats.others, stats.excluded) == (6, 2, 1, 1)
    assert [e.path for e in walk([str(top / "nowhere")], stats=stats)] == []
    assert stats.errors == [(str(top / "nowhere"), "cannot scan: No such file or directory")]


def test_distinct_tops_drops_repeats_and_nested_paths(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "ab")
    assert distinct_tops([a, f"{a}/x", b, a, f"{b}/"]) == [a, b]


def test_catch_up_touches_the_series_marker_of_its_sender_not_a_new_unknown_one(
    tmp_path: Path,
) -> None:
    """Files of a series the daemon was receiving when it went down are caught up under the
    marker it touched (a new ``unknown unknown unknown`` marker looks like a new arrival
    to downstream jobs); a series nobody announced gets the ``unknown`` marker."""
    site = DaemonSite(tmp_path)
    corpus = ManyCorpus(site.archive)
    src = pydicom_data("MR_small.dcm")
    announced = write_series(corpus, src, many_uid(80), many_uid(80, 1), 2, {})
    proc = site.start_run("--no-catch-up")
    try:
        wait_listening(site.pipe)
        feed(site.pipe, corpus.lines(caller="MRC40", called="FIONA", ip="10.1.2.3"))
        wait_for(lambda: len(list((site.site / "raw").glob("*/*/*"))) == 2, 30, "2 links")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    arrived = site.site / ".arrived"
    known = arrived / f"MRC40 FIONA 10.1.2.3 {many_uid(80)} {many_uid(80, 1)}"
    assert sorted(p.name for p in arrived.iterdir()) == [known.name]
    hour_ago = time.time() - HOUR
    os.utime(known, (hour_ago, hour_ago), follow_symlinks=False)

    missed = write_series(corpus, src, many_uid(80), many_uid(80, 1), 2, {}, first=3)
    missed += write_series(corpus, src, many_uid(81), many_uid(81, 1), 1, {})
    done = site.cli("catch-up")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((site.site / "raw").glob("*/*/*"))) == len(announced) + len(missed)
    assert sorted(p.name for p in arrived.iterdir()) == sorted(
        [known.name, f"unknown unknown unknown {many_uid(81)} {many_uid(81, 1)}"]
    )
    assert known.stat().st_mtime > hour_ago + HOUR / 2  # touched by the catch-up


def test_the_scan_hands_files_to_the_index_in_bounded_batches_in_walk_order(
    tmp_path: Path,
) -> None:
    """The catch-up filter sees the walk a batch at a time (one index query each, never
    the whole index in memory); what it keeps comes back in walk order, and a stop
    request drops the batch not yet chosen (the next scan finds those files)."""
    for n in range(2 * CHOOSE_BATCH + 3):
        folder = tmp_path / "in" / f"d{n // 400}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n:05d}").write_bytes(b"")
    sizes: list[int] = []

    def every_other(batch: list[FileEntry]) -> list[FileEntry]:
        sizes.append(len(batch))
        return batch[::2]

    walked = [e.path for e in walk([str(tmp_path / "in")], frozenset(), WalkStats())]
    kept, number = collect([str(tmp_path / "in")], frozenset(), WalkStats(), False,
                           every_other)
    assert sizes == [CHOOSE_BATCH, CHOOSE_BATCH, 3]
    expected = [p for k in range(0, len(walked), CHOOSE_BATCH)
                for p in walked[k : k + CHOOSE_BATCH][::2]]
    assert kept is not None and [e.path for e in kept] == expected
    assert number == len(expected)
    held, counted = collect([str(tmp_path / "in")], frozenset(), WalkStats(), False,
                            every_other, hold=len(expected) - 1)
    assert (held, counted) == (None, len(expected))  # past ``hold``: counted, not listed
    seen = iter(range(10**6))
    stopped, _ = collect([str(tmp_path / "in")], frozenset(), WalkStats(), False,
                         lambda batch: batch, stop=lambda: next(seen) >= CHOOSE_BATCH + 10)
    assert stopped is not None and [e.path for e in stopped] == walked[:CHOOSE_BATCH]


def test_a_catch_up_with_more_to_sort_than_it_holds_walks_again_and_sorts_all(
    archived: tuple[Site, Corpus], runtime: Runtime, caplog: pytest.LogCaptureFixture,
) -> None:
    """A first catch-up of a large archive does not list every file in memory: past
    ``hold`` files it counts them, then sorts them during a second walk. The report and
    the output are those of a catch-up that held them all."""
    site, corpus = archived
    total = len(corpus.sortable) + len(corpus.bad)
    now = time.time()
    old = corpus.sortable[:4]
    for path in old:
        os.utime(path, (now - 3 * 24 * HOUR, now - 3 * 24 * HOUR))
    with caplog.at_level("INFO", logger="dcmsortd"):
        first = catch_up(runtime, [str(corpus.root)], now - 2 * 24 * HOUR, hold=3)
    assert "more than 3: walking again" in caplog.text
    assert (first.walk.files, first.older, first.known, first.examined) == (
        total, 4, 0, total - 4)
    assert first.tally.counts["sorted"] == len(corpus.sortable) - 4
    runtime.flush(everything=True)
    everything = catch_up(runtime, [str(corpus.root)], None, hold=3)
    assert (everything.known, everything.examined) == (total - 4, 4)
    records = [json.loads(p.read_text()) for p in (site.site / "raw").glob("*/*.json")]
    assert sum(int(r["NumFiles"]) for r in records) == len(corpus.sortable)
    again = catch_up(runtime, [str(corpus.root)], None, hold=3)
    assert (again.known, again.examined) == (total, 0)
