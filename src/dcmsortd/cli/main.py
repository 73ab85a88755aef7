"""The ``dcmsortd`` command line. Thin: parse flags, resolve settings, call one module.

Heavy modules (pydicom, nibabel) are imported inside the commands that need them, so that
``dcmsortd notify`` (run by storescp for every received file) starts fast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from dcmsortd import __version__
from dcmsortd.cli.quickargs import notify_args
from dcmsortd.model.errors import DcmsortdError, RulesError
from dcmsortd.service.config import Settings, resolve

if TYPE_CHECKING:  # argparse is imported when the whole parser is built (not for notify)
    import argparse
    from types import SimpleNamespace

log = logging.getLogger("dcmsortd")

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 2, 3

DESCRIPTION = """\
Sort DICOM arrivals announced on a named pipe (by dcmtk storescp's --exec-on-reception)
into <datadir>/site/raw/<StudyInstanceUID>/<SeriesInstanceUID>/ symlink trees, with one
JSON record per series, a participants/ tree, an srs/ tree for structured reports and
.arrived/ markers. A drop-in successor of FIONA's processSingleFile3.py.
"""

EPILOG = """\
Recommended receiver (no process per file, nothing lost, no sender text in a shell):
run the line that
  dcmsortd storescp-command --port 11112 --aet FIONA
prints; storescp's own logger writes <datadir>/site/.dcmsortd/journal/storescp<project>.log,
which the daemon follows (--hookup journal: a per-file line appends to arrivals<project>
there instead). Also supported, per file (both paste the sender's AE titles into
storescp's shell unescaped: move to the printed line):
  --exec-on-reception "dcmsortd notify '#a,#c,#r,#p,#f'"   (an interpreter per file)
  --exec-on-reception "echo '#a,#c,#r,#p,#f' > /tmp/.processSingleFilePipe"   (classic)
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
    g.add_argument("--series-quiet", dest="series_quiet", type=float, default=None,
                   metavar="SECONDS", help="a series is complete (series-complete event, "
                   "series hooks) after this long without a new image (default 15)")
    g.add_argument("--study-quiet", dest="study_quiet", type=float, default=None,
                   metavar="SECONDS", help="a study is complete after this long without a "
                   "new image, once each of its series is (default 60)")
    g.add_argument("--hook-workers", dest="hook_workers", type=int, default=None,
                   metavar="N", help="hooks (from the config's \"hooks\") run at most N at "
                   "a time (default 2)")


def _metrics_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (':PORT' or "
                   "'PORT': on 127.0.0.1; default: off); a port in use stops the start")


def build_parser() -> argparse.ArgumentParser:
    import argparse

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

    _metrics_option(add("run", "run the daemon in the foreground (systemd, containers); logs "
                        "to stderr too; speaks systemd's sd_notify when NOTIFY_SOCKET is set",
                        sorting=True))
    _metrics_option(add("start", "start the daemon detached; returns once the pipe exists",
                        sorting=True))
    add("stop", "stop the daemon (SIGTERM), wait until it is gone")
    _metrics_option(add("restart", "stop, then start", sorting=True))
    p = add("status", "the running daemon's own view (pid, data folder, pipe, counts, rate, "
            "latency, backlog, last error), found by project, pid folder and config "
            "whatever --datadir is given; exit 3 when not running")
    p.add_argument("--json", action="store_true", help="print one JSON object (keys pid, "
                   "datadir, pipe, uptime_s, files_sorted, files_failed, spool_backlog, ...)")
    p = add("send", "write lines into the pipe (error when no daemon listens)")
    p.add_argument("lines", nargs="+", metavar="LINE")
    p = add("notify", "for scripts: hand one line to the daemon, or spool it when none "
            "listens; returns at once, never loses it (for storescp prefer the line "
            "storescp-command prints: no interpreter per file)")
    p.add_argument("lines", nargs="+", metavar="LINE")
    p = add("storescp-command", "print the recommended storescp command line for this "
            "project (TCP_NODELAY=1, FIONA's options, -dhl, +xa) and write what it needs: by "
            "default storescp's --log-config, whose receiver log "
            "(<datadir>/site/.dcmsortd/journal/storescp<project>.log) the daemon follows: no "
            "command per file, no text the sender chose in a shell (the caller AE is read "
            "from each file); refuses an AE title or path unsafe there")
    p.add_argument("--hookup", choices=("log", "journal"), default="log",
                   help="log (default): storescp's own log announces each file; journal: a "
                   "per-file --exec-on-reception line appends to the arrivals journal "
                   "(a shell per file: slower, for receivers without dcmtk's logger)")
    p.add_argument("--port", type=int, default=11112, help="port storescp listens on "
                   "(default 11112)")
    p.add_argument("--aet", default="FIONA", help="storescp's own AE title, recorded as "
                   "the called AE (default FIONA; never | , \\; with --hookup journal "
                   "also no ' #)")
    p.add_argument("--archive", default=None, help="storescp's output folder "
                   "(default <datadir>/site/archive)")
    p = add("test", "check the rules and print them resolved as JSON (exit 2 when invalid); "
            "warnings (ids several rules share, unknown keys: tolerated) go to stderr")
    p.add_argument("--strict", action="store_true",
                   help="also refuse (exit 2) what is tolerated otherwise: an id that several "
                   "rules share, a key the loader does not know")
    p = add("classify", "print, per series, the record and ClassifyType the daemon would "
            "write; touches nothing")
    p.add_argument("--explain", action="store_true", help="show why each rule held or failed")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("import", "sort existing files or folders (recursively) into the trees",
            sorting=True)
    p.add_argument("--dry-run", action="store_true", help="read and report, write nothing")
    p.add_argument("--events", action="store_true", help="issue series-complete and "
                   "study-complete events for what it sorted (into the events journal, "
                   "running the hooks; at the latest when it ends, then it waits for the "
                   "hooks); without it an import issues none")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = add("catch-up", "sort every received file under the input roots that is not sorted "
            "yet (cheap on a sorted archive)", sorting=True)
    p.add_argument("--since", default=None,
                   help="only files modified since TIME (ISO date/time, or seconds like 3600s)")
    p.add_argument("roots", nargs="*", metavar="ROOT")
    p = add("events", "print the journal of series-complete and study-complete events, one "
            "JSON object a line, oldest first")
    p.add_argument("--follow", action="store_true",
                   help="then wait for new events and print them as they come (like tail -f)")
    p.add_argument("--since", default=None,
                   help="only events since TIME (ISO date/time, or seconds like 3600s, 2h)")
    p.add_argument("--deliveries", action="store_true",
                   help="also print the lines saying what became of each hook run "
                   "(queued, failed, done, given-up, dropped)")
    return parser


def settings_from(args: argparse.Namespace | SimpleNamespace) -> Settings:
    flags = {k: v for k, v in vars(args).items() if v is not None}
    for key in ("umask", "pipe_mode"):
        if key in flags:
            flags[key] = str(flags[key])
    return resolve(flags, home=os.path.expanduser("~"))


def _commands() -> dict[str, Callable[[Any, Settings], int]]:
    from dcmsortd.cli import commands

    return {
        "run": commands.run, "start": commands.start, "stop": commands.stop,
        "restart": commands.restart, "status": commands.status, "send": commands.send,
        "notify": commands.notify, "storescp-command": commands.storescp_command,
        "test": commands.test, "classify": commands.classify,
        "import": commands.import_, "catch-up": commands.catch_up, "events": commands.events,
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | SimpleNamespace:
    """The command line's namespace; ``notify`` (run per received file) skips building the
    whole parser when its arguments are plain (see ``quickargs``)."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["notify"] and (quick := notify_args(words[1:])) is not None:
        return quick
    return build_parser().parse_args(words)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "notify":  # run by storescp per file: no "no config file" chatter
        logging.getLogger("dcmsortd.service.config").setLevel(logging.ERROR)
    try:
        settings = settings_from(args)
        if args.command == "notify":
            from dcmsortd.cli.commands import notify

            return notify(args, settings)
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


def leave(code: int) -> NoReturn:
    """End the process with ``code``, without freeing its objects one by one.

    With pydicom, numpy and nibabel loaded that takes 60-130 ms, a few percent of a bulk
    import. Everything an exit must do still happens: the exit handlers run (logging's
    flush and close, multiprocessing's), then the standard streams are flushed. Only when
    another thread that is not a daemon thread still runs does Python's exit (which waits
    for it) take over.
    """
    import atexit
    import contextlib
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main_entry() -> None:
    leave(main())
