"""storescp-command: the printed line is one shell line that runs exactly the intended argv,
and its per-file line appends to the journal, whatever the paths hold."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from dcmsortd.cli.main import main
from dcmsortd.intake.hookup import Receiver, argv, command_line, exec_line, quote_word

NASTY = ["/data/site/archive", "/data/my site/archive", "/d/it's/a", '/d/"q"/x', "/d/$HOME/x",
         "/d/`id`/x", "/d/a\\b/x", "/d/semi;colon", "/d/new\nline"]


@pytest.mark.parametrize("path", NASTY)
def test_the_line_splits_back_into_the_argv(path: str) -> None:
    receiver = Receiver("/usr/bin/storescp", 11112, "FIONA", path, path + "/journal/arrivals")
    line = command_line(receiver)
    assert shlex.split(line) == argv(receiver)
    assert "\n" not in line or "\n" in path


def test_the_argv_has_fionas_options_and_nodelay() -> None:
    words = argv(Receiver("/usr/bin/storescp", 104, "AET1", "/data/site/archive", "/j/a"))
    assert words[:4] == ["/usr/bin/env", "TCP_NODELAY=1", "/usr/bin/storescp", "--fork"]
    assert words[4:10] == ["-aet", "AET1", "-od", "/data/site/archive",
                           "--sort-on-study-uid", "scp_"]
    assert words[10:] == ["--exec-on-reception", "echo '#a,#c,#r,#p,#f' >> /j/a", "104"]


def test_plain_words_stay_bare_and_others_prefer_double_quotes() -> None:
    assert quote_word("/usr/bin/storescp") == "/usr/bin/storescp"
    assert quote_word("echo 'x' >> /j") == "\"echo 'x' >> /j\""
    assert quote_word("a$b c") == "'a$b c'"


@pytest.mark.parametrize("path", NASTY)
def test_the_per_file_line_appends_the_substituted_line_to_that_file(
        tmp_path: Path, path: str) -> None:
    """As storescp runs it: its placeholders replaced, then ``/bin/sh -c``."""
    journal = tmp_path / path.strip("/") / "arrivals"
    journal.parent.mkdir(parents=True)
    command = exec_line(str(journal))
    for field, value in (("#a", '"SCANNER"'), ("#c", '"FIONA"'), ("#r", '"10.1.2.3"'),
                         ("#p", "/data/site/archive/scp__1.2"), ("#f", "MR.1.2.3")):
        command = command.replace(field, value)
    for _ in range(2):
        subprocess.run(["/bin/sh", "-c", command], check=True)
    expected = '"SCANNER","FIONA","10.1.2.3",/data/site/archive/scp__1.2,MR.1.2.3\n'
    assert journal.read_text() == expected * 2


def test_the_command_prints_the_line_and_makes_the_journal_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({}))
    datadir = tmp_path / "my data"
    (datadir / "site" / "archive").mkdir(parents=True)
    code = main(["storescp-command", "--config", str(config), "--datadir", str(datadir),
                 "--project", "P1", "--port", "4006", "--aet", "AE2"])
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
                        f"{settings.site}/archive", settings.journal)
    assert shown == command_line(receiver)
