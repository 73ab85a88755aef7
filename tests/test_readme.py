"""README.md stays true: its set-up commands, its command line and its settings table are the
program's own, and every command's --help runs."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

from dcmsortd.cli import compat
from dcmsortd.cli.main import build_parser, main
from dcmsortd.service.config import CONFIG_ONLY, DEFAULT_CONFIG, SETTING_KEYS, resolve

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def section(title: str) -> str:
    """The README text under ``## title``, up to the next ``##`` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(text: str, language: str = "") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def words(command: str) -> list[str]:
    """A shell command's words, without pip's quiet flags (CI may add them)."""
    return [w for w in shlex.split(command) if w not in ("-q", "--disable-pip-version-check")]


def ci_commands() -> list[list[str]]:
    lines = [line.strip() for line in CI_RUN.splitlines()]
    return [words(line) for line in lines if line and not line.startswith("#")]


def commands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser, group: str | None = None) -> list[list[str]]:
    """The option strings of each option of ``parser``, or of its group titled ``group...``."""
    groups = [g for g in parser._action_groups if group is None or
              (g.title or "").startswith(group)]
    assert groups, f"no group {group!r}"
    found = [a.option_strings for g in groups for a in g._group_actions if a.option_strings]
    return [names for names in found if "--help" not in names]


def documented(parser: argparse.ArgumentParser, group: str, listed: list[str]) -> None:
    """Every option of the group is listed (by one of its names); nothing else is."""
    named = options(parser, group)
    missing = [names for names in named if not set(names) & set(listed)]
    assert not missing, f"README does not list {missing}"
    assert set(listed) <= {o for names in named for o in names}


def backticked_flags(text: str) -> list[str]:
    return re.findall(r"`(-{1,2}[a-z][a-z-]*)", text)


# ---------------------------------------------------------------- a short user's guide

README_MAX_BYTES = 16_000
"""The aim is about 15 000 bytes; the bound leaves room for a new command or setting row.
Internals, design notes and benchmark results belong in docs/."""


def test_the_readme_stays_a_short_users_guide() -> None:
    size = len(README.encode("utf-8"))
    assert size < README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): move detail to docs/")
    for title in ("Hooking it to storescp", "What it writes: the layout (the contract)",
                  "The series record", "Command line", "Configuration", "Logging",
                  "Security model", "Differences from processSingleFile3.py", "Development"):
        section(title)


# ---------------------------------------------------------------- the two set-up commands


def setup_commands() -> list[str]:
    top = README.split("\n## ", 1)[0]
    (block,) = blocks(top, "bash")
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    return lines


def test_the_first_command_installs_and_runs_the_daemon_on_a_local_folder() -> None:
    install, run = setup_commands()[0].split(" && ")
    assert words(install) == ["python3", "-m", "pip", "install", "-e", "."]
    assert PYPROJECT["project"]["scripts"]["dcmsortd"] == "dcmsortd.cli.entry:main_entry"
    program, *argv = words(run)
    assert program == "dcmsortd"
    args = build_parser().parse_args(argv)
    assert (args.command, args.datadir) == ("run", "./data")


def test_the_second_command_is_the_one_ci_runs() -> None:
    install, test = setup_commands()[1].split(" && ")
    assert words(install) == ["python3", "-m", "pip", "install", "-e", ".[test]"]
    assert "test" in PYPROJECT["project"]["optional-dependencies"]
    assert "pytest" in " ".join(PYPROJECT["project"]["optional-dependencies"]["test"])
    ci = ci_commands()
    assert words(install) in ci
    assert words(test) == ["python3", "-m", "pytest"]
    assert ci[-1] == words(test)  # the last thing CI does
    assert "# The README's test command:" in CI_RUN


def test_the_defaults_the_first_command_mentions(tmp_path: Path) -> None:
    top = " ".join(README.split("\n## ", 1)[0].split())
    s = resolve({"datadir": "./data"}, home=str(tmp_path),
                default_config=str(tmp_path / "absent.json"))
    assert f"pipe `{s.pipe}`" in top
    assert f"log `~/{Path(s.log_file).relative_to(tmp_path)}`" in top
    assert f"pid file `~/{Path(s.pid_file).relative_to(tmp_path)}`" in top
    assert f"`{DEFAULT_CONFIG}` does not exist" in top


def test_the_development_commands_are_cis() -> None:
    (block,) = blocks(section("Development"), "bash")
    ci = ci_commands()
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        for part in command.split(" && "):
            if part and "not slow" not in part:
                assert words(part) in ci, part


# ---------------------------------------------------------------- the command line


def readme_command_lines() -> dict[str, str]:
    (block,) = blocks(section("Command line"))
    out = {}
    for line in block.splitlines():
        if line.startswith(" "):  # the description goes on
            continue
        match = re.match(r"dcmsortd (\S+)\s+(.*)", line)
        assert match, f"not a command line: {line!r}"
        out[match.group(1)] = match.group(2)
    return out


def test_readme_commands_are_the_parsers_commands() -> None:
    assert set(readme_command_lines()) == set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_each_commands_options_are_as_the_readme_says(name: str) -> None:
    usage = readme_command_lines()[name]
    parser = commands()[name]
    assert "[paths]" in usage
    documented(parser, "paths", _group_flags("paths"))
    if "[sorting]" in usage:
        documented(parser, "sorting", _group_flags("sorting"))
    else:
        assert "sorting" not in {g.title for g in parser._action_groups}
    own = re.findall(r"\[(--[a-z-]+)", usage)
    assert set(own) <= {o for names in options(parser) for o in names}


def _group_flags(kind: str) -> list[str]:
    text = section("Command line")
    paths = text.split("`[paths]`:", 1)[1].split("`[sorting]`:", 1)
    chosen = paths[0] if kind == "paths" else paths[1].split("dcmsortd COMMAND --help")[0]
    found = backticked_flags(chosen)
    assert found
    return found


def test_the_fiona_verbs_are_compats() -> None:
    text = section("Command line")
    match = re.search(r"`processSingleFile3\.py ([a-z|]+) \[project\]`", text)
    assert match
    assert tuple(match.group(1).split("|")) == compat.VERBS
    assert "`processSingleFile3.py send LINE...`" in text
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts["processSingleFile3.py"] == "dcmsortd.cli.compat:main_entry"


# ---------------------------------------------------------------- the settings table


def settings_table() -> dict[str, list[str]]:
    text = section("Configuration")
    rows = re.findall(r"^\| (\w+) \| ([^|]*) \|", text, re.M)
    return {name: backticked_flags(flag) for name, flag in rows if name != "setting"}


def test_the_settings_table_is_config_setting_keys() -> None:
    assert sorted(settings_table()) == sorted(SETTING_KEYS)


@pytest.mark.parametrize("name", sorted(SETTING_KEYS))
def test_every_setting_has_the_flag_the_table_names(name: str) -> None:
    table = settings_table()[name]
    if name in CONFIG_ONLY:
        assert table == [], f"setting {name} has no flag, but the README names {table}"
        return
    assert table, f"setting {name} has no flag in the README"
    run = commands()["run"]
    by_flag = {o: a.dest for a in run._actions for o in a.option_strings}
    for flag in table:
        assert by_flag.get(flag) == name, flag


# ---------------------------------------------------------------- --help


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in commands():
        assert name in out


@pytest.mark.parametrize("name", sorted(commands()))
def test_each_commands_help_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: dcmsortd {name}")


def test_the_installed_script_answers_help() -> None:
    script = Path(sysconfig.get_path("scripts")) / "dcmsortd"
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: dcmsortd")
