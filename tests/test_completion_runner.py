"""The hook runner and the journal, with real subprocesses (small retry delays)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from dcmsortd.completion.hooks import Hook
from dcmsortd.completion.journal import Journal, read_entries, undelivered
from dcmsortd.completion.runner import HookRunner, Job, Outcome

EVENT = {"event": "series-complete", "id": "e1", "StudyInstanceUID": "1.2",
         "SeriesInstanceUID": "1.2.3", "folder": "/x/raw/1.2/1.2.3",
         "record": "/x/raw/1.2/1.2.3.json", "ClassifyType": ["MR"], "NumFiles": "3"}

# appends what it got (argv, stdin, env) to argv[1]; fails while argv[2] holds a number > 0
HOOK = """\
import json, os, sys, time
out, fails = sys.argv[1], sys.argv[2]
got = {"argv": sys.argv[3:], "stdin": json.loads(sys.stdin.read()),
       "env": {k: v for k, v in os.environ.items() if k.startswith("DCMSORTD_")}}
with open(out, "a") as fh:
    fh.write(json.dumps(got) + "\\n")
left = int(open(fails).read() or 0) if os.path.exists(fails) else 0
if left > 0:
    open(fails, "w").write(str(left - 1))
    print("first line\\nsomething went wrong", file=sys.stderr)
    sys.exit(3)
"""


class Reports:
    def __init__(self) -> None:
        self.items: list[tuple[Job, Outcome, str]] = []
        self.lock = threading.Lock()

    def __call__(self, job: Job, outcome: Outcome, state: str) -> None:
        with self.lock:
            self.items.append((job, outcome, state))

    def states(self) -> list[str]:
        with self.lock:
            return [s for _, _, s in self.items]


def script(tmp_path: Path, fails: int = 0) -> tuple[Hook, Path]:
    path = tmp_path / "hook.py"
    path.write_text(HOOK)
    (tmp_path / "fails").write_text(str(fails))
    out = tmp_path / "got.jsonl"
    return Hook("series", (sys.executable, str(path), str(out), str(tmp_path / "fails"),
                           "--extra"), timeout=20), out


def test_a_hook_gets_the_event_on_stdin_and_in_its_environment(tmp_path: Path) -> None:
    hook, out = script(tmp_path)
    reports = Reports()
    runner = HookRunner(2, reports, delays=(0.1,))
    runner.submit(Job(EVENT, hook))
    assert runner.wait(30)
    runner.close()
    (got,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["argv"] == ["--extra"] and got["stdin"] == EVENT
    assert got["env"] == {"DCMSORTD_EVENT": "series-complete", "DCMSORTD_STUDY": "1.2",
                          "DCMSORTD_SERIES": "1.2.3", "DCMSORTD_FOLDER": EVENT["folder"],
                          "DCMSORTD_RECORD": EVENT["record"]}
    assert reports.states() == ["done"]
    assert (runner.runs, runner.failures, runner.given_up) == (1, 0, 0)


def test_a_study_hook_sees_no_dcmsortd_variable_of_the_daemons_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DCMSORTD_SERIES (or any DCMSORTD_*) in the daemon's environment never reaches a
    hook: a study hook must not take a stale series for its own."""
    monkeypatch.setenv("DCMSORTD_SERIES", "stale")
    monkeypatch.setenv("DCMSORTD_SOMETHING", "else")
    hook, out = script(tmp_path)
    study = {"event": "study-complete", "StudyInstanceUID": "1.2", "folder": "/x/raw/1.2"}
    runner = HookRunner(1, Reports(), delays=(0.1,))
    runner.submit(Job(study, hook))
    assert runner.wait(30)
    runner.close()
    (got,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["env"] == {"DCMSORTD_EVENT": "study-complete", "DCMSORTD_STUDY": "1.2",
                          "DCMSORTD_FOLDER": "/x/raw/1.2"}


def test_a_failing_hook_is_logged_and_retried_until_it_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook, out = script(tmp_path, fails=2)
    reports = Reports()
    runner = HookRunner(1, reports, delays=(0.1, 0.2, 0.3))
    with caplog.at_level(logging.ERROR, "dcmsortd.completion.runner"):
        runner.submit(Job(EVENT, hook))
        assert runner.wait(30)
    runner.close()
    assert len(out.read_text().splitlines()) == 3
    assert reports.states() == ["failed", "failed", "done"]
    assert [j.attempt for j, _, _ in reports.items] == [0, 1, 2]
    first = caplog.records[0].getMessage()
    assert str(hook.run[1]) in first and "series-complete 1.2.3 (event e1)" in first
    assert "(exit 3)" in first and "stderr: first line | something went wrong" in first
    assert "retry 1 of 3" in first


def test_a_hook_failing_every_time_is_given_up_after_three_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook, out = script(tmp_path, fails=99)
    reports = Reports()
    runner = HookRunner(1, reports, delays=(0.05, 0.1, 0.15))
    runner.submit(Job(EVENT, hook))
    assert runner.wait(30)
    runner.close()
    assert len(out.read_text().splitlines()) == 4
    assert reports.states() == ["failed", "failed", "failed", "given-up"]
    assert (runner.runs, runner.failures, runner.given_up) == (4, 4, 1)
    assert "given up after 4 runs" in caplog.text


def test_a_hanging_hook_is_killed_with_its_process_group_at_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child_pid = tmp_path / "child.pid"
    hang = tmp_path / "hang.sh"
    # the hook starts a child of its own and waits: the whole group must go
    hang.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {child_pid}\necho stuck >&2\nwait\n")
    hang.chmod(0o755)
    reports = Reports()
    runner = HookRunner(1, reports, delays=())
    runner.submit(Job(EVENT, Hook("series", (str(hang),), timeout=1)))
    assert runner.wait(30)
    runner.close()
    ((_, outcome, state),) = reports.items
    assert state == "given-up" and outcome.status == "timed out after 1 s, killed"
    assert outcome.stderr == "stuck"
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the hook's own child outlived the timeout"
    assert "timed out after 1 s, killed" in caplog.text


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hook_that_cannot_start_is_a_failure(tmp_path: Path) -> None:
    reports = Reports()
    runner = HookRunner(1, reports, delays=())
    runner.submit(Job(EVENT, Hook("series", (str(tmp_path / "missing"),))))
    assert runner.wait(30)
    runner.close()
    ((_, outcome, state),) = reports.items
    assert state == "given-up" and outcome.status.startswith("cannot start")


def test_close_kills_a_running_hook_and_reports_nothing(tmp_path: Path) -> None:
    started = tmp_path / "started"
    slow = tmp_path / "slow.sh"
    slow.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    slow.chmod(0o755)
    reports = Reports()
    runner = HookRunner(1, reports, delays=(0.1,))
    runner.submit(Job(EVENT, Hook("series", (str(slow),))))
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.close(grace=0.2)
    assert reports.items == []  # unfinished: it runs again at the next start
    assert runner.busy() == 0


def test_the_journal_says_which_deliveries_never_finished(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "events.jsonl"))
    e1, e2 = {**EVENT, "id": "1"}, {**EVENT, "id": "2"}
    q = {"delivery": "queued"}
    journal.append([e1, {**q, "id": "1", "hook": ["/a"]}, {**q, "id": "1", "hook": ["/b"]}])
    journal.append([e2, {**q, "id": "2", "hook": ["/a"]}])
    journal.append([{"delivery": "failed", "id": "1", "hook": ["/a"]},
                    {"delivery": "done", "id": "1", "hook": ["/a"]},
                    {"delivery": "given-up", "id": "1", "hook": ["/b"]},
                    {"delivery": "failed", "id": "2", "hook": ["/a"]}])
    with open(journal.path, "ab") as fh:  # an append cut short by a crash
        fh.write(b'{"delivery": "done", "id": "2", "ho')
    entries, offset = read_entries(journal.path)
    assert [(u.event["id"], u.hook) for u in undelivered(entries)] == [("2", ("/a",))]
    assert offset < os.path.getsize(journal.path)
    Journal(journal.path).append([{"delivery": "done", "id": "2", "hook": ["/a"]}])
    entries, _ = read_entries(journal.path)  # the cut line is skipped (logged), the new one read
    assert undelivered(entries) == []


