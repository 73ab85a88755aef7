"""The ``dcmsortd`` command line. Thin: parse flags, resolve settings, call one module.

Heavy modules (pydicom, nibabel) are imported inside the commands that need them, so that
``dcmsortd notify`` (run by storescp for every received file) starts fast.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .config import Settings, resolve
from .errors import DcmsortdError, RulesError

log = logging.getLogger("dcmsortd")

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(message)s"

DESCRIPTION = """\
Sort DICOM arrivals announced on a named pipe (by dcmtk storescp's --exec-on-reception)
into <datadir>/site/raw/<StudyInstanceUID>/<SeriesInstanceUID>/ symlink trees, with one
JSON record per series, a participants/ tree, an srs/ tree for structured reports and
.arrived/ markers. A drop-in successor of FIONA's processSingleFile3.py.
"""

EPILOG = """\
storescp line (never blocks, never loses a notification):
  storescp --fork -od /data/site/archive --exec-on-reception \\
    "dcmsortd notify '#a,#c,#r,#p,#f'" 11112
The classic line works too:
  --exec-on-reception "echo '#a,#c,#r,#p,#f' > /tmp/.processSingleFilePipe"
Exit codes: 0 ok, 1 error, 2 invalid rules or usage, 3 not running (status).
"""


def _path_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("paths (defaults keep FIONA deployments working)")
    g.add_argument("--project", default=None, help="project name; selects SITES.<project> "
                   "in the config and suffixes pipe, pid and log names (default: none)")
    g.add_argument("--config", default=None,
                   help="config file (default /data/config/config.json; missing default = "
                   "warning, missing explicit file = error)")
    g.add_argument("--datadir", default=None,
                   help="data folder (default: SITES.<project>.DATADIR, else /data)")
    g.add_argument("--pipe", default=None,
                   help="named pipe (default /tmp/.processSingleFilePipe<project>)")
    g.add_argument("--rules", default=None, help="classifyRules.json (default: next to the "
                   "config file, else the packaged default rules)")
    g.add_argument("--log-dir", dest="log_dir", default=None,
                   help="log folder (default ~/logs; file processSingleFile<project>.log)")
    g.add_argument("--pid-dir", dest="pid_dir", default=None,
                   help="pid folder (default ~/.pids; file processSingleFile<project>.pid)")
    g.add_argument("-v", "--verbose", action="store_true", help="log every sorted file")


def _sort_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sorting")
    g.add_argument("--workers", type=int, default=None,
                   help="processes reading headers in parallel, 5 nice levels below the "
                   "one writer (default 1)")
    g.add_argument("--modalities", default=None, type=lambda s: [m for m in s.split(",") if m],
                   help="comma list of modalities to sort, e.g. MR,SR (default: all)")
    g.add_argument("--other-modalities", dest="other_modalities", choices=("ignore", "delete"),
                   default=None, help="what happens to files of other modalities (default "
                   "ignore: logged, left untouched; delete: removed, only inside input roots)")
    g.add_argument("--umask", default=None, help="umask for created folders/files "
                   "(octal, default 002; 0 gives FIONA's world-writable trees)")
    g.add_argument("--pipe-mode", dest="pipe_mode", default=None,
                   help="permissions of the named pipe (octal, default 620)")
    g.add_argument("--input-root", dest="input_roots", action="append", default=None,
                   help="folder received files must lie in (repeatable; default: datadir)")
    g.add_argument("--catch-up", dest="catch_up", action="store_const", const=True,
                   default=None, help="scan the input roots for missed files at start (default)")
    g.add_argument("--no-catch-up", dest="catch_up", action="store_const", const=False,
                   default=None, help="do not scan the input roots for missed files at start")
    g.add_argument("--catch-up-window", dest="catch_up_window", type=float, default=None,
                   metavar="SECONDS", help="how far back the start-up scan looks at most "
                   "(default 604800, a week)")
    g.add_argument("--flush-interval", dest="flush_interval", type=float, default=None,
                   metavar="SECONDS", help="seconds between writes of a streaming series' "
                   "record (default 0.5, at most 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcmsortd", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dcmsortd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, sorting: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _path_options(p)
        if sorting:
            _sort_options(p)
        return p

    add("run", "run the daemon in the foreground (systemd, containers); logs to stderr too",
        sorting=True)
    add("start", "start the daemon detached; returns once the pipe exists", sorting=True)
    add("stop", "stop the daemon (SIGTERM), wait until it is gone")
    add("restart", "stop, then start", sorting=True)
    add("status", "exit 0 and print pid, pipe and data folder when running, else exit 3")
    p = add("send", "write lines into the pipe (error when no daemon listens)")
    p.add_argument("lines", nargs="+", metavar="LINE")
    p = add("notify", "for storescp: hand one line to the daemon, or spool it when none "
            "listens; returns at once, never loses it")
    p.add_argument("lines", nargs="+", metavar="LINE")
    add("test", "check the rules and print them resolved as JSON (exit 2 when invalid)")
    p = add("classify", "print, per series, the record and ClassifyType the daemon would "
            "write; touches nothing")
    p.add_argument("--explain", action="store_true", help="show why each rule held or failed")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("import", "sort existing files or folders (recursively) into the trees",
            sorting=True)
    p.add_argument("--dry-run", action="store_true", help="read and report, write nothing")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("catch-up", "sort every received file under the input roots that is not sorted "
            "yet (cheap on a sorted archive)", sorting=True)
    p.add_argument("--since", default=None,
                   help="only files modified since TIME (ISO date/time, or seconds like 3600s)")
    p.add_argument("roots", nargs="*", metavar="ROOT")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items() if v is not None}
    for key in ("umask", "pipe_mode"):
        if key in flags:
            flags[key] = str(flags[key])
    return resolve(flags, home=os.path.expanduser("~"))


_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def one_line(text: str) -> str:
    """``text`` with control characters, line separators and undecodable bytes escaped
    (``\\n``, ``\\x1b``, ``\\udcff``)."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch
        for ch in text
    )


