"""The command line without a daemon: test, classify, send, notify, and FIONA's verbs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from daemonproc import CLI, is_fifo
from dcmsortd.cli import compat
from dcmsortd.cli.main import main
from dcmsortd.intake.spool import Spool
from dcmsortd.rules.engine import default_rules
from realfiles import pydicom_data, restamp

STUDY = "1.2.826.0.1.3680043.8.498.200"
SERIES = STUDY + ".1"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "config.json"
    path.parent.mkdir()
    path.write_text("{}")
    return path


def run_cli(*argv: str, cwd: Path | None = None, home: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def json_stream(text: str) -> list[Any]:
    """The JSON documents printed one after the other."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        out.append(value)
    return out


def tree(root: Path) -> dict[str, tuple[float, int]]:
    """Every path under ``root`` with its mtime and size."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mtime, st.st_size)
    return out


# ---------------------------------------------------------------- dcmsortd test


def test_test_prints_the_packaged_rules_resolved(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == default_rules().resolved()
    assert err == ""


def test_test_reads_the_rules_next_to_the_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [{"type": "MINE", "id": "M", "rules": [{"tag": ["Modality"], "value": "MR"}]}]
    (config.parent / "classifyRules.json").write_text(json.dumps(rules))
    assert main(["test", "--config", str(config)]) == 0
    (rule,) = json.loads(capsys.readouterr().out)
    assert (rule["type"], rule["id"]) == ("MINE", "M")


def test_invalid_rules_exit_2_listing_every_problem(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([
        {"type": "A", "rules": [{"tag": ["Modality"], "operator": "sorta", "value": "MR"}]},
        {"id": "no-type", "rules": []},
    ]))
    assert main(["test", "--config", str(config), "--rules", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad}: 3 problem(s)" in err
    assert "rule 1 (no id, type 'A'), entry 1" in err and "sorta" in err
    assert "rule 2 (id 'no-type', no type): missing 'type'" in err


def test_rules_warnings_go_to_stderr_and_the_rules_still_print(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "typo.json"
    rules.write_text(json.dumps(
        [{"type": "T", "id": "TYPO", "rules": [{"tag": ["SeriesDescriptoin"], "value": "x"}]}]))
    assert main(["test", "--config", str(config), "--rules", str(rules)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["id"] == "TYPO"
    (line,) = err.splitlines()
    assert line.startswith(f"dcmsortd test: warning: {rules}: rule 1 (id 'TYPO', type 'T')")
    assert '["SeriesDescriptoin"]' in line


def test_a_missing_rules_file_is_invalid(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "--config", str(config), "--rules", str(tmp_path / "no.json")]) == 2
    assert "no.json" in capsys.readouterr().err


# ---------------------------------------------------------------- dcmsortd classify


def _series(folder: Path) -> list[Path]:
    folder.mkdir()
    mr = [restamp(pydicom_data("MR_small.dcm"), folder / f"mr{i}.dcm", STUDY, SERIES,
                  f"{SERIES}.{i}", InstanceNumber=i, SliceLocation=str(5 - i))
          for i in (1, 2)]
    return [*mr, pydicom_data("CT_small.dcm")]


def test_classify_prints_records_and_touches_nothing(config: Path, tmp_path: Path) -> None:
    files = _series(tmp_path / "in")
    (tmp_path / "notdicom.txt").write_text("hello")
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    before = tree(tmp_path)
    out = run_cli("classify", "--config", str(config), "--datadir", str(data),
                  *map(str, files), str(tmp_path / "notdicom.txt"), cwd=tmp_path, home=home)
    assert out.returncode == 0, out.stderr
    assert tree(tmp_path) == before  # no data folder, no log, no pid file, nothing
    assert "notdicom.txt" in out.stderr
    by_series = {doc["SeriesInstanceUID"]: doc for doc in json_stream(out.stdout)}
    assert len(by_series) == 2
    mr = by_series[SERIES]
    assert isinstance(mr["ClassifyType"], list) and mr["ClassifyType"]  # from the rules
    assert mr["ClassifyType"] == mr["record"]["ClassifyType"]
    assert mr["record"]["NumFiles"] == "2"
    assert mr["record"]["SliceLocation"] == "3"  # the smallest seen
    assert mr["record"]["Modality"] == "MR" and "explain" not in mr
    (ct,) = (doc for uid, doc in by_series.items() if uid != SERIES)
    assert ct["record"]["Modality"] == "CT" and isinstance(ct["ClassifyType"], list)


def test_classify_explain_shows_every_rule_per_file(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _series(tmp_path / "in")[:2]
    assert main(["classify", "--config", str(config), "--explain", str(tmp_path / "in")]) == 0
    (doc,) = json_stream(capsys.readouterr().out)
    assert [item["file"] for item in doc["explain"]] == [str(f) for f in files]
    rules = default_rules().rules
    for item in doc["explain"]:
        assert len(item["rules"]) == len(rules)
        held = {r["type"] for r in item["rules"] if r["held"] and not r["vetoed"]}
        assert held <= set(doc["ClassifyType"])
        assert all("test" in e and "found" in e for r in item["rules"] for e in r["entries"])


# ---------------------------------------------------------------- send and notify


def test_send_without_a_daemon_is_a_clear_error(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "pipe"
    args = ["send", "--config", str(config), "--pipe", str(pipe), "/x/y.dcm"]
    assert main(args) == 1
    assert f"no daemon listens on {pipe} (no such pipe)" in capsys.readouterr().err
    assert not pipe.exists()  # send never creates the pipe
    os.mkfifo(pipe)  # a stale pipe: no reader
    started = time.monotonic()
    assert main(args) == 1
    assert time.monotonic() - started < 2
    assert f"no daemon listens on {pipe}" in capsys.readouterr().err


def test_notify_without_a_daemon_spools_quickly(config: Path, tmp_path: Path) -> None:
    pipe, data = tmp_path / "pipe", tmp_path / "data"
    line = "SCANNER,FIONA,10.0.0.1,/data/site/archive/scp_1,MR.1.2.3"
    started = time.monotonic()
    out = run_cli("notify", "--config", str(config), "--datadir", str(data), "--pipe",
                  str(pipe), line)
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert elapsed < 5  # a whole interpreter start included; the hand-over itself is below
    spool = Spool(data / "site" / ".dcmsortd" / "spool")
    assert [spool.read(e) for e in spool.entries()] == [line]
    assert not pipe.exists()

    os.mkfifo(pipe)  # a pipe without a reader: spooled as well, at once
    started = time.monotonic()
    assert main(["notify", "--config", str(config), "--datadir", str(data), "--pipe",
                 str(pipe), "second", "third"]) == 0
    assert time.monotonic() - started < 1
    assert [spool.read(e) for e in spool.entries()] == [line, "second", "third"]
    assert is_fifo(pipe)


# ---------------------------------------------------------------- FIONA's command line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["start"], ["start"]),
     (["start", "ABCD"], ["start", "--project", "ABCD"]),
     (["stop", "ABCD"], ["stop", "--project", "ABCD"]),
     (["restart"], ["restart"]),
     (["status", "HBCD"], ["status", "--project", "HBCD"]),
     (["test"], ["test"]),
     (["test", "ABCD"], ["test", "--project", "ABCD"]),
     (["send", "a,b,c,/d,e"], ["send", "--", "a,b,c,/d,e"]),
     (["send", "/x/1.dcm", "/x/2.dcm"], ["send", "--", "/x/1.dcm", "/x/2.dcm"]),
     (["send", "-x"], ["send", "--", "-x"]),
     ([], None), (["send"], None), (["start", "A", "B"], None), (["run"], None),
     (["frobnicate"], None), (["--help"], None)],
)
def test_compat_translates_fionas_verbs(argv: list[str], expected: list[str] | None) -> None:
    assert compat.translate(argv) == expected


def test_compat_usage_on_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    assert compat.main(["start", "A", "B"]) == 2
    assert capsys.readouterr().err.startswith("usage: processSingleFile3.py start|stop|")


def test_compat_send_reaches_dcmsortd_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No daemon for the default project in a fresh HOME: send fails clearly, like dcmsortd."""
    if os.path.lexists("/tmp/.processSingleFilePipe"):
        pytest.skip("something exists at /tmp/.processSingleFilePipe on this machine")
    monkeypatch.setenv("HOME", str(tmp_path))
    code = compat.main(["send", "-not-an-option"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no daemon listens on /tmp/.processSingleFilePipe (no such pipe)" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("dcmsortd ")


_LEAVE = """\
import atexit, sys, threading, time
from dcmsortd.cli.main import leave
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
print("buffered output", end="")  # stdout is a pipe here: block-buffered, not yet written
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print(" thread done", end=""))).start()
leave(3)
"""


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_leaving_keeps_the_exit_code_output_exit_handlers_and_threads(case: str) -> None:
    """The CLI's fast exit (no teardown of every object) still does what an exit must."""
    out = subprocess.run([os.sys.executable, "-c", _LEAVE, case], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 3
    assert out.stdout == ("buffered output thread done" if case == "thread"
                          else "buffered output")
    assert out.stderr == "exit handler ran\n"
