"""What the command line prints and how it logs: one line per event, JSON for machines."""

from __future__ import annotations

import json
import logging
import os
import sys
import unicodedata
from typing import Any

from dcmsortd.service.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(message)s"


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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
