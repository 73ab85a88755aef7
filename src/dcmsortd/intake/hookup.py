"""The recommended storescp command line, built from its parts (pure, so it is tested as text).

Two hookups. The recommended one (``log_config`` set) runs no command per file: storescp
is started with ``--log-config`` and its own logger writes the receiver log the daemon
follows (see ``dcmtklog``). The other (``--hookup journal``) announces every received file
by an ``--exec-on-reception`` command, run through ``/bin/sh -c``, that only appends one
line to the arrivals journal (a shell builtin and one ``write``, no interpreter; but a
fork and a shell per file). ``TCP_NODELAY=1`` in storescp's environment turns Nagle's
algorithm off in dcmtk: without it every file waits on a delayed ACK.

The rest concerns the journal line:

storescp pastes its placeholders into that text unescaped, and a sender chooses the calling
and called AE titles (``#a``, ``#c``): a quote in one ends the line's quoting and the rest
runs as a command. So the line uses only placeholders whose text the sender cannot shape:
``#r`` with ``-dhl`` (the peer's numeric address, no reverse DNS), ``#p`` and ``#f`` (storescp
replaces every unusual character of the UIDs it builds them from). The called AE title is
written in as a constant, and the caller field says ``CALLER_IN_FILE``: the sorter takes the
calling AE title from the file's (0002,0016), where storescp records it. The constants are
checked (``check_receiver``): nothing in them may end the quoting, make ``echo`` interpret a
backslash, start a placeholder (``#``) or add a field (``,``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from dcmsortd.model.errors import ConfigError
from dcmsortd.model.notice import CALLER_IN_FILE

SORT_PREFIX = "scp_"  # FIONA's --sort-on-study-uid prefix
MAX_AE = 16  # bytes in an AE title
_UNSAFE_IN_DOUBLE_QUOTES = set('"\\$`!')
# inside the line's single quotes, as storescp pastes #p (-od is its start) and as the
# echo builtin of dash writes it: a quote, a backslash escape, a placeholder, a field
_UNSAFE_IN_ANNOUNCE = set("'\\#,")
_UNSAFE_IN_JOURNAL = set("#")  # shlex-quoted, but storescp still replaces placeholders in it
_UNSAFE_IN_LOG_PATTERN = set("|,\\")  # field separators of the log lines and arrival lines
_UNSAFE_IN_PROPERTIES = set("$\\")  # oflog's ${variables} and escapes


@dataclass(frozen=True)
class Receiver:
    """What the storescp command line is made of."""

    storescp: str  # absolute path of dcmtk's storescp
    port: int
    aet: str  # storescp's -aet: the called AE title written into every journal line
    archive: str  # storescp's -od
    journal: str  # the arrivals journal file the line appends to
    env: str = "/usr/bin/env"
    log_config: str | None = None  # storescp's --log-config (the receiver log); None: journal
    log_path: str = ""  # the receiver log that configuration names


def _control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def check_receiver(receiver: Receiver) -> None:
    """ConfigError naming the value and the character when a constant of the line is
    unsafe in the quoting it lands in (or is no AE title)."""
    aet, archive, journal = receiver.aet, receiver.archive, receiver.journal
    if not aet.strip() or len(aet.encode()) > MAX_AE or not aet.isascii() or _control(aet):
        raise ConfigError(f"--aet {aet!r}: an AE title is 1-16 printable ASCII characters")
    if receiver.log_config is not None:
        for what, value, unsafe in (("--aet", aet, _UNSAFE_IN_LOG_PATTERN),
                                    ("the archive folder", archive, set(",")),
                                    ("the receiver log path (data folder)", receiver.log_path,
                                     _UNSAFE_IN_PROPERTIES)):
            bad = [repr(ch) for ch in sorted(set(value) & unsafe)]
            bad += ["a control character"] if _control(value) else []
            if bad:
                raise ConfigError(f"{what} {value!r} holds {', '.join(bad)}: unsafe in "
                                  "storescp's receiver log (its lines or its configuration)")
        return
    for what, value, unsafe in (("--aet", aet, _UNSAFE_IN_ANNOUNCE),
                                ("the archive folder", archive, _UNSAFE_IN_ANNOUNCE),
                                ("the journal path (data folder)", journal, _UNSAFE_IN_JOURNAL)):
        bad = [repr(ch) for ch in sorted(set(value) & unsafe)]
        bad += ["a control character"] if _control(value) else []
        if bad:
            raise ConfigError(
                f"{what} {value!r} holds {', '.join(bad)}: unsafe in storescp's "
                f"--exec-on-reception line (storescp pastes it into shell text); "
                f"choose one without {' '.join(sorted(unsafe))} or control characters")


def exec_line(journal: str, called: str) -> str:
    """The per-file command: append ``CALLER_IN_FILE,<called>,#r,#p,#f`` to ``journal``."""
    return f"echo '{CALLER_IN_FILE},{called},#r,#p,#f' >> {shlex.quote(journal)}"


def quote_word(word: str) -> str:
    """``word`` quoted for a shell; in double quotes when that needs no escape (such a word
    also reads the same in a systemd unit's ExecStart), else as ``shlex.quote`` does."""
    if word and not set(word) & _UNSAFE_IN_DOUBLE_QUOTES and shlex.quote(word) != word:
        return f'"{word}"'
    return shlex.quote(word)


def argv(receiver: Receiver) -> list[str]:
    """The command's words: storescp with TCP_NODELAY=1 in its environment, FIONA's options,
    no host name lookup (``-dhl``: ``#r`` is the numeric address), every transfer syntax
    storescp supports accepted as sent (``+xa``: by default it negotiates an uncompressed
    one, and a sender that cannot decompress an image then fails to send it). ConfigError
    when a constant is unsafe (see ``check_receiver``)."""
    check_receiver(receiver)
    announce = (["--log-config", receiver.log_config] if receiver.log_config is not None
                else ["--exec-on-reception", exec_line(receiver.journal, receiver.aet)])
    return [
        receiver.env, "TCP_NODELAY=1", receiver.storescp, "--fork", "-dhl", "+xa",
        "-aet", receiver.aet, "-od", receiver.archive, "--sort-on-study-uid", SORT_PREFIX,
        *announce, str(receiver.port),
    ]


def command_line(receiver: Receiver) -> str:
    """The command as one shell line: ``shlex.split`` of it gives ``argv(receiver)``."""
    return " ".join(quote_word(word) for word in argv(receiver))
