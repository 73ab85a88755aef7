"""The series record: fold images into a series state and render the JSON contract (pure).

A ``SeriesState`` holds what the record needs plus two things the record cannot show:
which SOP instances are already accounted for (so a re-sent image changes nothing) and
which SeriesLevel types were vetoed (so they never come back, across restarts too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dcmsortd.model.instance import Instance, RuleValue, TagKey
from dcmsortd.model.jsontext import Raw, nested
from dcmsortd.model.notice import Arrival

# Keys the record derives from all images rather than from the first one.
DERIVED_KEYS = frozenset(
    {"ClassifyType", "NumFiles", "siemensDiffusionInformation", "SliceLocation", "MeasID"}
)
STATE_VERSION = 1


class Classifier(Protocol):
    """What the series state needs of a rule set (``rules.RuleSet`` satisfies it)."""

    def classify(
        self,
        record: Mapping[str, Any],
        values: Mapping[TagKey, RuleValue],
        current: list[str],
        vetoed: set[str] | frozenset[str],
    ) -> Any: ...


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _diffusion_order(entry: Mapping[str, Any]) -> tuple[int, float, str]:
    number = _number(str(entry.get("InstanceNumber", "")))
    if number is None:
        return (1, 0.0, str(entry.get("SOPInstanceUID", "")))
    return (0, number, str(entry.get("SOPInstanceUID", "")))


@dataclass
class SeriesState:
    """Everything known about one series; mutable, owned by the single writer."""

    base: dict[str, Any]
    classify: list[str] = field(default_factory=list)
    vetoed: set[str] = field(default_factory=set)
    diffusion: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounted: set[str] = field(default_factory=set)
    slice_location: str | None = None
    meas_id: str | None = None
    # each diffusion entry's text, rendered once (see jsontext): SOP UID -> (entry, text)
    _entry_texts: dict[str, tuple[dict[str, Any], str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def record(self, num_files: int | None = None, rendered: bool = False) -> dict[str, Any]:
        """The series JSON record (the contract), NumFiles given or counted from accounted.

        ``rendered``: the diffusion list as a :class:`~dcmsortd.model.jsontext.Raw` of the same
        text, each entry rendered only once (for writing; the value is the same JSON).
        """
        out = self.rules_view()
        if self.diffusion:
            entries = sorted(self.diffusion.values(), key=_diffusion_order)
            out["siemensDiffusionInformation"] = (
                self._rendered_list(entries) if rendered else entries
            )
        if num_files is not None:
            out["NumFiles"] = str(num_files)
        return out

    def _rendered_list(self, entries: list[dict[str, Any]]) -> Raw:
        texts = []
        cache = self._entry_texts
        for entry in entries:
            sop = str(entry.get("SOPInstanceUID", ""))
            known = cache.get(sop)
            if known is None or known[0] is not entry:  # new, or replaced by a merge
                known = cache[sop] = (entry, nested(entry))
            texts.append(known[1])
        if len(cache) > len(entries):  # entries gone (never, but keep it bounded)
            for sop in set(cache) - set(self.diffusion):
                del cache[sop]
        return Raw.list_of(texts)

    def rules_view(self) -> dict[str, Any]:
        """The record as the rules see it; leaves out the (large) diffusion list for speed."""
        out = dict(self.base)
        if self.slice_location is not None:
            out["SliceLocation"] = self.slice_location
        if self.meas_id is not None:
            out["MeasID"] = self.meas_id
        out["ClassifyType"] = list(self.classify)
        out["NumFiles"] = str(len(self.accounted))
        return out

    # --- persistence of the private part --------------------------------------------------
    def to_state(self, rendered: bool = False) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "record": self.record(rendered=rendered),
            "accounted": sorted(self.accounted),
            "vetoed": sorted(self.vetoed),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], accounted: set[str] | None = None,
                    vetoed: set[str] | None = None) -> SeriesState:
        """Rebuild a state from a record on disk (and the private state, when present)."""
        base = {k: v for k, v in record.items() if k not in DERIVED_KEYS}
        diffusion = {
            str(e.get("SOPInstanceUID", "")): dict(e)
            for e in record.get("siemensDiffusionInformation", []) or []
            if isinstance(e, Mapping)
        }
        classify = [str(t) for t in record.get("ClassifyType", []) or []]
        slice_location = record.get("SliceLocation")
        meas_id = record.get("MeasID")
        return cls(
            base=base,
            classify=classify,
            vetoed=set(vetoed or ()),
            diffusion=diffusion,
            accounted=set(accounted or ()),
            slice_location=None if slice_location is None else str(slice_location),
            meas_id=None if meas_id is None else str(meas_id),
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SeriesState:
        return cls.from_record(
            state.get("record", {}),
            accounted={str(x) for x in state.get("accounted", [])},
            vetoed={str(x) for x in state.get("vetoed", [])},
        )


def first_fields(inst: Instance, arrival: Arrival) -> dict[str, Any]:
    """The record's first-image part for a series that starts with ``inst``."""
    base: dict[str, Any] = {
        k: v for k, v in inst.fields.items() if k not in ("SliceLocation", "MeasID")
    }
    base["IncomingConnection"] = {
        "AETitleCaller": arrival.caller,
        "AETitleCalled": arrival.called,
        "CallerIP": arrival.ip,
    }
    return base


def new_state(inst: Instance, arrival: Arrival) -> SeriesState:
    return SeriesState(base=first_fields(inst, arrival))


def _smaller(current: str | None, candidate: str | None) -> str | None:
    if candidate is None:
        return current
    if current is None:
        return candidate
    a, b = _number(current), _number(candidate)
    if b is not None and (a is None or b < a):
        return candidate
    return current


def apply_instance(state: SeriesState, inst: Instance, rules: Classifier) -> bool:
    """Fold one image into ``state``. Returns False (and changes nothing) for a re-sent image."""
    if inst.sop_uid in state.accounted:
        return False
    state.accounted.add(inst.sop_uid)
    state.slice_location = _smaller(state.slice_location, inst.fields.get("SliceLocation"))
    if "MeasID" in inst.fields:
        state.meas_id = inst.fields["MeasID"]
    if inst.diffusion is not None:
        state.diffusion[inst.sop_uid] = inst.diffusion.as_json()
    view = state.rules_view()
    result = rules.classify(view, inst.rule_values, list(state.classify), set(state.vetoed))
    state.classify = list(result.types)
    state.vetoed = set(result.vetoed)
    return True


def merge(disk: SeriesState, mine: SeriesState) -> SeriesState:
    """Combine a state another process wrote with ours (both only ever grow).

    The record's first-image fields come from ``disk`` (it was written first); types keep
    ``disk``'s order then ours, vetoed types removed; the rest is the union.
    """
    vetoed = disk.vetoed | mine.vetoed
    classify = [t for t in disk.classify if t not in vetoed]
    classify += [t for t in mine.classify if t not in vetoed and t not in classify]
    return SeriesState(
        base=dict(disk.base) if disk.base else dict(mine.base),
        classify=classify,
        vetoed=vetoed,
        diffusion={**disk.diffusion, **mine.diffusion},
        accounted=disk.accounted | mine.accounted,
        slice_location=_smaller(disk.slice_location, mine.slice_location),
        meas_id=mine.meas_id if mine.meas_id is not None else disk.meas_id,
    )
