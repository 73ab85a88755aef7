"""storescp's own log as the arrivals feed (pure): the log configuration, and the lines read
back into arrivals.

An ``--exec-on-reception`` line costs storescp a fork and a ``/bin/sh`` per file. Instead,
dcmtk's logger (oflog, a log4cplus) can write the few lines we need itself, with no process:
a configuration (``log_config``) gives storescp one more appender, a file opened once with
O_APPEND (one ``write`` per line, so the lines of many ``--fork`` children never
interleave), with filters that keep only these messages, each prefixed by the writing
process's id and the called AE title (a constant written into the pattern):

- ``Association Received: <address>`` (dcmnet, DEBUG; logged in the child that serves the
  association, so its pid names the association);
- ``Received Store Request ...`` (storescp, INFO): a new C-STORE began;
- ``storing DICOM file: <path>`` (storescp, INFO), logged just *before* the file is written;
- ``Association Release`` / ``Association Aborted`` (storescp, INFO).

Because the "storing" line comes before the write, a file is announced only once the same
process has moved on (its next line), or, for the last file of an association left open,
once the file has not changed for a settling time (``StorescpLog.due``). The calling AE title
is taken from the file's (0002,0016) as with the journal line (``CALLER_IN_FILE``).
Only DEBUG and INFO messages pass (no warning or error text, which may quote what a sender
sent), and every field read back is checked: a line of another shape is skipped.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dcmsortd.model.notice import CALLER_IN_FILE, UNKNOWN

ASSOCIATION = "Association Received: "
REQUEST = "Received Store Request"
STORING = "storing DICOM file: "
ENDS = ("Association Release", "Association Aborted")
SETTLE = 1.0  # seconds a last file must stay unchanged before it is announced
# remembered process ids, the least recently heard from dropped first (a bound whatever the
# log holds: a port probe or a crashed child leaves an association that never ends)
MAX_ASSOCIATIONS = 512

TESTED_DCMTK = ("3.6.7",)  # storescp versions whose messages these lines were checked with
_VERSION = re.compile(r"\$dcmtk: storescp v(\d+\.\d+\.\d+)")
_LINE = re.compile(r"(\d{1,10})\|([\x21-\x7e ]{1,16})\|(.*)")
_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,255}")
_UNSAFE_IN_PATH = set(",\x00\r\n")


def log_config(log_path: str, called: str) -> str:
    """The oflog configuration storescp is started with (``--log-config``): its usual
    console output (warnings and errors only, like storescp without ``-v``) plus the
    receiver log at ``log_path``, each line ``<pid>|<called>|<message>``."""
    pattern = called.replace("%", "%%")
    matches = (ASSOCIATION, REQUEST, STORING, *ENDS)
    lines = [
        "# written by `dcmsortd storescp-command`: storescp's log configuration (oflog).",
        "# The receiver log below is dcmsortd's arrivals feed: do not remove, rename or",
        "# rotate it while storescp runs (dcmsortd frees the space of what it has read).",
        "log4cplus.rootLogger = INFO, console, receiverlog",
        "log4cplus.logger.dcmtk.dcmnet = DEBUG",
        "log4cplus.logger.dcmtk.apps.storescp.progress = WARN",
        "log4cplus.appender.console = log4cplus::ConsoleAppender",
        "log4cplus.appender.console.logToStderr = true",
        "log4cplus.appender.console.Threshold = WARN",
        "log4cplus.appender.console.layout = log4cplus::PatternLayout",
        "log4cplus.appender.console.layout.ConversionPattern = storescp[%i] %p: %m%n",
        "log4cplus.appender.receiverlog = log4cplus::FileAppender",
        f"log4cplus.appender.receiverlog.File = {log_path}",
        "log4cplus.appender.receiverlog.Append = true",
        "log4cplus.appender.receiverlog.ImmediateFlush = true",
        "log4cplus.appender.receiverlog.layout = log4cplus::PatternLayout",
        f"log4cplus.appender.receiverlog.layout.ConversionPattern = %i|{pattern}|%m%n",
        "log4cplus.appender.receiverlog.filters.1 = log4cplus::spi::LogLevelRangeFilter",
        "log4cplus.appender.receiverlog.filters.1.LogLevelMin = DEBUG",
        "log4cplus.appender.receiverlog.filters.1.LogLevelMax = INFO",
        "log4cplus.appender.receiverlog.filters.1.AcceptOnMatch = false",
    ]
    for number, text in enumerate(matches, start=2):
        key = f"log4cplus.appender.receiverlog.filters.{number}"
        lines += [f"{key} = log4cplus::spi::StringMatchFilter",
                  f"{key}.StringToMatch = {text}", f"{key}.AcceptOnMatch = true"]
    lines.append(f"log4cplus.appender.receiverlog.filters.{len(matches) + 2} = "
                 "log4cplus::spi::DenyAllFilter")
    return "\n".join(lines) + "\n"


def version_warning(version_text: str) -> str | None:
    """What to tell the operator about the storescp that printed ``version_text`` (its
    ``--version``), or None when it is a version the receiver log was tested with."""
    found = _VERSION.search(version_text)
    if found is None:
        return ("cannot tell storescp's version; the receiver log relies on dcmtk's "
                "messages: send a test image and check its record's IncomingConnection")
    if found.group(1) in TESTED_DCMTK:
        return None
    return (f"storescp {found.group(1)}: the receiver log was tested with dcmtk "
            f"{', '.join(TESTED_DCMTK)} and relies on its messages: send a test image and "
            "check that it is sorted with its caller's address (IncomingConnection.CallerIP)")


@dataclass
class Pending:
    """A file a storescp process said it is storing, not yet known to be written."""

    path: str
    since: float  # when it was last seen changing (or announced)
    seen: tuple[int, int] | None = None  # (size, mtime_ns) at the last look


@dataclass
class _Association:
    called: str
    ip: str
    pending: Pending | None = None


class StorescpLog:
    """Turn receiver-log lines into arrival lines ``CALLER_IN_FILE,called,ip,dir,file``.

    ``feed`` takes one line and returns the arrival lines it completes; ``due`` returns those
    whose settling time passed, given a ``look`` at a path (its (size, mtime_ns), None when
    it is gone). ``snapshot``/``restore`` carry the open associations over a restart.
    """

    def __init__(self, settle: float = SETTLE,
                 warn: Callable[[str], None] = lambda text: None) -> None:
        self._settle = settle
        self._warn = warn
        self._by_pid: OrderedDict[str, _Association] = OrderedDict()
        self._waiting: dict[str, None] = {}  # pids with a pending file, in order
        self.skipped = 0

    # ------------------------------------------------------------ lines

    def feed(self, raw: bytes, now: float) -> list[bytes]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._skip(raw, "not UTF-8")
        match = _LINE.fullmatch(text)
        if match is None:
            return self._skip(raw, "not <pid>|<AE title>|<message>")
        pid, called, message = match.groups()
        if pid in self._by_pid:
            self._by_pid.move_to_end(pid)  # heard from: the last to be dropped
        if message.startswith(ASSOCIATION):
            host = message[len(ASSOCIATION):].strip()
            done = self._release(pid)
            self._remember(pid, _Association(called.strip(), _address(host)))
            return done
        if message.startswith(REQUEST):
            return self._release(pid)
        if message.startswith(STORING):
            path = message[len(STORING):]
            done = self._release(pid)
            if not path.startswith("/") or set(path) & _UNSAFE_IN_PATH:
                return done + self._skip(raw, "the path is not absolute or holds a comma")
            assoc = self._by_pid.get(pid)
            if assoc is None:  # its association line is not in the log (read from the middle)
                self._warn(f"storescp process {pid} stored {path} without an association "
                           "line before it: its address is recorded as unknown")
                assoc = _Association(called.strip(), UNKNOWN)
                self._remember(pid, assoc)
            assoc.pending = Pending(path, now)
            self._waiting[pid] = None
            return done
        if message.startswith(ENDS):
            done = self._release(pid)
            self._by_pid.pop(pid, None)
            return done
        return []  # another message the filters let through: nothing to do

    def due(self, now: float, look: Callable[[str], tuple[int, int] | None]) -> list[bytes]:
        """Arrival lines of pending files unchanged for the settling time (or gone: the
        sorter then says so)."""
        done: list[bytes] = []
        for pid in list(self._waiting):
            pending = self._by_pid[pid].pending
            if pending is None or now - pending.since < self._settle:
                continue
            seen = look(pending.path)
            if seen is None or seen == pending.seen:
                done += self._release(pid)
            else:
                pending.seen, pending.since = seen, now
        return done

    def pending(self) -> int:
        return len(self._waiting)

    def _release(self, pid: str) -> list[bytes]:
        assoc = self._by_pid.get(pid)
        if assoc is None or assoc.pending is None:
            return []
        path, assoc.pending = assoc.pending.path, None
        self._waiting.pop(pid, None)
        directory, _, name = path.rpartition("/")
        return [f"{CALLER_IN_FILE},{assoc.called},{assoc.ip},{directory or '/'},{name}"
                .encode()]

    def _remember(self, pid: str, assoc: _Association) -> None:
        self._by_pid.pop(pid, None)
        self._by_pid[pid] = assoc
        if len(self._by_pid) <= MAX_ASSOCIATIONS:
            return
        for old in list(self._by_pid):  # the least recently heard from first
            if len(self._by_pid) <= MAX_ASSOCIATIONS:
                break
            if self._by_pid[old].pending is None:  # never drop a file not yet announced
                del self._by_pid[old]

    def _skip(self, raw: bytes, why: str) -> list[bytes]:
        self.skipped += 1
        self._warn(f"receiver log line skipped ({why}): {raw[:200]!r}")
        return []

    # ------------------------------------------------------------ over a restart

    def snapshot(self) -> dict[str, Any]:
        return {pid: {"called": a.called, "ip": a.ip,
                      "pending": None if a.pending is None else a.pending.path}
                for pid, a in self._by_pid.items()}

    def restore(self, saved: object, now: float) -> None:
        """Take back a ``snapshot`` (anything else is ignored, with a warning)."""
        if not isinstance(saved, dict):
            if saved is not None:
                self._warn(f"ignoring a saved receiver-log state that is no object: {saved!r}")
            return
        for pid, item in _items(saved):
            if not isinstance(item, dict):
                continue
            called, ip, path = item.get("called"), item.get("ip"), item.get("pending")
            if not (isinstance(called, str) and isinstance(ip, str)):
                continue
            assoc = _Association(called, ip)
            if isinstance(path, str) and path.startswith("/"):
                assoc.pending = Pending(path, now)
                self._waiting[pid] = None
            self._remember(pid, assoc)


def _items(saved: dict[Any, Any]) -> Iterator[tuple[str, object]]:
    for pid, item in saved.items():
        if isinstance(pid, str) and pid.isdigit():
            yield pid, item


def _address(host: str) -> str:
    """The peer's address as logged (numeric with ``-dhl``); ``unknown`` when it is not an
    address or a plain host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host if _HOST.fullmatch(host) else UNKNOWN
