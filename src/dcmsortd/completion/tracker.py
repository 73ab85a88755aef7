"""Which series and study completions are due (pure: the clock's value is passed in).

A series is complete when no new image of it has arrived for ``series_quiet`` seconds; a
study when no new image of it has arrived for ``study_quiet`` seconds and each of its
series that got new images has had its event. Only new images count (the store says which
SOPInstanceUIDs it newly counted): a re-sent image is never an arrival. An image after a
series' event starts a new round of the series and of its study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SeriesRef:
    """A series, by its UIDs and where it is filed."""

    study_uid: str
    series_uid: str
    study_dir: str
    series_dir: str
    record: str

    @property
    def study(self) -> StudyRef:
        return StudyRef(self.study_uid, self.study_dir)

    def to_json(self) -> dict[str, str]:
        return {"StudyInstanceUID": self.study_uid, "SeriesInstanceUID": self.series_uid,
                "study_dir": self.study_dir, "series_dir": self.series_dir,
                "record": self.record}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SeriesRef:
        return cls(str(data["StudyInstanceUID"]), str(data["SeriesInstanceUID"]),
                   str(data["study_dir"]), str(data["series_dir"]), str(data["record"]))


@dataclass(frozen=True)
class StudyRef:
    """A study, by its UID and its folder."""

    study_uid: str
    study_dir: str

    def to_json(self) -> dict[str, str]:
        return {"StudyInstanceUID": self.study_uid, "study_dir": self.study_dir}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyRef:
        return cls(str(data["StudyInstanceUID"]), str(data["study_dir"]))


@dataclass
class _Study:
    ref: StudyRef
    last: float
    open: set[str] = field(default_factory=set)  # records of its series still due an event


@dataclass
class Tracker:
    """Pending completions; ``due(now)`` says which to issue, ``done(item)`` that one was.

    ``changed`` is set whenever the set of pending series or studies changes (not on every
    image), so the caller persists it only then.
    """

    series_quiet: float
    study_quiet: float
    _series: dict[str, tuple[SeriesRef, float]] = field(default_factory=dict)
    _studies: dict[str, _Study] = field(default_factory=dict)
    changed: bool = False

    def arrived(self, ref: SeriesRef, now: float) -> None:
        """A new image of ``ref`` was counted at ``now``."""
        if ref.record not in self._series:
            self.changed = True
        self._series[ref.record] = (ref, now)
        study = self._studies.get(ref.study_dir)
        if study is None:
            study = self._studies[ref.study_dir] = _Study(ref.study, now)
            self.changed = True
        study.last = now
        study.open.add(ref.record)

    def due(self, now: float) -> list[SeriesRef | StudyRef]:
        """Series quiet long enough, then studies quiet long enough with no series open.

        Nothing is removed: call ``done`` for each one issued (one that could not be
        issued stays due and comes again).
        """
        out: list[SeriesRef | StudyRef] = [
            ref for ref, last in self._series.values() if now - last >= self.series_quiet
        ]
        out += [s.ref for s in self._studies.values()
                if not s.open and now - s.last >= self.study_quiet]
        return out

    def done(self, item: SeriesRef | StudyRef) -> None:
        """``item``'s event was issued: its round is over."""
        if isinstance(item, SeriesRef):
            if self._series.pop(item.record, None) is not None:
                self.changed = True
            study = self._studies.get(item.study_dir)
            if study is not None:
                study.open.discard(item.record)
        elif self._studies.pop(item.study_dir, None) is not None:
            self.changed = True

    def next_due(self) -> float | None:
        """When the next completion falls due (None: nothing pending)."""
        times = [last + self.series_quiet for _, last in self._series.values()]
        times += [s.last + self.study_quiet for s in self._studies.values() if not s.open]
        return min(times, default=None)

    # ------------------------------------------------------------------ persistence
    def pending(self) -> tuple[list[SeriesRef], list[StudyRef]]:
        """The series and studies still due an event (what survives a restart)."""
        return [ref for ref, _ in self._series.values()], [s.ref for s in self._studies.values()]

    def reload(self, series: list[SeriesRef], studies: list[StudyRef], now: float) -> None:
        """Pending completions of an earlier run, counted as arriving ``now`` (the start):
        each is issued ``series_quiet`` (``study_quiet``) after it, unless images come."""
        for ref in series:
            self.arrived(ref, now)
        for study in studies:
            if study.study_dir not in self._studies:
                self._studies[study.study_dir] = _Study(study, now)
        self.changed = False

    def counts(self) -> tuple[int, int]:
        return len(self._series), len(self._studies)
