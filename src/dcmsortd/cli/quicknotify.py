"""``dcmsortd notify`` by the quickest path: one line into a listening daemon's pipe.

storescp (or a script) may run ``dcmsortd notify LINE`` per received file, so its usual case
must cost little more than the interpreter's start: this imports neither the settings
(``service.config``: dataclasses, logging, json) nor argparse. It handles exactly one case,
and answers None for everything else, which the full command then handles as always (the
spool when no daemon listens, any error message): the arguments are plain
(``quickargs``), there is one line, it fits one atomic pipe write, the pipe's path is known
without parsing the config file, and a daemon has the pipe open.

The pipe's path is known without parsing when ``--pipe`` is given, or when the config file
is absent or does not contain ``pipe`` at all (nor a ``\\u`` escape that could spell it):
then the config cannot move the pipe from its default, ``/tmp/.processSingleFilePipe<project>``.
The config file is not otherwise checked here (a line is delivered even when the file holds a
mistake the daemon would refuse to start with).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dcmsortd.cli.quickargs import notify_args
from dcmsortd.intake.pipewrite import frame, open_writer, write_atomic
from dcmsortd.model.errors import DaemonError

DEFAULT_CONFIG = "/data/config/config.json"  # service.config's; a test keeps them equal
CONFIG_READ_LIMIT = 1024 * 1024
WAIT = 0.05  # seconds a full pipe may take to drain, as the full command waits


def deliver(words: Sequence[str]) -> int | None:
    """Exit code 0 when ``notify`` with ``words`` (after the command) delivered its line,
    else None: the full command must handle it (nothing was written)."""
    args = notify_args(words)
    if args is None or len(args.lines) != 1:
        return None
    pipe = pipe_path(args.project, args.config, args.pipe)
    payload = frame(args.lines[0].removesuffix("\n"))
    if pipe is None or payload is None:
        return None
    try:
        fd = open_writer(pipe)
    except (DaemonError, OSError):
        return None  # no reader, no FIFO, a stray file: the full command spools and says so
    try:
        return 0 if write_atomic(fd, payload, WAIT) else None
    except OSError:  # the reader left between open and write: nothing was written
        return None
    finally:
        os.close(fd)


def pipe_path(project: object, config: object, pipe: object) -> str | None:
    """The pipe the settings would resolve, when that is certain without parsing the config
    file; None otherwise."""
    if isinstance(pipe, str) and pipe:
        return os.path.abspath(pipe)
    name = project if isinstance(project, str) else ""
    if "/" in name or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return None  # the full command says what is wrong with it
    path = config if isinstance(config, str) and config else DEFAULT_CONFIG
    try:
        with open(path, "rb") as fh:
            text = fh.read(CONFIG_READ_LIMIT + 1)
    except FileNotFoundError:
        if config:
            return None  # an explicit config file that is missing: an error to report
        text = b""
    except OSError:
        return None
    if len(text) > CONFIG_READ_LIMIT or b"pipe" in text or b"\\u" in text:
        return None
    return f"/tmp/.processSingleFilePipe{name}"
