"""Series and study completion with a real daemon, real files and real hook processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from completion_helpers import (
    completion_site,
    got,
    hook,
    journal,
    lines,
    series,
    wait_got,
)
from daemonproc import CLI, Site, stop, wait_for
from manyfiles import Corpus, uid
from pipefeed import feed

pytestmark = pytest.mark.e2e


def record_of(event: dict[str, object]) -> dict[str, object]:
    return dict(json.loads(Path(str(event["record"])).read_text()))


def test_series_and_study_events_run_the_hooks_with_the_final_record(tmp_path: Path) -> None:
    hooks = [hook(tmp_path, "series", "series.jsonl"),
             hook(tmp_path, "series", "phantom.jsonl", types=["ABCD-Phantom"]),
             hook(tmp_path, "study", "study.jsonl")]
    site = completion_site(tmp_path, hooks, series_quiet=1, study_quiet=2)
    corpus = Corpus(site.archive)
    a1 = series(corpus, 1, 1, 5, "PA")
    a2 = series(corpus, 1, 2, 3, "PA", description="Phantom QA")
    b1 = series(corpus, 2, 1, 4, "PB")
    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, lines(a1 + a2 + b1))
        studies = wait_got(tmp_path, "study.jsonl", 2)
        runs = got(tmp_path, "series.jsonl")
        assert len(runs) == 3
        for run in runs:  # stdin, environment and the record on disk agree
            event, env = run["stdin"], run["env"]
            record = record_of(event)
            assert event["NumFiles"] == record["NumFiles"]
            assert int(str(record["NumFiles"])) == len(os.listdir(event["folder"]))
            assert event["ClassifyType"] == record["ClassifyType"]
            assert (event["StudyInstanceUID"], event["SeriesInstanceUID"], event["PatientID"]) \
                == (record["StudyInstanceUID"], record["SeriesInstanceUID"], record["PatientID"])
            assert env == {"DCMSORTD_EVENT": "series-complete",
                           "DCMSORTD_STUDY": event["StudyInstanceUID"],
                           "DCMSORTD_SERIES": event["SeriesInstanceUID"],
                           "DCMSORTD_FOLDER": event["folder"],
                           "DCMSORTD_RECORD": event["record"]}
            assert event["record"] == str(site.site / "raw" / event["StudyInstanceUID"]
                                          / f"{event['SeriesInstanceUID']}.json")
        by_series = {r["stdin"]["SeriesInstanceUID"]: r["stdin"] for r in runs}
        assert {k: v["NumFiles"] for k, v in by_series.items()} == {
            uid(1, 1): "5", uid(1, 2): "3", uid(2, 1): "4"}
        phantom = got(tmp_path, "phantom.jsonl")  # the types filter
        assert [r["stdin"]["SeriesInstanceUID"] for r in phantom] == [uid(1, 2)]
        assert phantom[0]["stdin"]["ClassifyType"] == ["MR", "ABCD-Phantom"]
        by_study = {r["stdin"]["StudyInstanceUID"]: r for r in studies}
        study_a = by_study[uid(1)]
        assert study_a["stdin"]["series"] == [uid(1, 1), uid(1, 2)]
        assert (study_a["stdin"]["NumFiles"], study_a["stdin"]["ClassifyType"]) == (
            "8", ["MR", "ABCD-Phantom"])
        assert study_a["stdin"]["folder"] == str(site.site / "raw" / uid(1))
        assert study_a["env"] == {"DCMSORTD_EVENT": "study-complete",
                                  "DCMSORTD_STUDY": uid(1),
                                  "DCMSORTD_FOLDER": str(site.site / "raw" / uid(1))}
        assert by_study[uid(2)]["stdin"]["series"] == [uid(2, 1)]
        events = journal(site)
        assert [e["event"] for e in events].count("series-complete") == 3
        for e in events:  # a study's event comes after each of its series'
            if e["event"] == "study-complete":
                before = events[:events.index(e)]
                assert set(e["series"]) <= {s.get("SeriesInstanceUID") for s in before}
        assert sorted((r["stdin"] for r in runs), key=lambda e: e["id"]) == sorted(
            (e for e in events if e["event"] == "series-complete"), key=lambda e: e["id"])

        # `dcmsortd events --follow` prints what is there, then what comes
        follower = subprocess.Popen([*CLI, "events", *site.args("--follow")],
                                    stdout=subprocess.PIPE, text=True)
        # a re-sent image changes nothing and fires nothing; a late image starts a round
        late = series(corpus, 1, 1, 1, "PA", first=6)
        feed(site.pipe, lines(b1[:1] + late))
        studies = wait_got(tmp_path, "study.jsonl", 3)
        assert studies[2]["stdin"]["StudyInstanceUID"] == uid(1)
        assert studies[2]["stdin"]["NumFiles"] == "9"
        time.sleep(1.5)  # longer than series_quiet after the re-sent image: still nothing
        runs = got(tmp_path, "series.jsonl")
        assert [r["stdin"]["SeriesInstanceUID"] for r in runs[3:]] == [uid(1, 1)]
        assert runs[3]["stdin"]["NumFiles"] == "6" == record_of(runs[3]["stdin"])["NumFiles"]
        assert len(got(tmp_path, "study.jsonl")) == 3
        events = journal(site)
        assert len(events) == 7
        printed: list[dict[str, object]] = []
        assert follower.stdout is not None
        while len(printed) < len(events):
            printed.append(json.loads(follower.stdout.readline()))
        follower.terminate()
        assert follower.wait(10) == 0
        follower.stdout.close()
        assert printed == events
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    listed = site.cli("events")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line) for line in listed.stdout.splitlines()] == events
    assert site.cli("events", "--since", "2h").stdout == listed.stdout
    assert site.cli("events", "--since", "2999-01-01").stdout == ""
    with_deliveries = site.cli("events", "--deliveries").stdout.splitlines()
    done = [json.loads(line) for line in with_deliveries if '"delivery"' in line]
    assert len([d for d in done if d["delivery"] == "done"]) == 4 + 1 + 3  # series, phantom, study
    assert {d["delivery"] for d in done} == {"queued", "done"}
    # the arrival markers are still touched as before
    assert sorted(p.name for p in (site.site / ".arrived").iterdir()) == sorted(
        f"SCANNER FIONA 127.0.0.1 {uid(s)} {uid(s, n)}" for s, n in ((1, 1), (1, 2), (2, 1)))


def test_sigkill_before_the_quiet_time_ends_fires_once_after_the_restart_and_never_again(
    tmp_path: Path,
) -> None:
    hooks = [hook(tmp_path, "series", "series.jsonl"), hook(tmp_path, "study", "study.jsonl")]
    site = completion_site(tmp_path, hooks, series_quiet=3, study_quiet=1)
    corpus = Corpus(site.archive)
    a1, a2 = series(corpus, 1, 1, 4, "PA"), series(corpus, 1, 2, 2, "PA")
    daemon = site.start_run("--no-catch-up")
    feed(site.pipe, lines(a1 + a2))
    wait_for(lambda: {r.get("NumFiles") for r in site.records().values()} == {"4", "2"}
             and len(site.records()) == 2, 10, "the records")
    daemon.send_signal(signal.SIGKILL)
    daemon.communicate(timeout=10)
    assert journal(site) == [] and got(tmp_path, "series.jsonl") == []
    daemon = site.start_run("--no-catch-up")
    try:
        started = time.monotonic()
        wait_got(tmp_path, "study.jsonl", 1)
        # series issued series_quiet after the start, the study study_quiet later (not
        # after another full round of anything); generous slack for a loaded machine
        assert time.monotonic() - started < 3 + 1 + 8
        assert sorted(r["stdin"]["NumFiles"] for r in got(tmp_path, "series.jsonl")) == ["2", "4"]
    finally:
        stop(daemon)
    daemon = site.start_run("--no-catch-up")  # after delivery: never again
    try:
        b1 = series(corpus, 2, 1, 2, "PB")  # something to wait for instead of sleeping
        feed(site.pipe, lines(b1))
        studies = wait_got(tmp_path, "study.jsonl", 2)
        assert [s["stdin"]["StudyInstanceUID"] for s in studies] == [uid(1), uid(2)]
        assert [r["stdin"]["SeriesInstanceUID"] for r in got(tmp_path, "series.jsonl")][2:] \
            == [uid(2, 1)]
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert len(journal(site)) == 5


def test_a_hook_failing_once_is_retried_and_a_hanging_one_times_out(tmp_path: Path) -> None:
    hooks = [hook(tmp_path, "series", "series.jsonl", "--fail-once", str(tmp_path / "failed")),
             {"on": "study", "run": ["/bin/sh", "-c", "echo stuck >&2; exec sleep 60"],
              "timeout": 1}]
    site = completion_site(tmp_path, hooks, series_quiet=1, study_quiet=1)
    corpus = Corpus(site.archive)
    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, lines(series(corpus, 1, 1, 2, "PA")))
        (run,) = wait_got(tmp_path, "series.jsonl", 1)  # the retry, 2 s after the failure
        assert (tmp_path / "failed").exists()
        assert run["stdin"]["NumFiles"] == "2"
        wait_for(lambda: "timed out after 1 s" in site.log_text(), 15, "the hook's timeout")
        wait_for(lambda: any(d.get("delivery") == "failed" and d["hook"][0] == "/bin/sh"
                             for d in journal(site, deliveries=True)), 5, "the journal")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    log = site.log_text()
    failed = [line for line in log.splitlines() if "failed (exit 3)" in line]
    assert len(failed) == 1 and "stderr: the first run fails" in failed[0]
    assert "retry 1 of 3 in 2 s" in failed[0] and uid(1, 1) in failed[0]
    timed_out = [line for line in log.splitlines() if "timed out after 1 s" in line]
    assert "study-complete" in timed_out[0] and "stderr: stuck" in timed_out[0]
    states = [(d["delivery"], d["hook"][0]) for d in journal(site, deliveries=True)
              if "delivery" in d]
    assert states.count(("done", hooks[0]["run"][0])) == 1
    assert ("done", "/bin/sh") not in states  # its retry waits for the next start


def test_a_hundred_series_with_slow_hooks_do_not_hold_sorting_up(tmp_path: Path) -> None:
    started = tmp_path / "started"
    hooks = [hook(tmp_path, "series", "series.jsonl", "--started", str(started),
                  "--sleep", "60")]
    site = completion_site(tmp_path, hooks, series_quiet=1, study_quiet=1, hook_workers=2)
    corpus = Corpus(site.archive)
    first = [p for n in range(100) for p in series(corpus, 1 + n // 10, n, 2, f"P{n // 10}")]
    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, lines(first))
        wait_for(lambda: len([e for e in journal(site)
                              if e["event"] == "series-complete"]) == 100, 30, "100 events")
        wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 10,
                 "two hooks running")
        # both hook workers sleep: 100 more series are sorted and recorded all the same
        more = [p for n in range(100, 200) for p in series(corpus, 100 + n // 10, n, 2, "Q")]
        feed(site.pipe, lines(more))
        wait_for(lambda: sum(1 for r in site.records().values() if r["NumFiles"] == "2")
                 == 200, 30, "200 records")
        assert len(list((site.site / "raw").glob("*/*/*"))) == 400
        wait_for(lambda: len(journal(site)) >= 200 + 20, 30, "the events of the new series")
        assert len(started.read_text().split()) == 2  # still the first two, still asleep
        assert got(tmp_path, "series.jsonl") == []
        # status shows the daemon's completions: events issued, hooks waiting, none run yet
        state = wait_for(lambda: (s := status_of(site)).get("completion", {})
                         .get("events_issued", 0) >= 200 and s, 10, "status to count")
        done = state["completion"]
        assert done["hooks_queued"] >= 200 and done["hooks_run"] == 0
        assert done["hooks_failed"] == 0 and "completion" in state["providers"]
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert "runs again at the next start" in site.log_text()


def status_of(site: Site) -> dict[str, Any]:
    out = site.cli("status", "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_import_issues_events_only_when_asked(tmp_path: Path) -> None:
    hooks = [hook(tmp_path, "series", "series.jsonl"), hook(tmp_path, "study", "study.jsonl")]
    site = completion_site(tmp_path, hooks, series_quiet=60, study_quiet=60)
    corpus = Corpus(site.archive / "a")
    series(corpus, 1, 1, 3, "PA")
    out = site.cli("import", str(site.archive / "a"))
    assert out.returncode == 0, out.stderr
    assert journal(site) == [] and got(tmp_path, "series.jsonl") == []
    more = Corpus(site.archive / "b")
    series(more, 1, 2, 2, "PA")
    series(more, 2, 1, 1, "PB")
    out = site.cli("import", "--events", str(site.archive / "b"))
    assert out.returncode == 0, out.stderr
    # issued at its end, whatever the quiet times; it waited for the hooks
    assert sorted(r["stdin"]["SeriesInstanceUID"] for r in got(tmp_path, "series.jsonl")) \
        == [uid(1, 2), uid(2, 1)]
    studies = {r["stdin"]["StudyInstanceUID"]: r["stdin"] for r in got(tmp_path, "study.jsonl")}
    assert studies[uid(1)]["series"] == [uid(1, 1), uid(1, 2)]  # the study as on disk
    assert studies[uid(1)]["NumFiles"] == "5"
    assert [e["event"] for e in journal(site)].count("study-complete") == 2


def test_a_hook_cut_short_by_a_crash_runs_again_after_the_restart(tmp_path: Path) -> None:
    started = tmp_path / "started"
    hooks = [hook(tmp_path, "series", "series.jsonl", "--started", str(started),
                  "--sleep", "1")]
    site = completion_site(tmp_path, hooks, series_quiet=0.5, study_quiet=0.5)
    corpus = Corpus(site.archive)
    daemon = site.start_run("--no-catch-up")
    feed(site.pipe, lines(series(corpus, 1, 1, 2, "PA")))
    wait_for(lambda: started.exists(), 15, "the hook to start")
    daemon.send_signal(signal.SIGKILL)  # the hook (its own session) is left running
    daemon.communicate(timeout=10)
    assert [d["delivery"] for d in journal(site, deliveries=True) if "delivery" in d] \
        == ["queued"]
    daemon = site.start_run("--no-catch-up")
    try:
        wait_for(lambda: len(started.read_text().split()) == 2, 15, "the hook to run again")
        wait_for(lambda: any(d.get("delivery") == "done" for d in journal(site, True)), 15,
                 "its delivery")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    events = journal(site)
    assert [e["event"] for e in events] == ["series-complete", "study-complete"]
    runs = wait_got(tmp_path, "series.jsonl", 2)  # the first run went on alone: at least once
    assert {r["stdin"]["id"] for r in runs} == {events[0]["id"]}


def test_files_sorted_by_the_start_up_catch_up_count_as_arrivals(tmp_path: Path) -> None:
    hooks = [hook(tmp_path, "series", "series.jsonl"), hook(tmp_path, "study", "study.jsonl")]
    site = completion_site(tmp_path, hooks, series_quiet=0.5, study_quiet=0.5)
    daemon = site.start_run()  # a first run leaves the heartbeat the catch-up starts from
    code, out = stop(daemon)
    assert code == 0, out
    corpus = Corpus(site.archive / "missed")  # received while no daemon ran, never announced
    series(corpus, 1, 1, 3, "PA")
    daemon = site.start_run()
    try:
        (run,) = wait_got(tmp_path, "series.jsonl", 1)
        assert (run["stdin"]["SeriesInstanceUID"], run["stdin"]["NumFiles"]) == (uid(1, 1), "3")
        wait_got(tmp_path, "study.jsonl", 1)
    finally:
        code, out = stop(daemon)
    assert code == 0, out