class OneLineFormatter(logging.Formatter):
    """Every message on one line: a hostile file name or header value (or a multi-line
    error) can neither split a log line, forge one, nor break the log's UTF-8."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return one_line(super().formatMessage(record))


def setup_logging(settings: Settings, to_stderr: bool, to_file: bool = True) -> None:
    import logging.handlers

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.DEBUG if settings.verbose else logging.INFO)
    # pydicom logs each decoding problem without naming the file; header.py logs it with it
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    formatter = OneLineFormatter(LOG_FORMAT)
    if to_file:
        os.makedirs(os.path.dirname(settings.log_file), exist_ok=True)
        handler: logging.Handler = logging.handlers.WatchedFileHandler(settings.log_file)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)


def _commands() -> dict[str, Callable[[argparse.Namespace, Settings], int]]:
    from . import commands

    return {
        "run": commands.run, "start": commands.start, "stop": commands.stop,
        "restart": commands.restart, "status": commands.status, "send": commands.send,
        "notify": commands.notify, "test": commands.test, "classify": commands.classify,
        "import": commands.import_, "catch-up": commands.catch_up,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "notify":  # run by storescp per file: no "no config file" chatter
        logging.getLogger("dcmsortd.config").setLevel(logging.ERROR)
    try:
        settings = settings_from(args)
        return _commands()[args.command](args, settings)
    except RulesError as exc:
        print(f"dcmsortd: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except DcmsortdError as exc:
        print(f"dcmsortd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # e.g. the log folder cannot be created
        print(f"dcmsortd: {exc}", file=sys.stderr)
        return EXIT_ERROR


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def leave(code: int) -> NoReturn:
    """End the process with ``code``, without freeing its objects one by one.

    With pydicom, numpy and nibabel loaded that takes 60-130 ms, a few percent of a bulk
    import. Everything an exit must do still happens: the exit handlers run (logging's
    flush and close, multiprocessing's), then the standard streams are flushed. Only when
    another thread that is not a daemon thread still runs does Python's exit (which waits
    for it) take over.
    """
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main_entry() -> None:
    leave(main())
