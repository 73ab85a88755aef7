"""Crash safety with real processes and real files (issue 4 item 6, issue 6).

A daemon killed with SIGKILL, restarted and sent every line again ends with the tree and
the JSON files of an uninterrupted run; no JSON file is ever seen half written; temporary
files of a killed daemon are removed at the next start. Kills come at random moments
(seeded: ``DCMSORTD_CRASH_SEED`` picks another seed) and, through a daemon that kills
itself at its nth commit (CRASHING_DAEMON), inside writes: at random ones, between a
series state and its record, while replacing a dangling link. With storescp announcing
through ``dcmsortd notify``, a daemon killed while a series streams in sorts every image
exactly once after its restart (spool and start-up catch-up).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from daemonproc import Receiver, Site, stop, wait_for
from feeder import (
    Sender,
    backlog,
    feed,
    heartbeat,
    json_files,
    listening,
    normalized,
    wait_listening,
    wait_through,
)
from manyfiles import Corpus, crash_corpus, uid, write_series
from osprocs import start_py
from realfiles import pydicom_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = 6
SEED = int(os.environ.get("DCMSORTD_CRASH_SEED", "20261129"))

# Parses every record, SR listing and series state in a loop until the stop file appears,
# then prints how many it parsed and the first failures (a partial or a vanished file).
JSON_READER = """
import json, sys, time
from pathlib import Path
site, stop = Path(sys.argv[1]), Path(sys.argv[2])
patterns = ("raw/*/*.json", "srs/*/*.json", ".dcmsortd/series/*/*.json")
reads, bad = 0, []
while not stop.exists():
    for pattern in patterns:
        for path in site.glob(pattern):
            try:
                json.loads(path.read_bytes())
                reads += 1
            except (OSError, ValueError) as exc:
                bad.append(f"{path}: {exc!r}")
    time.sleep(0.002)
print(json.dumps({"reads": reads, "bad": bad[:20]}))
"""


# The daemon, killing itself with SIGKILL at a chosen point: the nth call of one of
# ``calls`` (os.replace: every atomic write and link replacement commits with it;
# os.symlink: every new link) whose destination ends with ``dst_suffix`` and, for
# os.replace, whose new content holds ``content``. argv[1] is that choice as JSON.
CRASHING_DAEMON = """
import json, os, signal, sys
from dcmsortd.cli.main import main

when = json.loads(sys.argv.pop(1))
seen = 0

def holds_content(src):
    if not when.get("content"):
        return True
    with open(src, "rb") as new:
        return when["content"].encode() in new.read()

def armed(name, real):
    def call(src, dst, *args, **kwargs):
        global seen
        if (name in when["calls"] and os.fspath(dst).endswith(when.get("dst_suffix", ""))
                and holds_content(src)):
            seen += 1
            if seen == when["nth"]:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return call

os.replace = armed("replace", os.replace)
os.symlink = armed("symlink", os.symlink)
sys.exit(main())
"""


@dataclass(frozen=True)
class Outcome:
    """What a run left: the tree (data folder path normalized) and every JSON file."""

    tree: dict[str, str]
    json: dict[str, Any]


def _outcome(site: Site) -> Outcome:
    return Outcome(normalized(site.snapshot(), site.datadir), json_files(site))


def _differences(got: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ, briefly (a readable failure, not a 5000-line diff)."""
    out = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
    out += [f"extra {k}" for k in sorted(got.keys() - want.keys())]
    out += [f"differs {k}: {str(got[k])[:300]} != {str(want[k])[:300]}"
            for k in sorted(got.keys() & want.keys()) if got[k] != want[k]]
    return out


def _site(base: Path, corpus: Corpus, **settings: Any) -> Site:
    return Site(base, config={"dcmsortd": {"input_roots": [str(corpus.root)], **settings}})


