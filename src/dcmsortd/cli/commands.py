"""One function per command: ``(args, settings) -> exit code``. Imports stay lazy."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from dcmsortd.service.config import Settings

if TYPE_CHECKING:  # not imported at run time: ``notify`` starts per received file
    import argparse
    from types import SimpleNamespace

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 2, 3
STOP_TIMEOUT = 30.0


def _prepare_process(settings: Settings, to_stderr: bool) -> None:
    from dcmsortd.cli.output import setup_logging

    os.umask(settings.umask)
    setup_logging(settings, to_stderr=to_stderr)


def _catch_up_hook() -> Any:
    from dcmsortd.batch.bulk import catch_up_at_start

    return catch_up_at_start


def run(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_process(settings, to_stderr=True)
    from dcmsortd.service.daemon import serve

    try:
        return serve(settings, catch_up=_catch_up_hook())
    except Exception as exc:
        _log_end(exc)
        raise


def start(args: argparse.Namespace, settings: Settings) -> int:
    from dcmsortd.rules.engine import load_rules
    from dcmsortd.service.daemon import serve
    from dcmsortd.service.daemonize import detach
    from dcmsortd.service.pidfile import is_running

    pid = is_running(settings.pid_file)
    if pid is not None:
        print(f"dcmsortd: already running for project {settings.project!r} (pid {pid}, "
              f"pid file {settings.pid_file})", file=sys.stderr)
        return EXIT_ERROR
    load_rules(settings.rules_path)  # refuse to start on invalid rules, before detaching
    child = detach(ready_timeout=30.0)
    if child is None:  # we are the original process and the daemon reported
        return EXIT_OK
    try:
        _prepare_process(settings, to_stderr=False)
        code = serve(settings, ready=child.report_ready, catch_up=_catch_up_hook())
    except BaseException as exc:
        child.report_failure(str(exc) or type(exc).__name__)
        if isinstance(exc, Exception):
            _log_end(exc)  # the daemon's stderr is /dev/null: the log file is all there is
        raise
    return code


def _log_end(exc: Exception) -> None:
    """Log why the daemon could not start or ended, with a traceback when unexpected."""
    import logging

    from dcmsortd.model.errors import DcmsortdError

    expected = isinstance(exc, DcmsortdError)
    logging.getLogger("dcmsortd").critical("dcmsortd ends: %s", exc, exc_info=not expected)


def stop(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import time

    from dcmsortd.service.pidfile import is_running
    from dcmsortd.sorting.fsio import alive

    pid = is_running(settings.pid_file)
    if pid is None:
        print(f"dcmsortd: not running for project {settings.project!r}")
        return EXIT_OK
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if is_running(settings.pid_file) is None and not alive(pid):
            print(f"dcmsortd: stopped (pid {pid})")
            return EXIT_OK
        time.sleep(0.05)
    print(f"dcmsortd: pid {pid} did not stop within {STOP_TIMEOUT:.0f} s", file=sys.stderr)
    return EXIT_ERROR


def restart(args: argparse.Namespace, settings: Settings) -> int:
    code = stop(args, settings)
    if code != EXIT_OK:
        return code
    return start(args, settings)


def status(args: argparse.Namespace, settings: Settings) -> int:
    """The running daemon's own view: its pid file's lock says whether it runs, the status
    file beside it what it does (not the caller's --datadir or --pipe)."""
    from dcmsortd.cli.output import print_json
    from dcmsortd.service.status import as_json, look, render

    view = look(settings)
    if args.json:
        print_json(as_json(view))
    else:
        print("\n".join(render(view)))
    return EXIT_NOT_RUNNING if view.pid is None else EXIT_OK


def send(args: argparse.Namespace, settings: Settings) -> int:
    from dcmsortd.intake.pipe import write_lines

    write_lines(settings.pipe, list(args.lines), timeout=5.0)
    return EXIT_OK


def notify(args: argparse.Namespace | SimpleNamespace, settings: Settings) -> int:
    from pathlib import Path

    from dcmsortd.intake.notifier import notify as hand_over
    from dcmsortd.intake.spool import Spool

    spool = Spool(Path(settings.spool_dir))
    code = EXIT_OK
    for line in args.lines:
        try:
            hand_over(line, settings.pipe, spool)
        except OSError as exc:
            print(f"dcmsortd notify: could not deliver nor spool {line!r}: {exc}",
                  file=sys.stderr)
            code = EXIT_ERROR
    return code


def test(args: argparse.Namespace, settings: Settings) -> int:
    from dcmsortd.cli.output import print_json
    from dcmsortd.rules.engine import load_rules

    rules = load_rules(settings.rules_path, strict=bool(args.strict))
    print_json(rules.resolved())
    for warning in rules.warnings:
        print(f"dcmsortd test: warning: {rules.source}: {warning}", file=sys.stderr)
    return EXIT_OK


def classify(args: argparse.Namespace, settings: Settings) -> int:
    from dcmsortd.batch.classify import classify_paths

    return classify_paths(settings, list(args.paths), explain=bool(args.explain))


def import_(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_process(settings, to_stderr=True)  # workers: forked from this process
    from dcmsortd.batch.bulk import import_command

    return import_command(settings, list(args.paths), dry_run=bool(args.dry_run),
                          events=bool(args.events))


def catch_up(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_process(settings, to_stderr=True)  # workers: forked from this process
    from dcmsortd.batch.bulk import catch_up_command

    return catch_up_command(settings, list(args.roots), since=args.since)


def events(args: argparse.Namespace, settings: Settings) -> int:
    from dcmsortd.cli.events import print_events

    return print_events(settings, follow=bool(args.follow), since=args.since,
                        deliveries=bool(args.deliveries))


def storescp_command(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from dcmsortd.intake.hookup import Receiver, check_receiver, command_line
    from dcmsortd.sorting.processor import under

    archive = os.path.abspath(args.archive or os.path.join(settings.site, "archive"))
    storescp = "/usr/bin/storescp" if os.path.exists("/usr/bin/storescp") else None
    storescp = storescp or shutil.which("storescp") or "storescp"
    env = shutil.which("env") or "/usr/bin/env"
    by_log = getattr(args, "hookup", "log") == "log"
    receiver = Receiver(storescp=storescp, port=args.port, aet=args.aet, archive=archive,
                        journal=settings.journal, env=env,
                        log_config=settings.receiver_log_config if by_log else None,
                        log_path=settings.receiver_log)
    check_receiver(receiver)  # ConfigError before anything is made
    os.makedirs(settings.journal_dir, exist_ok=True)  # the line needs it before a daemon ran
    if by_log:
        write_receiver_log_config(settings, args.aet)
        _check_storescp_version(storescp)
    if not os.path.isdir(archive):
        print(f"dcmsortd: note: {archive} does not exist yet; storescp needs it",
              file=sys.stderr)
    if not under(os.path.realpath(archive), tuple(os.path.realpath(r) for r in settings.roots())):
        print(f"dcmsortd: warning: {archive} is outside the input roots "
              f"{', '.join(settings.roots())}: the daemon would refuse its files",
              file=sys.stderr)
    print(command_line(receiver))
    return EXIT_OK


def _check_storescp_version(storescp: str) -> None:
    """A warning on stderr when this storescp is not a version the receiver log was
    tested with (or cannot be run)."""
    import subprocess

    from dcmsortd.intake.dcmtklog import version_warning

    try:
        done = subprocess.run([storescp, "--version"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"dcmsortd: warning: cannot run {storescp} --version: {exc}", file=sys.stderr)
        return
    warning = version_warning(done.stdout + done.stderr)
    if warning is not None:
        print(f"dcmsortd: warning: {warning}", file=sys.stderr)


def write_receiver_log_config(settings: Settings, aet: str) -> None:
    """Write storescp's log configuration (atomically, only when it changes) and create the
    receiver log, so storescp finds both even before a daemon ever ran (storescp that cannot
    open its log file only says so and runs on: every arrival would go unannounced)."""
    from dcmsortd.intake.dcmtklog import log_config
    from dcmsortd.sorting.fsio import atomic_write

    text = log_config(settings.receiver_log, aet).encode()
    path = settings.receiver_log_config
    try:
        with open(path, "rb") as fh:
            same = fh.read() == text
    except FileNotFoundError:
        same = False
    if not same:
        atomic_write(path, text, settings.journal_dir)
    fd = os.open(settings.receiver_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                 0o664)
    os.close(fd)
