"""Which input files a bulk import or a catch-up scan considers, and since when.

:func:`walk` lists regular files under folders with ``os.scandir`` (one ``lstat`` per file,
reused for size and mtime), in a deterministic order (names sorted at every level, files
and folders interleaved), never following a symbolic link below the paths it was given,
and skipping dcmsortd's own output folders. :func:`parse_since` reads a ``--since`` value.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from dcmsortd.batch.progress import Progress
from dcmsortd.model.errors import ConfigError
from dcmsortd.model.notice import Arrival

log = logging.getLogger(__name__)

# dcmsortd's own folders under <datadir>/site: never input, even though the default input
# root is the data folder itself (storescp's archive usually is <datadir>/site/archive).
OUTPUT_FOLDERS = ("raw", "participants", "srs", ".arrived", "temp", ".dcmsortd")

MAX_LISTED = 10
CHOOSE_BATCH = 500  # files handed to collect()'s choose() at once
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A regular file found by the walk, with the size and mtime of its ``lstat``.

    Size and mtime are -1 when the walk was asked not to ``lstat`` (counting only).
    """

    path: str
    size: int
    mtime_ns: int


@dataclass
class WalkStats:
    """What the walk met besides regular files."""

    files: int = 0
    symlinks: int = 0  # not followed
    others: int = 0  # FIFOs, sockets, devices
    excluded: int = 0  # dcmsortd's own output folders
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), unreadable
    quiet: bool = False  # do not log (a first, counting pass)

    def error(self, path: str, reason: str) -> None:
        if not self.quiet:
            log.error("%s: %s", path, reason)
        self.errors.append((path, reason))

    def lines(self) -> list[str]:
        """Summary lines: what was not followed, what could not be scanned."""
        out = []
        if self.symlinks or self.others:
            out.append(f"not followed: {self.symlinks} symbolic link(s); "
                       f"{self.others} special file(s) left alone")
        if self.errors:
            out.append(f"could not scan: {len(self.errors)} path(s)")
            out += [f"  {path}: {why}" for path, why in self.errors[:MAX_LISTED]]
        return out


def output_folders(site: str) -> frozenset[str]:
    """The absolute paths of the folders a walk of the data folder must skip."""
    return frozenset(os.path.join(os.path.abspath(site), name) for name in OUTPUT_FOLDERS)


