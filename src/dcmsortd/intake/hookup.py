"""The recommended storescp command line, built from its parts (pure, so it is tested as text).

storescp announces every received file by running its ``--exec-on-reception`` command
through ``/bin/sh -c``; ours only appends one line to the arrivals journal (a shell builtin
and one ``write``, no interpreter). ``TCP_NODELAY=1`` in storescp's environment turns
Nagle's algorithm off in dcmtk: without it every file waits on a delayed ACK.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

ANNOUNCE = "'#a,#c,#r,#p,#f'"  # caller AE, called AE, caller address, folder, file name
SORT_PREFIX = "scp_"  # FIONA's --sort-on-study-uid prefix
_UNSAFE_IN_DOUBLE_QUOTES = set('"\\$`!')


@dataclass(frozen=True)
class Receiver:
    """What the storescp command line is made of."""

    storescp: str  # absolute path of dcmtk's storescp
    port: int
    aet: str
    archive: str  # storescp's -od
    journal: str  # the arrivals journal file the line appends to
    env: str = "/usr/bin/env"


def exec_line(journal: str) -> str:
    """The per-file command: append the notification line to ``journal`` (quoted for sh)."""
    return f"echo {ANNOUNCE} >> {shlex.quote(journal)}"


def quote_word(word: str) -> str:
    """``word`` quoted for a shell; in double quotes when that needs no escape (such a word
    also reads the same in a systemd unit's ExecStart), else as ``shlex.quote`` does."""
    if word and not set(word) & _UNSAFE_IN_DOUBLE_QUOTES and shlex.quote(word) != word:
        return f'"{word}"'
    return shlex.quote(word)


def argv(receiver: Receiver) -> list[str]:
    """The command's words: storescp with TCP_NODELAY=1 in its environment, FIONA's options."""
    return [
        receiver.env, "TCP_NODELAY=1", receiver.storescp, "--fork",
        "-aet", receiver.aet, "-od", receiver.archive, "--sort-on-study-uid", SORT_PREFIX,
        "--exec-on-reception", exec_line(receiver.journal), str(receiver.port),
    ]


def command_line(receiver: Receiver) -> str:
    """The command as one shell line: ``shlex.split`` of it gives ``argv(receiver)``."""
    return " ".join(quote_word(word) for word in argv(receiver))