def _temp_files(site: Site) -> list[Path]:
    """Temporary files anywhere under site/: atomic JSON writes, links, spool entries."""
    return sorted(p for p in site.site.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("crash-corpus")
    return crash_corpus(base / "files", base / "scratch")


@pytest.fixture(scope="module")
def uninterrupted(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The result of one daemon sorting every line once, never interrupted."""
    site = _site(tmp_path_factory.mktemp("uninterrupted"), corpus)
    daemon = site.start_run("--no-catch-up")
    try:
        wait_listening(site.pipe)
        assert feed(site.pipe, corpus.lines()) == len(corpus.files)
        wait_through(site, corpus.files[0])
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    outcome = _outcome(site)
    counts = {Path(k).stem: v["NumFiles"] for k, v in outcome.json.items()
              if k.startswith("raw/")}
    assert counts == {s: str(n) for s, n in corpus.series.items()}
    return outcome


@contextmanager
def json_reader(site: Site, stop_file: Path) -> Iterator[dict[str, Any]]:
    """A separate process parsing every JSON file in a loop while the block runs."""
    proc = start_py(JSON_READER, site.site, stop_file)
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        stop_file.touch()
        out, _ = proc.communicate(timeout=30)
        result.update(json.loads(out))


def _sent(sender: Sender, lines: int) -> bool:
    return sender.sent >= lines or not sender.is_alive()


def start_crashing(site: Site, **when: Any) -> subprocess.Popen[str]:
    """``dcmsortd run --no-catch-up`` that kills itself at the point ``when`` describes
    (see CRASHING_DAEMON); returns once it listens on the pipe, or died trying."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_DAEMON, json.dumps(when), "run",
         *site.args("--no-catch-up")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wait_for(lambda: proc.poll() is not None or listening(site.pipe), 15, "the daemon")
    return proc


def _alive(daemon: subprocess.Popen[str]) -> bool:
    return daemon.poll() is None


def _kill(daemon: subprocess.Popen[str]) -> None:
    daemon.kill()
    daemon.communicate(timeout=10)


def test_sigkill_at_random_moments_then_resending_everything_gives_the_same_result(
    corpus: Corpus, uninterrupted: Outcome, tmp_path: Path
) -> None:
    """Issue 4 item 6. Each round starts the daemon, sends every line, and kills it with
    SIGKILL once a random number of lines went in (rounds kill later and later, each at a
    random moment after that); a last round sends everything and stops cleanly. No JSON
    file is ever seen unreadable; each start removes the killed daemon's temporary files
    (a planted one included); the tree and every JSON file equal the uninterrupted run's.
    Re-sending every line stands in for the start-up catch-up here (off: it would announce
    files as ``unknown`` callers); the issue 6 test below relies on the catch-up instead.
    """
    rng = random.Random(SEED)
    site = _site(tmp_path, corpus, flush_interval=0.05)  # ten times the writes to interrupt
    lines = corpus.lines()
    band = len(lines) // KILLS
    leftovers: list[int] = []
    with json_reader(site, tmp_path / "stop-reader") as reads:
        dead: set[str] = set()  # pids of killed daemons
        for kill in range(KILLS):
            daemon = site.start_run("--no-catch-up")
            wait_listening(site.pipe)
            assert not [p for p in _temp_files(site) if p.name.split("-")[0] in dead]
            sender = Sender(site.pipe, lines)
            sender.start()
            at = rng.randint(max(1, kill * band), (kill + 1) * band)
            wait_for(partial(_sent, sender, at), 60, f"{at} lines sent")
            time.sleep(rng.uniform(0.0, 0.3))
            _kill(daemon)
            sender.join(10)
            assert not sender.is_alive()
            leftovers.append(len(_temp_files(site)))
            (site.site / "temp" / f"{daemon.pid}-999999.tmp").write_text('{"NumFi')
            dead.add(str(daemon.pid))
        daemon = site.start_run("--no-catch-up")
        try:
            wait_listening(site.pipe)
            sent = site.cli("send", *(line.decode().removesuffix("\n") for line in lines))
            assert sent.returncode == 0, sent.stderr
            wait_through(site, corpus.files[0])
        finally:
            code, out = stop(daemon)
        assert code == 0, out
    assert reads["bad"] == [] and reads["reads"] > 0
    assert _differences(_outcome(site).json, uninterrupted.json) == []
    assert _differences(_outcome(site).tree, uninterrupted.tree) == []
    assert _temp_files(site) == []
    log = site.log_text()
    assert "Traceback" not in log
    assert log.count("leftover temporary file(s)") >= KILLS
    print(f"temporary files left by each kill (before the planted one): {leftovers}; "
          f"JSON files parsed meanwhile: {reads['reads']}")


STREAM_STUDY = uid(3)
STREAM_SERIES = uid(3, 1)
STREAM_IMAGES = 60


def _notify_line(site: Site) -> str:
    cli = f"{sys.executable} -c 'from dcmsortd.cli.entry import main_entry; main_entry()'"
    return f"{cli} notify {' '.join(site.args())} '#a,#c,#r,#p,#f'"


def _links(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_symlink()] if folder.is_dir() else []


def test_sigkill_while_a_series_streams_in_sorts_every_image_once(tmp_path: Path) -> None:
    """Issue 6. storescp announces through ``dcmsortd notify``. While the series streams
    in, the daemon is frozen (SIGSTOP) until notifications wait in the pipe, then killed
    (SIGKILL): those lines are gone with the pipe. Notifications go to the spool while no
    daemon runs. After the restart (spool drained, start-up catch-up over the archive)
    every image is sorted exactly once: NumFiles exact, one link per received file."""
    sent = Corpus(tmp_path / "send")
    files = write_series(sent, pydicom_data("MR_small.dcm"), STREAM_STUDY, STREAM_SERIES,
                         STREAM_IMAGES, {"PatientID": "STREAM1", "StudyDate": "20240104",
                                         "StudyTime": "121212"})
    site = Site(tmp_path / "site")
    series_dir = site.site / "raw" / STREAM_STUDY / STREAM_SERIES
    daemon = site.start_run()  # start-up catch-up on, as by default
    receiver = Receiver(site.archive, _notify_line(site))
    errors: list[BaseException] = []

    def send() -> None:  # one association per image: the stream lasts seconds anywhere
        try:
            for file in files:
                receiver.send([file])
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    storescu = threading.Thread(target=send)
    try:
        wait_for(lambda: heartbeat(site) > 0, 10, "the daemon's first heartbeat")
        storescu.start()
        wait_for(lambda: len(_links(series_dir)) >= STREAM_IMAGES // 4, 60, "a quarter sorted")
        os.kill(daemon.pid, signal.SIGSTOP)
        probe = os.open(site.pipe, os.O_WRONLY | os.O_NONBLOCK)
        try:
            time.sleep(1.0)  # frozen while notifications keep coming
            wait_for(lambda: backlog(probe) > 0, 20, "notifications waiting in the pipe")
            lost = backlog(probe)
        finally:
            os.close(probe)  # or the pipe's contents would outlive the daemon
        _kill(daemon)
        sorted_before = len(_links(series_dir))
        time.sleep(0.5)  # notifications go to the spool meanwhile
        daemon = site.start_run()
        storescu.join(120)
        assert not errors, errors
        record = series_dir.parent / f"{STREAM_SERIES}.json"
        wait_for(lambda: record.exists()
                 and json.loads(record.read_text())["NumFiles"] == str(STREAM_IMAGES),
                 60, f"NumFiles {STREAM_IMAGES}")
        spool = site.site / ".dcmsortd" / "spool"
        wait_for(lambda: not list(spool.glob("*.line")), 30, "the spool to empty")
    finally:
        receiver.close()
        code, out = stop(daemon)
    assert code == 0, out
    assert lost > 0 and 0 < sorted_before < STREAM_IMAGES
    received = sorted(str(p) for p in site.archive.iterdir())
    assert len(received) == STREAM_IMAGES
    links = _links(series_dir)
    assert len(links) == STREAM_IMAGES
    assert sorted(os.readlink(p) for p in links) == received  # each received file once
    record_data = json.loads(record.read_text())
    assert record_data["NumFiles"] == str(STREAM_IMAGES)
    state = json.loads((site.site / ".dcmsortd" / "series" / STREAM_STUDY
                        / f"{STREAM_SERIES}.json").read_text())
    assert len(state["accounted"]) == len(set(state["accounted"])) == STREAM_IMAGES
    log = site.log_text()
    assert "start-up catch-up" in log and "Traceback" not in log
    print(f"sorted before the kill: {sorted_before}; lost in the pipe: {lost} bytes")


def _num_files(record: Path) -> str | None:
    return str(json.loads(record.read_text())["NumFiles"]) if record.exists() else None


def _run_plain(site: Site, lines: list[bytes], last: Path) -> None:
    """A daemon that sorts ``lines`` (then the sentinel for ``last``) and stops cleanly."""
    daemon = site.start_run("--no-catch-up")
    try:
        wait_listening(site.pipe)
        feed(site.pipe, lines)
        wait_through(site, last)
    finally:
        code, out = stop(daemon)
    assert code == 0, out


def test_killed_between_a_series_state_and_its_record_the_record_is_written_again(
    tmp_path: Path,
) -> None:
    """The state of a series is written first, then its record. A daemon killed right
    before the record's rename (the state holds all 20 images, the record on disk 8) is
    restarted and sent every line again: no image is new to it, yet it writes the record
    again, as an uninterrupted run has it."""
    sent = Corpus(tmp_path / "send")
    study, series = uid(4), uid(4, 1)
    write_series(sent, pydicom_data("MR_small.dcm"), study, series, 20,
                 {"PatientID": "BEHIND1", "StudyDate": "20240106", "StudyTime": "131313"})
    lines, first = sent.lines(), sent.files[0]
    reference = _site(tmp_path / "reference", sent)
    _run_plain(reference, lines, first)

    site = _site(tmp_path / "site", sent)
    record = site.site / "raw" / study / f"{series}.json"
    daemon = start_crashing(site, calls=["replace"], dst_suffix=f"raw/{study}/{series}.json",
                            content='"NumFiles": "20"', nth=1)
    feed(site.pipe, lines[:8])
    wait_for(lambda: _num_files(record) == "8", 30, "the record of the first 8 images")
    feed(site.pipe, lines[8:])
    assert daemon.wait(timeout=30) == -signal.SIGKILL
    daemon.communicate()
    state = json.loads((site.site / ".dcmsortd" / "series" / study / f"{series}.json")
                       .read_text())
    assert len(state["accounted"]) == 20 and _num_files(record) == "8"

    _run_plain(site, lines, first)
    assert json.loads(record.read_text()) == reference.records()[f"raw/{study}/{series}.json"]


def test_killed_while_replacing_a_dangling_link_leaves_no_stray_entry(tmp_path: Path) -> None:
    """An image whose first received file is gone arrives again under another path: its
    dangling link is replaced (a temporary link, renamed over it). A daemon killed right
    before that rename leaves nothing behind in the series folder: after a restart and the
    line sent again, the folder holds one link (to the new file), NumFiles is 1, and no
    temporary file is left anywhere."""
    sent = Corpus(tmp_path / "send")
    study, series = uid(6), uid(6, 1)
    (old,) = write_series(sent, pydicom_data("MR_small.dcm"), study, series, 1,
                          {"PatientID": "DANGLE1"})
    new = sent.root / "again" / "im00001.dcm"
    new.parent.mkdir()
    new.write_bytes(old.read_bytes())
    again = [f"SCANNER,FIONA,127.0.0.1,{new.parent},{new.name}\n".encode()]
    site = _site(tmp_path / "site", sent)
    _run_plain(site, sent.lines(), old)
    old.unlink()  # the archive lost it: the link dangles

    daemon = start_crashing(site, calls=["replace"], dst_suffix=f"/{series}/{series}.1", nth=1)
    feed(site.pipe, again)
    assert daemon.wait(timeout=30) == -signal.SIGKILL
    daemon.communicate()

    _run_plain(site, again, new)
    series_dir = site.site / "raw" / study / series
    assert [(p.name, os.readlink(p)) for p in series_dir.iterdir()] == [
        (f"{series}.1", str(new))
    ]
    assert site.records()[f"raw/{study}/{series}.json"]["NumFiles"] == "1"
    assert _temp_files(site) == []


WRITE_ROUNDS = 6


def test_sigkill_inside_writes_at_random_then_resending_everything_gives_the_same_result(
    corpus: Corpus, uninterrupted: Outcome, tmp_path: Path
) -> None:
    """Kills that land inside a write: each round the daemon kills itself (SIGKILL) at a
    random commit point, its nth os.replace (an atomic JSON write: state, record, SR
    listing, heartbeat) or, every other round, its nth os.replace or os.symlink (a new
    link), while every line is sent; then the next round starts it again. A last, clean
    run sent every line ends with the tree and JSON files of the uninterrupted run.
    A round the daemon gets through without reaching its kill point (how many writes a
    run makes depends on its speed: records are written at most every 50 ms) does not
    count: rounds go on until WRITE_ROUNDS - 1 kills, at most twice WRITE_ROUNDS rounds."""
    rng = random.Random(SEED)
    site = _site(tmp_path, corpus, flush_interval=0.05)
    lines = corpus.lines()
    killed = 0
    with json_reader(site, tmp_path / "stop-reader") as reads:
        for round_ in range(2 * WRITE_ROUNDS):
            if killed >= WRITE_ROUNDS - 1:
                break
            if round_ % 2:
                when: dict[str, Any] = {"calls": ["replace", "symlink"],
                                        "nth": rng.randint(1, len(lines))}
            else:
                when = {"calls": ["replace"], "nth": rng.randint(1, 60)}
            daemon = start_crashing(site, **when)
            sender = Sender(site.pipe, lines)  # sends nothing when the daemon died at start
            sender.start()
            sender.join(60)
            if wait_through(site, corpus.files[0], alive=partial(_alive, daemon)):
                code, out = stop(daemon)  # it got through this round without reaching nth
                # ... unless the writes of its clean stop (records, heartbeat) reach it
                assert code in (0, -signal.SIGKILL), out
                killed += code == -signal.SIGKILL
                continue
            assert daemon.wait(timeout=10) == -signal.SIGKILL
            daemon.communicate()
            killed += 1
        _run_plain(site, lines, corpus.files[0])
    assert killed >= WRITE_ROUNDS - 1
    assert reads["bad"] == [] and reads["reads"] > 0
    assert _differences(_outcome(site).json, uninterrupted.json) == []
    assert _differences(_outcome(site).tree, uninterrupted.tree) == []
    assert _temp_files(site) == []
    assert "Traceback" not in site.log_text()