def test_a_pending_completion_whose_event_is_in_the_journal_is_not_issued_again(
    tmp_path: Path,
) -> None:
    """Killed between the event's append and the pending file's update: no second event."""
    from dcmsortd.completion.completer import Completions
    from dcmsortd.completion.events import iso
    from dcmsortd.completion.journal import save_pending
    from dcmsortd.completion.tracker import SeriesRef
    from dcmsortd.rules.engine import load_rules
    from dcmsortd.sorting.store import Store

    store = Store(str(tmp_path / "site"), load_rules(None))
    store.prepare()
    done = SeriesRef("1.2", "1.2.3", "/x/raw/1.2", "/x/raw/1.2/1.2.3", "/x/raw/1.2/1.2.3.json")
    waiting = SeriesRef("1.2", "1.2.4", "/x/raw/1.2", "/x/raw/1.2/1.2.4", "/x/raw/1.2/1.2.4.json")
    pending, events = str(tmp_path / "pending.json"), str(tmp_path / "events.jsonl")
    save_pending(pending, [done, waiting], [done.study], store.temp_dir, written=1000.0)
    Journal(events).append([{**EVENT, "folder": done.series_dir, "time": iso(1001.0)}])
    clock = [50.0]
    completions = Completions(store, series_quiet=2, study_quiet=3, hooks=(), hook_workers=1,
                              journal_path=events, pending_path=pending,
                              clock=lambda: clock[0], wall=lambda: 2000.0)
    completions.resume()
    assert completions.tracker.pending() == ([waiting], [done.study])
    assert completions.tracker.due(51.9) == [] and completions.tracker.due(52) == [waiting]
    assert completions.summary()["pending_series"] == 1


def test_reading_from_an_offset_past_a_truncated_journal_starts_at_its_top(
    tmp_path: Path,
) -> None:
    journal = Journal(str(tmp_path / "events.jsonl"))
    journal.append([{**EVENT, "id": "1"}, {**EVENT, "id": "2"}])
    entries, offset = read_entries(journal.path)
    assert [e["id"] for e in entries] == ["1", "2"]
    assert read_entries(journal.path, offset) == ([], offset)
    Path(journal.path).write_text("")  # rotated by an operator
    journal.append([{**EVENT, "id": "3"}])
    entries, _ = read_entries(journal.path, offset)
    assert [e["id"] for e in entries] == ["3"]
