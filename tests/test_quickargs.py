"""notify's quick argument reading agrees with the full parser on every line it accepts."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcmsortd.cli.main import build_parser
from dcmsortd.cli.quickargs import SWITCHES, VALUED, notify_args


def notify_parser() -> argparse.ArgumentParser:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = action.choices["notify"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def test_it_knows_exactly_notifys_options() -> None:
    options = {o: a.dest for a in notify_parser()._actions for o in a.option_strings
               if "--help" not in a.option_strings}
    assert options == {**VALUED, **SWITCHES}


def full(argv: list[str]) -> dict[str, object] | None:
    try:
        return vars(build_parser().parse_args(["notify", *argv]))
    except SystemExit:
        return None


@pytest.mark.parametrize("argv", [
    ["a,b,c,/d,e"],
    ["--pipe", "/tmp/p", "--datadir=/d", "x", "y"],
    ["x", "--project", "P", "-v"],
    ["--rules", "r.json", "--log-dir", "/l", "--pid-dir", "/q", "--verbose", "line"],
])
def test_plain_lines_read_the_same(argv: list[str]) -> None:
    quick = notify_args(argv)
    assert quick is not None
    assert vars(quick) == full(argv)


@pytest.mark.parametrize("argv", [[], ["--help"], ["--pip", "/p", "x"], ["--pipe"],
                                  ["--pipe", "-x", "l"], ["-x", "l"], ["--verbose=1", "l"],
                                  ["--", "-l"], ["-", "l"], ["l", "--pipe", "/p", "m"]])
def test_anything_else_is_left_to_the_full_parser(argv: list[str]) -> None:
    assert notify_args(argv) is None


WORDS = st.sampled_from(["--pipe", "--datadir", "--project", "-v", "--verbose", "--", "-",
                         "line,a", "/p", "x=y", "--config=/c", "--pid-dir", "--bogus"])


@given(st.lists(WORDS, max_size=8))
def test_whatever_it_accepts_the_full_parser_reads_the_same(argv: list[str]) -> None:
    quick = notify_args(argv)
    if quick is not None:
        assert vars(quick) == full(argv)
