"""A small SQLite index of processed input files, keyed by path, size and mtime.

The catch-up scan uses it to skip files already handled without reading their headers.
A file refused as bad is recorded with the reader's generation (``BAD``); a file refused by
an older reader (outcome plain ``bad``: before header-only images were sorted) is not
"known", so the next catch-up reads it once more.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from dcmsortd.sorting.episode import Episode

log = logging.getLogger(__name__)

QUERY_PATHS = 500  # paths looked up per query (SQLite allows 999 parameters at the least)
BAD = "bad:2"  # how a bad file is recorded now; raise the number when the reader accepts more
_STALE_BAD = "bad"  # recorded by the reader before (issue 14): read again

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    outcome TEXT NOT NULL
)
"""


class ProcessedIndex:
    """Remembers which input files were handled (sorted, skipped or rejected)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._setup()
        # (row, the records the file is counted in): see commit()
        self._pending: list[tuple[tuple[str, int, int, str], tuple[str, ...]]] = []
        self._episode = Episode(log)  # a commit failed: logged once, retried at the next commit

    def _setup(self, attempts: int = 100) -> None:
        """Switch to WAL and create the table. Two processes (the daemon and an import)
        opening a new index at once can find it locked without SQLite's busy wait: retry."""
        for attempt in range(attempts):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.1)

    def record(self, path: str, size: int, mtime_ns: int, outcome: str,
               records: tuple[str, ...] = ()) -> None:
        """Remember a handled file; ``records``: the records (paths) it is counted in."""
        if outcome == "bad":
            outcome = BAD
        self._pending.append(((path, size, mtime_ns, outcome), records))

    def commit(self, held: AbstractSet[str] = frozenset()) -> None:
        """Write the remembered rows, except those of files counted in a record of
        ``held`` (not written yet: a crash could lose the file from it, and the catch-up
        scan, which trusts the index, must then read the file again). Those wait."""
        if not self._pending:
            return
        ready: list[tuple[tuple[str, int, int, str], tuple[str, ...]]] = []
        waiting: list[tuple[tuple[str, int, int, str], tuple[str, ...]]] = []
        for pending in self._pending:
            (ready if held.isdisjoint(pending[1]) else waiting).append(pending)
        if not ready:
            return
        self._pending = waiting
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, outcome) VALUES (?, ?, ?, ?)",
                [row for row, _ in ready],
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._pending = ready + self._pending
            self._episode.failed(
                "%s: cannot update the processed-files index, will retry: %s", self.path, exc)
            return
        self._episode.worked("%s: the processed-files index is updated again", self.path)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every known path with its (size, mtime_ns): all of it in memory (tests, tools)."""
        cur = self._db.execute("SELECT path, size, mtime_ns FROM files")
        return {row[0]: (row[1], row[2]) for row in cur}

    def known(self, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` for those of ``paths`` the index holds (but files an
        older reader refused: see the module notes).

        A few hundred paths a query (by the primary key), so that a scan of an archive of
        millions of files holds one batch in memory, never the whole index.
        """
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(paths), QUERY_PATHS):
            chunk = paths[start : start + QUERY_PATHS]
            marks = ",".join("?" * len(chunk))
            cur = self._db.execute(
                f"SELECT path, size, mtime_ns FROM files WHERE path IN ({marks})"
                " AND outcome != ?", [*chunk, _STALE_BAD])
            found.update((row[0], (row[1], row[2])) for row in cur)
        return found

    def close(self, commit: bool = True, held: AbstractSet[str] = frozenset()) -> None:
        """Commit (see commit()) and close; rows still held are dropped (catch-up retries
        their files)."""
        if commit:
            self.commit(held)
        self._pending.clear()
        self._db.close()