def _inside(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def distinct_tops(paths: Iterable[str]) -> list[str]:
    """Absolute ``paths`` in the given order, without duplicates or paths inside another."""
    tops = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    return [p for p in tops if not _inside(p, [q for q in tops if q != p])]


def walk(
    paths: Iterable[str], skip: frozenset[str] = frozenset(), stats: WalkStats | None = None,
    lstat: bool = True,
) -> Iterator[FileEntry]:
    """Every regular file in or under ``paths``, each listed once, in sorted order.

    A given path is followed if it is a symbolic link (the data folder often is one);
    nothing below it is. Folders in ``skip`` (absolute paths) are not entered. Without
    ``lstat`` the walk only reads folders (file types come with the listing) and the
    entries' size and time are -1: for counting, and for an import (which sorts every file).
    """
    stats = stats if stats is not None else WalkStats()
    for top in distinct_tops(paths):
        if _inside(top, skip):
            if not stats.quiet:
                log.warning("%s: dcmsortd's own output folder, not scanned", top)
            stats.excluded += 1
            continue
        try:
            st = os.stat(top)
        except OSError as exc:
            stats.error(top, f"cannot scan: {exc.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_folder(top, skip, stats, lstat)
        elif stat.S_ISREG(st.st_mode):
            stats.files += 1
            yield FileEntry(top, st.st_size, st.st_mtime_ns)
        else:
            stats.others += 1


def _sorted_entries(folder: str, stats: WalkStats) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        stats.error(folder, f"cannot list the folder: {exc.strerror}")
        return []


def _with_stat(entry: os.DirEntry[str]) -> FileEntry:
    st = entry.stat(follow_symlinks=False)
    return FileEntry(entry.path, st.st_size, st.st_mtime_ns)


def _walk_folder(
    top: str, skip: frozenset[str], stats: WalkStats, lstat: bool
) -> Iterator[FileEntry]:
    stack = [iter(_sorted_entries(top, stats))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.path in skip:
                    stats.excluded += 1
                else:
                    stack.append(iter(_sorted_entries(entry.path, stats)))
            elif entry.is_file(follow_symlinks=False):
                found = _with_stat(entry) if lstat else FileEntry(entry.path, -1, -1)
                stats.files += 1
                yield found
            elif entry.is_symlink():
                stats.symlinks += 1
            else:
                stats.others += 1
        except FileNotFoundError:
            continue  # removed while we looked: nothing to sort
        except OSError as exc:
            stats.error(entry.path, f"cannot stat: {exc.strerror}")


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from ``--since``: a duration back from ``now`` or an ISO date/time.

    Durations: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w`` (``3600``,
    ``3600s``, ``2h``, ``7d``). ISO: ``2024-05-01``, ``2024-05-01T12:30``,
    ``2024-05-01 12:30:00+02:00``; without a UTC offset it is local time.
    """
    match = _DURATION.match(text)
    if match:
        return now - float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected an ISO date/time (2024-05-01, 2024-05-01T12:30) "
            "or a duration (3600s, 90m, 2h, 7d)"
        ) from None
    return when.timestamp()


def arrival(path: str) -> Arrival:
    """How a bulk run announces a file: like a one-path pipe line."""
    return Arrival("unknown", "unknown", "unknown", path)


def chosen_files(
    paths: Iterable[str], skip: frozenset[str], stats: WalkStats,
    choose: Callable[[list[FileEntry]], list[FileEntry]],
    stop: Callable[[], bool] = lambda: False,
    walked: Callable[[], None] = lambda: None,
) -> Iterator[FileEntry]:
    """The files under ``paths`` that ``choose`` keeps, in walk order, as they are found.

    ``choose`` gets the files in batches of up to :data:`CHOOSE_BATCH` (one index query
    each) and returns those to keep, in their order; ``walked()`` is called per file
    walked. ``stop()`` true ends the walk, without choosing from the batch not yet full.
    """
    batch: list[FileEntry] = []
    for entry in walk(paths, skip, stats):
        if stop():
            return
        batch.append(entry)
        walked()
        if len(batch) >= CHOOSE_BATCH:
            yield from choose(batch)
            batch = []
    if batch and not stop():
        yield from choose(batch)


def collect(
    paths: Iterable[str], skip: frozenset[str], stats: WalkStats, terminal: bool,
    choose: Callable[[list[FileEntry]], list[FileEntry]] = lambda batch: batch,
    stop: Callable[[], bool] = lambda: False,
    hold: int | None = None,
) -> tuple[list[FileEntry] | None, int]:
    """Walk ``paths`` (showing progress): the files ``choose`` keeps (see
    :func:`chosen_files`) and how many. Past ``hold`` of them the list is dropped (None)
    and they are only counted, so memory stays bounded on any archive.
    """
    kept: list[FileEntry] | None = []
    number = 0
    with Progress("scanning", None, terminal) as progress:
        for entry in chosen_files(paths, skip, stats, choose, stop, progress.advance):
            number += 1
            if kept is not None and hold is not None and number > hold:
                kept = None  # only counted from here on
            if kept is not None:
                kept.append(entry)
    return kept, number


def count(paths: Iterable[str], skip: frozenset[str], terminal: bool) -> int:
    """How many files :func:`walk` will yield (a quick pass: no ``lstat``, nothing logged)."""
    with Progress("counting", None, terminal) as progress:
        for _ in walk(paths, skip, WalkStats(quiet=True), lstat=False):
            progress.advance()
    return progress.done
