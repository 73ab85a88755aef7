"""The events journal (one JSON object a line, append-only) and the pending completions.

The journal, ``<datadir>/site/.dcmsortd/events<project>.jsonl``, holds each event as it
was issued and, on lines of their own, what became of each hook run for it (``delivery``:
``queued``, ``failed``, then ``done``, ``given-up`` or ``dropped``). Each append is
fsync'ed, so an event is on record before its hooks start, and a hook's success before it
is counted as delivered. At start the journal tells which deliveries never finished.

The pending file holds the series and studies that got new images and had no event yet.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dcmsortd.completion.tracker import SeriesRef, StudyRef
from dcmsortd.sorting import fsio

log = logging.getLogger(__name__)

DONE = frozenset({"done", "given-up", "dropped"})  # a delivery that is over
PENDING_VERSION = 1


def journal_path(state_dir: str, project: str) -> str:
    return os.path.join(state_dir, f"events{project}.jsonl")


def pending_path(state_dir: str, project: str) -> str:
    return os.path.join(state_dir, f"completions{project}.json")


def read_entries(path: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete lines of the journal from byte ``offset`` and the offset after them.

    A last line without its newline (an append cut short) is left for later; a line that
    is not a JSON object is logged and skipped.
    """
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset:  # truncated or replaced: from the top
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    out = []
    for number, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if isinstance(item, dict):
            out.append(item)
        else:
            log.error("%s: line %d after byte %d is not a JSON object, skipped",
                      path, number, offset)
    return out, offset + end


class Journal:
    """Appends to the journal from any thread; each append is one write, then fsync."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mend()

    def _mend(self) -> None:
        """A crash can cut the last line short: end it, so the next line stands alone."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                last = fh.read(1)
        except (FileNotFoundError, OSError):
            return
        if last != b"\n":
            self._write(b"\n")

    def append(self, items: Iterable[dict[str, Any]]) -> None:
        payload = b"".join(
            json.dumps(i, ensure_ascii=False, sort_keys=True).encode() + b"\n" for i in items)
        if payload:
            self._write(payload)

    def _write(self, payload: bytes) -> None:
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass(frozen=True)
class Undelivered:
    """A hook run for an event that never finished (the process stopped or crashed)."""

    event: dict[str, Any]
    hook: tuple[str, ...]


def is_event(item: dict[str, Any]) -> bool:
    return "event" in item and "delivery" not in item


def undelivered(entries: Iterable[dict[str, Any]]) -> list[Undelivered]:
    """Deliveries queued and never done, given up or dropped, oldest event first."""
    events: dict[str, dict[str, Any]] = {}
    state: dict[tuple[str, tuple[str, ...]], str] = {}
    for item in entries:
        if is_event(item):
            events[str(item.get("id"))] = item
        elif "delivery" in item and isinstance(item.get("hook"), list):
            key = (str(item.get("id")), tuple(str(a) for a in item["hook"]))
            if state.get(key) not in DONE:
                state[key] = str(item["delivery"])
    return [Undelivered(events[eid], hook) for (eid, hook), s in state.items()
            if s not in DONE and eid in events]


def last_issued(entries: Iterable[dict[str, Any]]) -> dict[str, float]:
    """The time (epoch seconds) of the last event per folder (a series or study folder)."""
    out: dict[str, float] = {}
    for item in entries:
        if is_event(item):
            try:
                out[str(item.get("folder"))] = datetime.fromisoformat(str(item["time"])).timestamp()
            except (KeyError, ValueError):
                continue
    return out


def save_pending(path: str, series: list[SeriesRef], studies: list[StudyRef],
                 temp_dir: str, written: float) -> None:
    data = {"version": PENDING_VERSION, "written": written,
            "series": [s.to_json() for s in series], "studies": [s.to_json() for s in studies]}
    fsio.write_json(path, data, temp_dir)


def load_pending(path: str) -> tuple[list[SeriesRef], list[StudyRef], float]:
    """The pending series and studies an earlier run left, and when it wrote them."""
    data = fsio.read_json(path)
    if not isinstance(data, dict):
        return [], [], 0.0
    try:
        series = [SeriesRef.from_json(s) for s in data.get("series", [])]
        studies = [StudyRef.from_json(s) for s in data.get("studies", [])]
    except (KeyError, TypeError, AttributeError) as exc:
        log.error("%s: not a list of pending completions, ignored: %s", path, exc)
        return [], [], 0.0
    written = data.get("written")
    return series, studies, float(written) if isinstance(written, int | float) else 0.0


def follow(path: str, offset: int, stop: Callable[[], bool],
           interval: float = 0.2) -> Iterator[dict[str, Any]]:
    """Entries appended after ``offset``, as they come, until ``stop()`` is true."""
    while not stop():
        entries, offset = read_entries(path, offset)
        yield from entries
        if not entries:
            time.sleep(interval)
