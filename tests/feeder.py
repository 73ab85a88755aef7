"""Feed a running test daemon through its FIFO and observe it from outside.

``Sender`` and ``feed`` write lines into the pipe like storescp's ``echo`` would (blocking
while the pipe is full, one atomic write per line); ``wait_through`` waits until the daemon
has handled everything sent so far (a last line from the caller SENTINEL was handled);
``status`` reads ``/proc/<pid>/status``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import termios
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from daemonproc import Site, wait_for

SENTINEL = "SENTINEL"


def listening(pipe: Path) -> bool:
    """True when a reader has the FIFO open (a non-blocking open for writing succeeds)."""
    try:
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    os.close(fd)
    return True


def wait_listening(pipe: Path, timeout: float = 15.0) -> None:
    wait_for(lambda: listening(pipe), timeout, f"a reader on {pipe}")


class Sender(threading.Thread):
    """Writes ``lines`` (each with its newline, at most PIPE_BUF bytes) into the FIFO like
    storescp's ``echo`` does: one write each, blocking while the pipe is full. ``sent``
    counts the lines written; it stops early when the reader goes away (EPIPE)."""

    def __init__(self, pipe: Path, lines: Iterable[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines = lines
        self.sent = 0

    def run(self) -> None:
        try:  # never wait for a reader: none there (a dead daemon) means nothing goes in
            fd = os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return
            raise
        os.set_blocking(fd, True)
        try:
            for line in self.lines:
                os.write(fd, line)
                self.sent += 1
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)


def feed(pipe: Path, lines: Iterable[bytes]) -> int:
    """Write ``lines`` into the FIFO (see Sender), here; returns how many went in."""
    sender = Sender(pipe, lines)
    sender.run()
    return sender.sent


def backlog(fd: int) -> int:
    """Bytes written into the pipe of ``fd`` and not yet read."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, "little")


def heartbeat(site: Site) -> float:
    path = site.site / ".dcmsortd" / f"daemon{site.project}.json"
    try:
        return float(json.loads(path.read_text())["last_alive"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0.0


def sentinel_line(path: Path) -> bytes:
    """A line announcing ``path`` (already announced) once more, from the caller SENTINEL."""
    return f"{SENTINEL},FIONA,127.0.0.1,{path.parent},{path.name}\n".encode()


def _sentinel_stamp(site: Site) -> int:
    found = list((site.site / ".arrived").glob(f"{SENTINEL} *"))
    return max((p.stat().st_mtime_ns for p in found), default=0)


def wait_through(site: Site, path: Path, timeout: float = 60.0,
                 alive: Callable[[], bool] = lambda: True) -> bool:
    """Send ``sentinel_line(path)`` and wait until the daemon has handled it (it touched the
    arrival marker of the caller SENTINEL). Lines are handled in the order they came, so
    every line sent before is handled too; their records are written at the latest when
    the daemon stops. ``path`` must be sorted already, or be sorted by a line sent before,
    so the sentinel changes nothing but its own arrival marker. False when ``alive()``
    turned false (the daemon died) first."""
    before = _sentinel_stamp(site)
    feed(site.pipe, [sentinel_line(path)])
    wait_for(lambda: _sentinel_stamp(site) > before or not alive(), timeout, "the sentinel")
    return _sentinel_stamp(site) > before


def status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...) in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        m = re.fullmatch(r"(\w+):\s+(\d+) kB", line)
        if m:
            out[m[1]] = int(m[2])
    return out


def outcome_counts(log_text: str) -> list[dict[str, int]]:
    """The outcome counts (those above 0) of every ``dcmsortd stopped: N file(s) sorted,
    M failed (a bad, ...), k ignored, up ...`` log line, in order."""
    found = re.findall(r"dcmsortd stopped: (\d+) file\(s\) sorted, \d+ failed"
                       r"(?: \(([^)]*)\))?((?:, \d+ \w+)*), up ", log_text)
    out = []
    for sorted_, failed, others in found:
        counts = {"sorted": int(sorted_)}
        for part in [*failed.split(", "), *others.split(", ")]:
            if part:
                number, outcome = part.split(" ")
                counts[outcome] = int(number)
        out.append({k: v for k, v in counts.items() if v})
    return out


def normalized(snapshot: Mapping[str, str], datadir: Path) -> dict[str, str]:
    """``Site.snapshot()`` with the data folder's path replaced, so two sites compare."""
    return {k: v.replace(str(datadir), "<data>") for k, v in snapshot.items()}


def json_files(site: Site) -> dict[str, Any]:
    """Every JSON file dcmsortd keeps about series and SRs: the records, the SR listings and
    the private series states, parsed, by path relative to the site."""
    out: dict[str, Any] = {}
    for pattern in ("raw/*/*.json", "srs/*/*.json", ".dcmsortd/series/*/*.json"):
        for path in sorted(site.site.glob(pattern)):
            out[str(path.relative_to(site.site))] = json.loads(path.read_text())
    return out
