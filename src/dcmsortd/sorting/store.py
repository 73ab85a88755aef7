"""The output trees under ``<datadir>/site``: links, markers, series records, SR listings.

One Store is the single writer of a process. Series states live in memory and are written
(state first, then the record, each atomically) at most every ``flush_interval`` seconds
per series, on idle and at stop. Writers in other processes (``import`` next to the
daemon) are detected by the state file changing under us and merged, under a striped lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dcmsortd.model.instance import Instance
from dcmsortd.model.notice import UNKNOWN, Arrival
from dcmsortd.sorting import fsio
from dcmsortd.sorting.duplicates import same_data_set
from dcmsortd.sorting.layout import Placement, marker_tail, plan
from dcmsortd.sorting.series import Classifier, SeriesState, apply_instance, merge, new_state

log = logging.getLogger(__name__)

LOCK_STRIPES = 64
KNOWN_MARKERS = 50_000  # arrival markers indexed for files without a sender, at most
Signature = tuple[int, int, int] | None


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class IncompleteHeader(Exception):
    """A series must be started from an Instance with every field (read it again, in full)."""


@dataclass
class _Open:
    """An open series (or SR listing): its state, where it goes, and when it was written."""

    record_path: str
    state_path: str
    series_dir: str
    state: Any
    disk: Signature
    dirty: bool = False
    written_at: float = 0.0
    used_at: float = 0.0
    lock_key: str = ""


@dataclass
class Filed:
    """What filing one image did."""

    placement: Placement
    new_link: bool
    new_in_record: bool


@dataclass
class Store:
    site: str
    rules: Classifier
    flush_interval: float = 0.5
    idle_evict: float = 60.0
    max_open: int = 2000
    clock: Callable[[], float] = time.monotonic
    _series: dict[str, _Open] = field(default_factory=dict)
    _srs: dict[str, _Open] = field(default_factory=dict)
    _folders: fsio.Folders = field(default_factory=fsio.Folders)
    _participants: set[str] = field(default_factory=set)
    _known_markers: dict[str, str] | None = None  # see _marker()
    records_written: int = 0  # series records and SR listings written by this store

    def __post_init__(self) -> None:
        self.site = os.path.abspath(self.site)
        self.temp_dir = os.path.join(self.site, "temp")
        self.state_root = os.path.join(self.site, ".dcmsortd", "series")
        self.lock_dir = os.path.join(self.site, ".dcmsortd", "locks")

    # ------------------------------------------------------------------ start-up
    def prepare(self) -> None:
        """Create the top folders and remove temporary files of dead processes."""
        for sub in ("raw", "participants", "srs", ".arrived", "temp"):
            self._folders.ensure(os.path.join(self.site, sub))
        self._folders.ensure(self.lock_dir)
        removed = fsio.clean_temp(self.temp_dir)
        if removed:
            log.info("%s: removed %d leftover temporary file(s)", self.temp_dir, removed)

    # ------------------------------------------------------------------ the hot path
    def file(self, inst: Instance, arrival: Arrival) -> Filed:
        """Link one image into every tree and fold it into its series record."""
        try:
            return self._file(inst, arrival)
        except FileNotFoundError:  # a folder we made was removed under us: make it again
            self._folders.forget()
            return self._file(inst, arrival)

    def _file(self, inst: Instance, arrival: Arrival) -> Filed:
        where = plan(self.site, inst, arrival)
        entry = self._open_series(where, inst, arrival)
        self._folders.ensure(where.series_dir)
        new_link = fsio.link(arrival.path, where.link, self.temp_dir)
        if not new_link:
            self._check_other_copy(where.link, inst, arrival.path)
        if where.participant_link is not None and where.participant_dir is not None:
            self._link_participant(where)
        if where.sr_link is not None and where.sr_dir is not None and inst.sr is not None:
            self._folders.ensure(where.sr_dir)
            fsio.link(arrival.path, where.sr_link, self.temp_dir)
            self._add_sr(where, inst)
        changed = apply_instance(entry.state, inst, self.rules)
        if changed or new_link:  # NumFiles counts the links: a new one changes the record
            entry.dirty = True
        self._touch_marker(self._marker(where, inst, arrival))
        return Filed(where, new_link, changed)

    @staticmethod
    def _check_other_copy(link: str, inst: Instance, path: str) -> None:
        """Warn when the image's link keeps another file whose data set differs."""
        try:
            first = os.readlink(link)
        except OSError:
            return  # not a link: fsio.link left it alone
        if first == path or same_data_set(first, path) is not False:
            return  # a re-send of the same image (or the first copy cannot be read)
        log.warning("%s: SOPInstanceUID %s arrived before as %s with different content; "
                    "the first copy stays linked", path, inst.sop_uid, first)

    def _link_participant(self, where: Placement) -> None:
        assert where.participant_dir is not None and where.participant_link is not None
        if where.participant_link in self._participants:
            return
        self._folders.ensure(where.participant_dir)
        fsio.link(where.study_dir, where.participant_link, self.temp_dir)
        try:
            current = os.readlink(where.participant_link)
        except OSError:
            current = None
        if current != where.study_dir:
            log.warning(
                "%s: already links to %s, not to %s (same patient, date and time)",
                where.participant_link, current, where.study_dir,
            )
        if len(self._participants) > 100_000:
            self._participants.clear()
        self._participants.add(where.participant_link)

    def _marker(self, where: Placement, inst: Instance, arrival: Arrival) -> str:
        """The arrival marker to touch: the planned one, except for a file whose sender is
        unknown (catch-up after a crash, import) in a series that already has a marker of a
        known sender. That one is touched instead: a new ``unknown unknown unknown`` marker
        would look to downstream jobs like a second arrival of the series.
        """
        index = self._known_markers
        if not arrival.unannounced:
            if index is not None:
                if len(index) >= KNOWN_MARKERS:
                    self._known_markers = None  # read again when next needed: bounded
                else:
                    index[marker_tail(inst.study_uid, inst.series_uid)] = where.arrived
            return where.arrived
        if index is None:
            index = self._known_markers = self._index_markers()
        return index.get(marker_tail(inst.study_uid, inst.series_uid), where.arrived)

    def _index_markers(self) -> dict[str, str]:
        """``{<study> <series>: marker}`` for the markers of a known sender in ``.arrived``.

        Read when the first file without a sender comes; the markers this store touches
        later keep it current, up to ``KNOWN_MARKERS`` entries (then it is read again when
        next needed). Past that many markers on disk the rest is not indexed (those series
        get an ``unknown`` marker).
        """
        index: dict[str, str] = {}
        try:
            with os.scandir(os.path.join(self.site, ".arrived")) as entries:
                for entry in entries:
                    # caller, called, ip (none holds a space), then <study> <series>
                    parts = entry.name.split(" ", 3)
                    if len(parts) == 4 and parts[:3] != [UNKNOWN] * 3:
                        index[parts[3]] = entry.path
                        if len(index) >= KNOWN_MARKERS:
                            log.info("more than %d arrival markers: files without a sender "
                                     "may get markers of their own", KNOWN_MARKERS)
                            break
        except OSError as exc:
            log.warning("cannot list the arrival markers: %s", exc)
        return index

    def _touch_marker(self, path: str) -> None:
        self._folders.ensure(os.path.dirname(path))
        fsio.touch(path)

    # ------------------------------------------------------------------ series state
    def _state_path(self, where: Placement) -> str:
        study, series = where.series_key
        return os.path.join(self.state_root, study, series + ".json")

    def _open_series(self, where: Placement, inst: Instance, arrival: Arrival) -> _Open:
        entry = self._series.get(where.record)
        if entry is None:
            state_path = self._state_path(where)
            state = self._load_series(state_path, where.record)
            behind = state is not None and self._record_behind(where, state)
            if state is None:
                if not inst.complete:
                    raise IncompleteHeader(inst.path)
                state = new_state(inst, arrival)  # dirty once an image is folded in
            entry = _Open(
                record_path=where.record, state_path=state_path, series_dir=where.series_dir,
                state=state, disk=_signature(state_path), lock_key=where.record,
                dirty=behind,  # a lost or stale record is written again
            )
            if len(self._series) >= self.max_open:
                self._evict(force=True)  # before adding: the new entry must stay open
            self._series[where.record] = entry
        entry.used_at = self.clock()
        return entry

    @staticmethod
    def _record_behind(where: Placement, state: SeriesState) -> bool:
        """True when the record on disk is missing or is not what ``state`` renders: a
        crash came between the state's write and the record's (the state is written first).
        """
        shown = state.record(num_files=fsio.count_entries(where.series_dir))
        return bool(fsio.read_json(where.record) != shown)

    @staticmethod
    def _load_series(state_path: str, record_path: str) -> SeriesState | None:
        data = fsio.read_json(state_path)
        if isinstance(data, dict) and isinstance(data.get("record"), dict):
            return SeriesState.from_state(data)
        record = fsio.read_json(record_path)
        if isinstance(record, dict):
            return SeriesState.from_record(record)
        return None

    def _add_sr(self, where: Placement, inst: Instance) -> None:
        assert where.sr_listing is not None and inst.sr is not None
        entry = self._srs.get(where.sr_listing)
        if entry is None:
            listing = fsio.read_json(where.sr_listing)
            state = {
                str(e.get("SOPInstanceUID")): e
                for e in (listing if isinstance(listing, list) else [])
                if isinstance(e, dict)
            }
            entry = _Open(
                record_path=where.sr_listing, state_path=where.sr_listing, series_dir="",
                state=state, disk=_signature(where.sr_listing), lock_key=where.sr_listing,
            )
            self._srs[where.sr_listing] = entry
        if inst.sr.sop_uid not in entry.state:
            entry.state[inst.sr.sop_uid] = dict(inst.sr.fields)
            entry.dirty = True
        entry.used_at = self.clock()

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        stripe = int(hashlib.blake2s(key.encode(), digest_size=2).hexdigest(), 16) % LOCK_STRIPES
        self._folders.ensure(self.lock_dir)
        fd = os.open(os.path.join(self.lock_dir, f"{stripe:02d}.lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_series(self, entry: _Open) -> None:
        with self._locked(entry.lock_key):
            disk = _signature(entry.state_path)
            if disk is not None and disk != entry.disk:
                other = self._load_series(entry.state_path, entry.record_path)
                if other is not None:
                    entry.state = merge(other, entry.state)
            self._folders.ensure(os.path.dirname(entry.state_path))
            state: SeriesState = entry.state
            fsio.write_json(entry.state_path, state.to_state(rendered=True), self.temp_dir)
            entry.disk = _signature(entry.state_path)
            record = state.record(num_files=fsio.count_entries(entry.series_dir), rendered=True)
            fsio.write_json(entry.record_path, record, self.temp_dir)

    def _write_srs(self, entry: _Open) -> None:
        with self._locked(entry.lock_key):
            disk = _signature(entry.state_path)
            if disk is not None and disk != entry.disk:
                listing = fsio.read_json(entry.state_path)
                for e in listing if isinstance(listing, list) else []:
                    if isinstance(e, dict):
                        entry.state.setdefault(str(e.get("SOPInstanceUID")), e)
            items = [entry.state[k] for k in sorted(entry.state)]
            fsio.write_json(entry.state_path, items, self.temp_dir)
            entry.disk = _signature(entry.state_path)

    def flush(self, everything: bool = False) -> list[tuple[str, OSError]]:
        """Write dirty records that are due (all of them with ``everything``).

        Returns the (path, error) of writes that failed; those stay dirty and are retried.
        """
        now = self.clock()
        failures: list[tuple[str, OSError]] = []
        for table, writer in ((self._series, self._write_series), (self._srs, self._write_srs)):
            for entry in table.values():
                if not entry.dirty:
                    continue
                if not everything and now - entry.written_at < self.flush_interval:
                    continue
                failure = self._write(entry, writer, now)
                if failure is not None:
                    failures.append((entry.record_path, failure))
        self._evict()
        return failures

    def flush_series(self, record: str) -> OSError | None:
        """Write the series record ``record`` now if it has changes (before its series is
        announced complete). Returns the error when the write failed."""
        entry = self._series.get(record)
        if entry is None or not entry.dirty:
            return None
        return self._write(entry, self._write_series, self.clock())

    def _write(self, entry: _Open, writer: Callable[[_Open], None], now: float) -> OSError | None:
        try:
            try:
                writer(entry)
            except FileNotFoundError:  # a folder was removed under us
                self._folders.forget()
                writer(entry)
        except OSError as exc:
            return exc
        entry.dirty = False
        entry.written_at = now
        self.records_written += 1
        return None

    def dirty(self) -> bool:
        return any(e.dirty for table in (self._series, self._srs) for e in table.values())

    def dirty_records(self) -> frozenset[str]:
        """The records (paths) with changes not yet written."""
        return frozenset(e.record_path for table in (self._series, self._srs)
                         for e in table.values() if e.dirty)

    def _evict(self, force: bool = False) -> None:
        now = self.clock()
        for table in (self._series, self._srs):
            idle = [
                key for key, e in table.items()
                if not e.dirty and (force or now - e.used_at > self.idle_evict)
            ]
            for key in idle:
                del table[key]

    def open_series(self) -> int:
        return len(self._series)
