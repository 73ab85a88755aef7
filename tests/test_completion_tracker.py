"""The completion tracker (pure): which series and study completions are due when, given
arrivals of new images and the clock's value; no sleeping."""

from __future__ import annotations

from dcmsortd.completion.events import series_event, study_event
from dcmsortd.completion.hooks import Hook, hook_env
from dcmsortd.completion.tracker import SeriesRef, StudyRef, Tracker


def ref(study: str, series: str) -> SeriesRef:
    return SeriesRef(f"1.{study}", f"1.{study}.{series}", f"/s/raw/1.{study}",
                     f"/s/raw/1.{study}/1.{study}.{series}",
                     f"/s/raw/1.{study}/1.{study}.{series}.json")


def issue_due(tracker: Tracker, now: float) -> list[SeriesRef | StudyRef]:
    due = tracker.due(now)
    for item in due:
        tracker.done(item)
    return due


def test_a_series_is_due_after_its_quiet_time_then_its_study_after_its_own() -> None:
    t = Tracker(series_quiet=15, study_quiet=60)
    a1, a2 = ref("a", "1"), ref("a", "2")
    t.arrived(a1, 0)
    t.arrived(a2, 5)
    t.arrived(a1, 10)  # a later image of a1 pushes its completion
    assert issue_due(t, 19.9) == []
    assert issue_due(t, 20) == [a2]
    assert t.next_due() == 25
    assert issue_due(t, 25) == [a1]
    assert t.next_due() == 70  # the study: 60 s after its last image
    assert issue_due(t, 69.9) == []
    assert issue_due(t, 70) == [a1.study]
    assert t.counts() == (0, 0) and t.next_due() is None


def test_a_study_waits_for_every_series_even_when_its_own_quiet_is_shorter() -> None:
    t = Tracker(series_quiet=10, study_quiet=1)
    a1, b1 = ref("a", "1"), ref("b", "1")
    t.arrived(a1, 0)
    t.arrived(b1, 3)
    assert issue_due(t, 5) == []
    assert issue_due(t, 10) == [a1]
    assert issue_due(t, 10.5) == [a1.study]  # a's study; b's series is still open
    assert issue_due(t, 13) == [b1]
    assert issue_due(t, 13) == [b1.study]


def test_an_image_after_the_event_starts_a_new_round_of_series_and_study() -> None:
    t = Tracker(series_quiet=1, study_quiet=2)
    a1 = ref("a", "1")
    t.arrived(a1, 0)
    assert issue_due(t, 1) == [a1]
    assert issue_due(t, 2) == [a1.study]
    t.arrived(a1, 100)  # a late image
    assert issue_due(t, 100.5) == []
    assert issue_due(t, 101) == [a1]
    assert issue_due(t, 102) == [a1.study]


def test_an_event_that_could_not_be_issued_stays_due() -> None:
    t = Tracker(series_quiet=1, study_quiet=1)
    a1 = ref("a", "1")
    t.arrived(a1, 0)
    assert t.due(1) == [a1]  # not done (say the record could not be written)
    assert t.due(2) == [a1]  # still due; its study waits for it
    t.done(a1)
    assert t.due(2) == [a1.study]


def test_changed_says_when_the_pending_set_changed_not_at_every_image() -> None:
    t = Tracker(series_quiet=1, study_quiet=1)
    a1 = ref("a", "1")
    t.arrived(a1, 0)
    assert t.changed
    t.changed = False
    t.arrived(a1, 0.5)
    assert not t.changed  # same series, same study: nothing new to save
    issue_due(t, 2)
    assert t.changed


def test_reloaded_completions_are_due_one_quiet_time_after_the_start() -> None:
    t = Tracker(series_quiet=3, study_quiet=5)
    a1 = ref("a", "1")
    t.reload([a1], [a1.study, StudyRef("1.c", "/s/raw/1.c")], now=1000)
    assert not t.changed and t.counts() == (1, 2)
    assert issue_due(t, 1002.9) == []
    due = issue_due(t, 1003)
    assert due == [a1]  # study c has no open series but its quiet time is not over
    assert sorted(s.study_uid for s in issue_due(t, 1005)) == ["1.a", "1.c"]  # type: ignore[union-attr]


def test_refs_round_trip_through_json() -> None:
    a1 = ref("a", "1")
    assert SeriesRef.from_json(a1.to_json()) == a1
    assert StudyRef.from_json(a1.study.to_json()) == a1.study


def test_events_are_made_from_the_records() -> None:
    a1, a2 = ref("a", "1"), ref("a", "2")
    r1 = {"StudyInstanceUID": "1.a", "SeriesInstanceUID": "1.a.1", "PatientID": "P",
          "ClassifyType": ["MR", "ABCD-T1"], "NumFiles": "12"}
    r2 = {"StudyInstanceUID": "1.a", "SeriesInstanceUID": "1.a.2", "PatientID": "P",
          "ClassifyType": ["MR", "ABCD-Phantom"], "NumFiles": "3"}
    e = series_event(a1, r1, "id1", 0.0)
    assert {k: e[k] for k in ("event", "id", "StudyInstanceUID", "SeriesInstanceUID",
                              "PatientID", "ClassifyType", "NumFiles", "folder", "record")} \
        == {"event": "series-complete", "id": "id1", "StudyInstanceUID": "1.a",
            "SeriesInstanceUID": "1.a.1", "PatientID": "P", "ClassifyType": ["MR", "ABCD-T1"],
            "NumFiles": "12", "folder": a1.series_dir, "record": a1.record}
    s = study_event(a2.study, [r2, r1], "id2", 0.0)
    assert (s["series"], s["ClassifyType"], s["NumFiles"], s["folder"]) == (
        ["1.a.1", "1.a.2"], ["MR", "ABCD-Phantom", "ABCD-T1"], "15", "/s/raw/1.a")
    assert "record" not in s and "SeriesInstanceUID" not in s
    assert hook_env(e) == {"DCMSORTD_EVENT": "series-complete", "DCMSORTD_STUDY": "1.a",
                           "DCMSORTD_SERIES": "1.a.1", "DCMSORTD_FOLDER": a1.series_dir,
                           "DCMSORTD_RECORD": a1.record}
    assert set(hook_env(s)) == {"DCMSORTD_EVENT", "DCMSORTD_STUDY", "DCMSORTD_FOLDER"}
    phantom = Hook("series", ("/qc",), ("ABCD-Phantom",))
    assert not phantom.wants(e) and phantom.wants({**e, "ClassifyType": ["ABCD-Phantom"]})
    assert not phantom.wants(s)  # a study event: not a series hook's
    assert Hook("study", ("/a",)).wants(s)
