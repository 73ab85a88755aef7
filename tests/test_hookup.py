"""storescp-command: the printed line is one shell line that runs exactly the intended argv;
its per-file line appends to the journal and passes no text a sender chose to the shell;
what cannot be put into it safely is refused."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dcmsortd.cli.main import main
from dcmsortd.intake.hookup import (
    Receiver,
    argv,
    check_receiver,
    command_line,
    exec_line,
    quote_word,
)
from dcmsortd.model.errors import ConfigError
from dcmsortd.model.notice import CALLER_IN_FILE, clean_ae, parse_line

# accepted as the archive (#p lands inside the line's single quotes) and the data folder
PATHS = ["/data/site/archive", "/data/my site/archive", '/d/"q"/x', "/d/$HOME/x",
         "/d/`id`/x", "/d/semi;colon", "/d/$(touch pwned)/x"]
# accepted in the journal's path only (shlex-quoted there), refused in the archive's
JOURNAL_ONLY = ["/d/it's/a", "/d/a\\b/x"]
HOSTILE_AE = "X'$(touch pwned)'"


@pytest.mark.parametrize("path", PATHS + JOURNAL_ONLY)
def test_the_line_splits_back_into_the_argv(path: str) -> None:
    archive = path if path in PATHS else "/data/site/archive"
    receiver = Receiver("/usr/bin/storescp", 11112, "FIONA", archive, path + "/journal/arrivals")
    line = command_line(receiver)
    assert shlex.split(line) == argv(receiver)
    assert "\n" not in line


def test_the_argv_has_fionas_options_nodelay_and_no_host_lookup() -> None:
    words = argv(Receiver("/usr/bin/storescp", 104, "AET1", "/data/site/archive", "/j/a"))
    assert words[:6] == ["/usr/bin/env", "TCP_NODELAY=1", "/usr/bin/storescp", "--fork", "-dhl",
                         "+xa"]
    assert words[6:12] == ["-aet", "AET1", "-od", "/data/site/archive",
                           "--sort-on-study-uid", "scp_"]
    assert words[12:] == ["--exec-on-reception",
                          "echo '<caller-from-file>,AET1,#r,#p,#f' >> /j/a", "104"]
    assert CALLER_IN_FILE == "<caller-from-file>"


def test_plain_words_stay_bare_and_others_prefer_double_quotes() -> None:
    assert quote_word("/usr/bin/storescp") == "/usr/bin/storescp"
    assert quote_word("echo 'x' >> /j") == "\"echo 'x' >> /j\""
    assert quote_word("a$b c") == "'a$b c'"


def storescp_runs(command: str, folder: str, calling: str, called: str, ip: str,
                  cwd: Path) -> None:
    """What storescp 3.6.7 does with the per-file line: replace #p, #f, #a, #c, #r in this
    order, unescaped (the AE titles in double quotes), then ``/bin/sh -c`` it."""
    for field, value in (("#p", folder), ("#f", "MR.1.2.3"), ("#a", f'"{calling}"'),
                         ("#c", f'"{called}"'), ("#r", f'"{ip}"')):
        command = command.replace(field, value)
    subprocess.run(["/bin/sh", "-c", command], check=True, cwd=cwd)


@pytest.mark.parametrize("path", PATHS + JOURNAL_ONLY)
def test_the_per_file_line_appends_the_line_and_runs_nothing_a_sender_sent(
        tmp_path: Path, path: str) -> None:
    journal = tmp_path / path.strip("/") / "arrivals"
    journal.parent.mkdir(parents=True)
    archive = path if path in PATHS else "/data/site/archive"
    command = exec_line(str(journal), "FIONA")
    assert "#a" not in command and "#c" not in command
    for _ in range(2):
        storescp_runs(command, archive + "/scp__1.2", HOSTILE_AE, HOSTILE_AE, "10.1.2.3",
                      tmp_path)
    expected = f'<caller-from-file>,FIONA,"10.1.2.3",{archive}/scp__1.2,MR.1.2.3\n'
    assert journal.read_text() == expected * 2
    assert not (tmp_path / "pwned").exists()
    arrival = parse_line(expected)
    assert (arrival.caller_in_file, arrival.called, arrival.ip) == (True, "FIONA", "10.1.2.3")
    assert arrival.path == os.path.normpath(f"{archive}/scp__1.2/MR.1.2.3")


def test_the_classic_line_runs_what_the_sender_put_in_its_ae_title(tmp_path: Path) -> None:
    """The hole the printed line closes: FIONA's line (here appending to a journal) runs a
    command hidden in a calling AE title. The command only touches a file in tmp_path."""
    journal = tmp_path / "arrivals"
    classic = f"echo '#a,#c,#r,#p,#f' >> {shlex.quote(str(journal))}"
    storescp_runs(classic, "/data/site/archive/scp__1.2", "X'$(touch pwned)'", "FIONA",
                  "10.1.2.3", tmp_path)
    assert (tmp_path / "pwned").exists()  # the sender's command ran
    storescp_runs(exec_line(str(journal), "FIONA"), "/data/site/archive/scp__1.2",
                  "X'$(touch pwned2)'", "FIONA", "10.1.2.3", tmp_path)
    assert not (tmp_path / "pwned2").exists()


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@settings(max_examples=150, deadline=None)
@given(aet=st.text(_PRINTABLE, min_size=1, max_size=16),
       archive=st.text(st.one_of(_PRINTABLE, st.characters(min_codepoint=0xA0,
                                                           max_codepoint=0x2FF)),
                       min_size=1, max_size=30))
def test_whatever_the_check_accepts_reaches_the_journal_verbatim(aet: str, archive: str) -> None:
    """The check's refusals suffice: for any AE title and archive folder it accepts, the
    shell runs nothing and appends exactly the intended line."""
    archive = "/" + archive
    with tempfile.TemporaryDirectory() as tmp:
        receiver = Receiver("/usr/bin/storescp", 104, aet, archive, f"{tmp}/j/arrivals")
        try:
            check_receiver(receiver)
        except ConfigError:
            assume(False)
        os.mkdir(f"{tmp}/j")
        os.mkdir(f"{tmp}/cwd")
        storescp_runs(exec_line(receiver.journal, aet), archive + "/scp__1.2", HOSTILE_AE,
                      HOSTILE_AE, "10.1.2.3", Path(tmp, "cwd"))
        line = Path(receiver.journal).read_text(encoding="utf-8")
        assert line == f'<caller-from-file>,{aet},"10.1.2.3",{archive}/scp__1.2,MR.1.2.3\n'
        assert os.listdir(f"{tmp}/cwd") == []
        arrival = parse_line(line)
        assert arrival.caller_in_file and arrival.called == clean_ae(aet)


JOURNAL_UNSAFE = [
    ("X'Y", "/a", "d", "--aet"), ("A#a", "/a", "d", "--aet"), ("A,B", "/a", "d", "--aet"),
    ("A\\B", "/a", "d", "--aet"), ("", "/a", "d", "--aet"), ("A" * 17, "/a", "d", "--aet"),
     ("FIONA", "/it's", "d", "archive"), ("FIONA", "/a#ac", "d", "archive"),
     ("FIONA", "/a,b", "d", "archive"), ("FIONA", "/a\\cb", "d", "archive"),
     ("FIONA", "/a\nb", "d", "archive"), ("FIONA", "/a", "d#p", "journal")]
LOG_UNSAFE = [
    ("A|B", "/a", "d", "--aet"), ("A,B", "/a", "d", "--aet"), ("A\\B", "/a", "d", "--aet"),
    ("", "/a", "d", "--aet"), ("A" * 17, "/a", "d", "--aet"), ("FIONA", "/a,b", "d", "archive"),
     ("FIONA", "/a\nb", "d", "archive"), ("FIONA", "/a", "d$x", "receiver log"),
     ("FIONA", "/a", "d\\x", "receiver log")]


@pytest.mark.parametrize(
    ("hookup", "aet", "archive", "datadir_part", "named"),
    [("journal", *case) for case in JOURNAL_UNSAFE] + [("log", *case) for case in LOG_UNSAFE],
)
def test_unsafe_values_are_refused_with_a_clear_error_before_anything_is_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], hookup: str, aet: str,
        archive: str, datadir_part: str, named: str) -> None:
    """Each hookup refuses what is unsafe where its values land: the journal line's shell
    quoting, or the receiver log's lines and oflog's configuration."""
    config = tmp_path / "config.json"
    config.write_text("{}")
    datadir = tmp_path / datadir_part
    code = main(["storescp-command", "--config", str(config), "--datadir", str(datadir),
                 "--aet", aet, "--archive", str(tmp_path) + archive, "--hookup", hookup])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert named in err and ("unsafe" in err or "AE title is 1-16" in err)
    assert not datadir.exists()


def test_a_quote_or_hash_is_no_danger_without_a_shell_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    code = main(["storescp-command", "--config", str(config), "--datadir", str(tmp_path / "d"),
                 "--aet", "X'Y#a", "--archive", str(tmp_path / "it's #p")])
    out, _ = capsys.readouterr()
    assert code == 0
    words = shlex.split(out)
    assert words[words.index("-aet") + 1] == "X'Y#a"
    assert words[words.index("-od") + 1] == str(tmp_path / "it's #p")
    assert "--exec-on-reception" not in words


def test_the_command_writes_storescps_log_configuration_and_the_receiver_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dcmsortd.intake.dcmtklog import log_config

    config = tmp_path / "config.json"
    config.write_text("{}")
    datadir = tmp_path / "my data"
    code = main(["storescp-command", "--config", str(config), "--datadir", str(datadir),
                 "--project", "P2", "--port", "4007", "--aet", "AE%1"])
    assert code == 0
    out, err = capsys.readouterr()
    words = shlex.split(out)
    if os.path.exists("/usr/bin/storescp"):  # warned about unless a version it was tested with
        from dcmsortd.intake.dcmtklog import version_warning

        shown = subprocess.run(["/usr/bin/storescp", "--version"], capture_output=True,
                               text=True, timeout=30, check=False)
        expected = version_warning(shown.stdout + shown.stderr)
        assert (expected is None and "warning" not in err) or (
            expected is not None and expected in err), err
    folder = datadir / "site" / ".dcmsortd" / "journal"
    cfg, log = folder / "storescpP2.cfg", folder / "storescpP2.log"
    assert words[words.index("--log-config") + 1] == str(cfg)
    assert words[-1] == "4007" and "--exec-on-reception" not in words
    assert cfg.read_text() == log_config(str(log), "AE%1")
    assert "ConversionPattern = %i|AE%%1|%m%n" in cfg.read_text()  # % escaped for oflog
    assert log.exists() and log.stat().st_size == 0
    log.write_text("kept\n")  # run again: the configuration is the same, the log is kept
    assert main(["storescp-command", "--config", str(config), "--datadir", str(datadir),
                 "--project", "P2", "--port", "4007", "--aet", "AE%1"]) == 0
    assert log.read_text() == "kept\n"


def test_the_command_prints_the_line_and_makes_the_journal_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({}))
    datadir = tmp_path / "my data"
    (datadir / "site" / "archive").mkdir(parents=True)
    code = main(["storescp-command", "--config", str(config), "--datadir", str(datadir),
                 "--project", "P1", "--port", "4006", "--aet", "AE2", "--hookup", "journal"])
    assert code == 0
    out, err = capsys.readouterr()
    words = shlex.split(out)
    assert len(out.strip().splitlines()) == 1
    assert words[1] == "TCP_NODELAY=1" and words[2].endswith("storescp")
    assert words[words.index("-od") + 1] == str(datadir / "site" / "archive")
    assert words[words.index("-aet") + 1] == "AE2" and words[-1] == "4006"
    journal = datadir / "site" / ".dcmsortd" / "journal" / "arrivalsP1"
    assert shlex.split(words[words.index("--exec-on-reception") + 1])[-1] == str(journal)
    assert journal.parent.is_dir()
    assert err == ""


def test_an_archive_outside_the_input_roots_is_warned_about(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    code = main(["storescp-command", "--config", str(config), "--datadir",
                 str(tmp_path / "data"), "--archive", str(tmp_path / "elsewhere")])
    assert code == 0
    err = capsys.readouterr().err
    assert "outside the input roots" in err and "does not exist yet" in err


def test_the_readme_shows_what_the_command_prints_for_the_defaults(tmp_path: Path) -> None:
    from dcmsortd.service.config import resolve

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    prompt = "$ dcmsortd storescp-command --port 11112 --aet FIONA\n"
    shown = readme.split(prompt, 1)[1].split("\n", 1)[0]
    settings = resolve({}, home=str(tmp_path), default_config=str(tmp_path / "absent.json"))
    receiver = Receiver("/usr/bin/storescp", 11112, "FIONA",
                        f"{settings.site}/archive", settings.journal,
                        log_config=settings.receiver_log_config, log_path=settings.receiver_log)
    assert shown == command_line(receiver)
