"""``dcmsortd notify``'s arguments read without building the whole parser.

storescp may run ``dcmsortd notify`` once per received file, so it must start fast: building
argparse's parser for every command costs more than the notification itself. This reads
exactly what the ``notify`` command accepts (the ``[paths]`` options and the lines) and
gives up (None) on anything else (``--help``, an unknown option, no line, a missing value,
``-`` or ``--``, whose meaning argparse decides by position),
so the full parser answers those with its usual messages. A test checks that the two read
every accepted command line the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

# the notify command's options: flag -> destination (values), switches (no value)
VALUED = {
    "--project": "project", "--config": "config", "--datadir": "datadir", "--pipe": "pipe",
    "--rules": "rules", "--log-dir": "log_dir", "--pid-dir": "pid_dir",
}
SWITCHES = {"-v": "verbose", "--verbose": "verbose"}


def notify_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """``argv`` after ``notify`` as the parser's namespace would hold it, or None."""
    values: dict[str, object] = dict.fromkeys(VALUED.values())
    values["verbose"] = False
    lines: list[str] = []
    words = list(argv)
    closed = False  # the lines (one run of them) are behind us
    at = 0
    while at < len(words):
        word = words[at]
        at += 1
        if not word.startswith("-"):
            if closed:
                return None  # lines, options, lines again: argparse refuses the second run
            lines.append(word)
            continue
        closed = bool(lines)
        name, equals, value = word.partition("=")
        if name in SWITCHES and not equals:
            values[SWITCHES[name]] = True
        elif name in VALUED and equals:
            values[VALUED[name]] = value
        elif name in VALUED and at < len(words) and not words[at].startswith("-"):
            values[VALUED[name]] = words[at]
            at += 1
        else:
            return None  # --help, -, --, an abbreviation, an unknown flag: argparse decides
    if not lines:
        return None
    return SimpleNamespace(command="notify", lines=lines, **values)
