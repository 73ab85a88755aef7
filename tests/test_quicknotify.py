"""``dcmsortd notify``'s quick path: the same pipe the settings resolve, only when that is
certain; everything else left to the full command (spool, errors); and, run as the real
console script, the quick path imports none of the heavy modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dcmsortd.cli import quicknotify
from dcmsortd.cli.quicknotify import deliver, pipe_path
from dcmsortd.service import config as config_module
from dcmsortd.service.config import resolve


def test_its_default_config_is_the_settings_default() -> None:
    assert quicknotify.DEFAULT_CONFIG == config_module.DEFAULT_CONFIG


@pytest.mark.parametrize("content", [
    None,  # no config file: the defaults
    {},
    {"SITES": {"ABC": {"DATADIR": "/data/abc"}}},
    {"dcmsortd": {"workers": 2, "rules": "r.json"}, "SITES": {"X": {"DATADIR": "/d"}}},
])
@pytest.mark.parametrize("project", ["", "ABC"])
def test_when_it_knows_the_pipe_it_is_the_one_the_settings_resolve(
        tmp_path: Path, content: object, project: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(json.dumps(content))
    quick = pipe_path(project, str(path) if content is not None else None, None)
    flags = {"project": project} | ({"config": str(path)} if content is not None else {})
    settings = resolve(flags, home=str(tmp_path), default_config=str(tmp_path / "absent.json"))
    if content is None and os.path.exists(quicknotify.DEFAULT_CONFIG):  # read without --config
        pytest.skip(f"{quicknotify.DEFAULT_CONFIG} exists on this machine")
    assert quick == settings.pipe


@pytest.mark.parametrize("content", [
    {"dcmsortd": {"pipe": "/run/other.pipe"}},
    {"SITES": {"ABC": {"dcmsortd": {"pipe": "p"}}}},
    '{"dcmsortd": {"\\u0070ipe": "/run/x"}}',  # an escape that spells it
    "not json at all, but mentions a pipe",
])
def test_a_config_that_may_move_the_pipe_is_left_to_the_full_command(
        tmp_path: Path, content: object) -> None:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert pipe_path("ABC", str(path), None) is None


def test_the_pipe_flag_wins_and_unclear_cases_are_left_to_the_full_command(
        tmp_path: Path) -> None:
    assert pipe_path("", None, "rel/pipe") == os.path.abspath("rel/pipe")
    assert pipe_path("a/b", None, None) is None  # the full command says what is wrong
    assert pipe_path("a\nb", None, None) is None
    assert pipe_path("", str(tmp_path / "missing.json"), None) is None  # explicit, missing
    (tmp_path / "big.json").write_bytes(b" " * (quicknotify.CONFIG_READ_LIMIT + 1))
    assert pipe_path("", str(tmp_path / "big.json"), None) is None


@pytest.fixture
def listening(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A FIFO with a reader collecting what arrives (a stand-in for the daemon's end)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY)  # no end-of-file while writers come and go

    def read() -> bytes:
        try:
            return os.read(reader, 65536)
        except BlockingIOError:
            return b""

    yield fifo, read
    os.close(keep)
    os.close(reader)


def test_one_line_goes_through_a_listening_pipe(tmp_path: Path, listening) -> None:  # type: ignore[no-untyped-def]
    fifo, read = listening
    line = "SCANNER,FIONA,10.0.0.1,/data/site/archive/scp_1,MR.1"
    assert deliver(["--pipe", str(fifo), line]) == 0
    assert read() == (line + "\n").encode()


@pytest.mark.parametrize("words", [
    ["a,b,c,/d,e", "f,g,h,/i,j"],  # two lines: the full command
    ["--help"], ["-x", "line"], [],
    ["x" * 5000],  # longer than one atomic pipe write: the spool's business
])
def test_other_commands_are_left_to_the_full_command(
        tmp_path: Path, listening, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    fifo, read = listening
    assert deliver(["--pipe", str(fifo), *words]) is None
    assert read() == b""


def test_without_a_reader_nothing_is_written_and_the_full_command_spools(
        tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert deliver(["--pipe", str(fifo), "a,b,c,/d,e"]) is None
    (tmp_path / "file").write_text("")
    assert deliver(["--pipe", str(tmp_path / "file"), "a,b,c,/d,e"]) is None
    assert (tmp_path / "file").read_text() == ""


HEAVY = ("dcmsortd.service.config", "dcmsortd.cli.main", "argparse", "logging", "json",
         "dataclasses", "pathlib")


def _imports(stderr: str) -> set[str]:
    return {row.split("|")[-1].strip() for row in stderr.splitlines()
            if row.startswith("import time:")}


def _script() -> list[str]:
    script = Path(sys.executable).with_name("dcmsortd")
    if script.exists():  # the console script pip made, run as storescp would
        return [sys.executable, "-X", "importtime", str(script)]
    return [sys.executable, "-X", "importtime", "-c",
            "from dcmsortd.cli.entry import main_entry; main_entry()"]


def test_the_console_script_delivers_by_the_quick_path_importing_nothing_heavy(
        tmp_path: Path, listening) -> None:  # type: ignore[no-untyped-def]
    fifo, read = listening
    line = "SCANNER,FIONA,10.0.0.2,/data/site/archive/scp_2,MR.2"
    done = subprocess.run([*_script(), "notify", "--pipe", str(fifo), line],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert read() == (line + "\n").encode()
    bare = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, timeout=60)
    imported = _imports(done.stderr) - _imports(bare.stderr)  # what the interpreter's start
    assert "dcmsortd.cli.quicknotify" in imported             # (site) imports is not ours
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_the_console_script_spools_by_the_full_command_when_no_daemon_listens(
        tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    line = "SCANNER,FIONA,10.0.0.3,/data/site/archive/scp_3,MR.3"
    done = subprocess.run(
        [*_script(), "notify", "--config", str(config), "--datadir", str(tmp_path / "data"),
         "--pipe", str(tmp_path / "no-pipe"), line],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spooled = list((tmp_path / "data" / "site" / ".dcmsortd" / "spool").glob("*.line"))
    assert [p.read_text().strip() for p in spooled] == [line]
    assert "dcmsortd.service.config" in done.stderr  # the full command ran (importtime)


def test_many_notifiers_at_once_deliver_every_line_whole(tmp_path: Path, listening) -> None:  # type: ignore[no-untyped-def]
    fifo, read = listening
    lines = [f"S{i},FIONA,10.0.0.{i},/data/site/archive/scp_{i},MR.{i}" for i in range(40)]
    codes: list[int | None] = []
    threads = [threading.Thread(target=lambda ln=ln: codes.append(
        deliver(["--pipe", str(fifo), ln]))) for ln in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    got = b""
    while chunk := read():
        got += chunk
    assert codes == [0] * 40
    assert sorted(got.decode().splitlines()) == sorted(lines)
