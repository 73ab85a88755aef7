"""Examine (read, in a worker if wanted) and file (in the single writer) one arrival."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dcmsortd.dicom.header import SeriesCache, read_instance
from dcmsortd.model.errors import DcmsortdError, HeaderError, RejectedInput
from dcmsortd.model.instance import Instance, TagKey
from dcmsortd.model.notice import Arrival
from dcmsortd.sorting import fsio
from dcmsortd.sorting.failed import FailedList
from dcmsortd.sorting.index import ProcessedIndex
from dcmsortd.sorting.layout import Placement
from dcmsortd.sorting.store import Filed, IncompleteHeader, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Examined:
    """The worker's answer for one arrival: an Instance or the reason there is none."""

    arrival: Arrival
    instance: Instance | None
    error: DcmsortdError | None
    size: int = -1
    mtime_ns: int = -1


def under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class Examiner:
    """Reads one announced file, checking first that it lies inside the input roots.

    Picklable, so worker processes get their own copy (and their own series cache).
    """

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = tuple(os.path.realpath(r) for r in roots)
        self._cache = SeriesCache()

    def __getstate__(self) -> dict[str, Any]:
        return {"roots": self.roots}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.roots = state["roots"]
        self._cache = SeriesCache()

    def __call__(self, arrival: Arrival, rule_keys: frozenset[TagKey]) -> Examined:
        path = arrival.path
        real = fsio.realpath(path)
        if not under(real, self.roots):
            where = path if real == path else f"{path} (resolves to {real})"
            reason = f"{where} is outside the input roots {', '.join(self.roots)}"
            return Examined(arrival, None, RejectedInput(reason))
        try:
            st = os.stat(real)
        except OSError as exc:
            return Examined(arrival, None, HeaderError(f"cannot read: {exc.strerror}"))
        try:
            inst = read_instance(path, rule_keys, self._cache)
        except HeaderError as exc:
            return Examined(arrival, None, exc, st.st_size, st.st_mtime_ns)
        return Examined(arrival, inst, None, st.st_size, st.st_mtime_ns)


@dataclass
class Sorter:
    """Applies examined arrivals to the store: policy, links, records, failures."""

    store: Store
    modalities: tuple[str, ...] | None = None
    other_modalities: str = "ignore"
    roots: tuple[str, ...] = ()
    index: ProcessedIndex | None = None
    failed_list: FailedList | None = None
    counts: Counter[str] = field(default_factory=Counter)
    # told of every image newly counted in its series (series completion)
    on_new: Callable[[Placement, Instance], None] | None = None

    def handle(self, ex: Examined) -> str:
        """File one examined arrival; returns the outcome (sorted, ignored, deleted, bad, ...)."""
        outcome, records = self._outcome(ex)
        self.counts[outcome] += 1
        if self.index is not None and outcome != "failed" and ex.size >= 0:
            self.index.record(ex.arrival.path, ex.size, ex.mtime_ns, outcome, records)
        return outcome

    def _outcome(self, ex: Examined) -> tuple[str, tuple[str, ...]]:
        """The outcome, and the records (paths) the file is now counted in."""
        path = ex.arrival.path
        if ex.instance is None:
            reason = ex.error or "unknown error"
            log.error("%s: %s", path, reason)
            return "rejected" if isinstance(ex.error, RejectedInput) else "bad", ()
        inst = ex.instance
        if self.modalities is not None and inst.modality.upper() not in self.modalities:
            return self._other_modality(path, inst.modality), ()
        # a line that names no caller (storescp-command's) gets the file's (0002,0016)
        arrival = ex.arrival.with_caller(inst.source_ae)
        try:
            filed = self._file(inst, arrival)
        except HeaderError as exc:
            log.error("%s: %s", path, exc)
            return "bad", ()
        except OSError as exc:
            self.report_failure(path, f"cannot write the output: {exc}")
            return "failed", ()
        where = filed.placement
        if filed.new_in_record and self.on_new is not None:
            self.on_new(where, inst)
        if not inst.pixel_data:
            log.warning("%s: no pixel data (an image header only); sorted from its header", path)
        if where.sr_listing is not None and inst.sr is not None:
            return "sorted", (where.record, where.sr_listing)
        return "sorted", (where.record,)

    def _file(self, inst: Instance, arrival: Arrival) -> Filed:
        try:
            return self.store.file(inst, arrival)
        except IncompleteHeader:
            # a series this process read before, but whose record is gone: read it in full
            keys = self.store.rules.tag_keys()  # type: ignore[attr-defined]
            return self.store.file(read_instance(inst.path, keys, full=True), arrival)

    def _other_modality(self, path: str, modality: str) -> str:
        shown = modality or "(none)"
        if self.other_modalities != "delete":
            log.info("%s: modality %s is not sorted here; left untouched", path, shown)
            return "ignored"
        if not under(os.path.realpath(path), tuple(os.path.realpath(r) for r in self.roots)):
            log.error("%s: modality %s; not deleted: outside the input roots", path, shown)
            return "rejected"
        try:
            os.unlink(path)
        except OSError as exc:
            log.error("%s: modality %s; could not delete: %s", path, shown, exc.strerror)
            return "failed"
        log.warning("%s: modality %s is not sorted here; deleted as configured", path, shown)
        return "deleted"

    def report_failure(self, path: str, reason: str) -> None:
        """Log a file that could not be filed, and list it for an operator to re-send."""
        log.error("%s: FAILED %s", path, reason)
        if self.failed_list is not None:
            self.failed_list.add(path, reason)
