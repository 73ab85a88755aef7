"""``dcmsortd events``: print the events journal, and follow it like ``tail -f``."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from types import FrameType
from typing import Any

from dcmsortd.batch.walk import parse_since
from dcmsortd.completion import journal
from dcmsortd.service.config import Settings

EXIT_OK = 0


def _when(item: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(item["time"])).timestamp()
    except (KeyError, ValueError):
        return None


def print_events(settings: Settings, follow: bool = False, since: str | None = None,
                 deliveries: bool = False) -> int:
    """Print the journal's events (with ``deliveries``, its delivery lines too), oldest
    first, one JSON object a line; with ``follow``, then wait for more until interrupted."""
    floor = None if since is None else parse_since(since, time.time())
    path = journal.journal_path(settings.state_dir, settings.project)

    def show(item: dict[str, Any]) -> None:
        if not deliveries and not journal.is_event(item):
            return
        when = _when(item)
        if floor is not None and (when is None or when < floor):
            return
        print(json.dumps(item, ensure_ascii=False, sort_keys=True), flush=follow)

    entries, offset = journal.read_entries(path)
    for item in entries:
        show(item)
    if not follow:
        return EXIT_OK
    stopped: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for item in journal.follow(path, offset, stop=lambda: bool(stopped)):
            show(item)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader went away (| head)
        sys.stderr.close()
    return EXIT_OK
