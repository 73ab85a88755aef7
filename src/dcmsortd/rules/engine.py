"""The classification engine: a checked RuleSet that tags a series, image by image.

``load_rules``/``parse_rules`` compile a classifyRules.json file (``rules.load``);
``RuleSet.classify`` gives a series its new ClassifyType for one new image; ``explain``
says, rule by rule, which entry failed and on which value. See docs/rules.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from dcmsortd.model.errors import RulesError
from dcmsortd.model.instance import RuleValue, TagKey
from dcmsortd.rules.load import CompiledRule, compile_rules, unknown_names
from dcmsortd.rules.ops import MISSING, RuleRef, TagTest, as_text

DEFAULT_RULES: Final = "data/default_rules.json"
CLASSIFY_TYPE: Final = "ClassifyType"
_SHOWN_CHARS: Final = 200
MEMO_ENTRIES: Final = 4096


@dataclass(frozen=True)
class Classification:
    """A series' types after one more image, and the SeriesLevel types it can never get."""

    types: list[str]
    vetoed: frozenset[str]


@dataclass(frozen=True)
class EntryReport:
    """How one entry came out: ``test`` describes it, ``found`` the value it saw.

    ``number`` counts from 1, as in every message about rules files.
    """

    number: int
    held: bool
    test: str
    found: str


@dataclass(frozen=True)
class RuleReport:
    """How one rule came out for an image; ``number`` counts from 1 in file order."""

    number: int
    id: str | None
    type: str
    series_level: bool
    held: bool
    vetoed: bool  # a SeriesLevel type that some image failed: it never comes back
    entries: tuple[EntryReport, ...]

    @property
    def failed(self) -> EntryReport | None:
        """The first entry that did not hold, if any."""
        return next((entry for entry in self.entries if not entry.held), None)

    def summary(self) -> str:
        """One line: holds, vetoed, or the first failing entry and the value it found."""
        name = f"rule {self.number} ({self.id or 'no id'}) -> {self.type!r}"
        if self.vetoed:
            return f"{name}: vetoed (a SeriesLevel rule failed for an image of this series)"
        failed = self.failed
        if failed is None:
            return f"{name}: holds"
        return f"{name}: fails at entry {failed.number}: {failed.test}; found {failed.found}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class _Evaluation:
    """The rules applied to one image: its values, the live list of types, a result cache."""

    __slots__ = ("rules", "record", "values", "types", "cache")

    def __init__(self, rules: tuple[CompiledRule, ...], record: Mapping[str, Any],
                 values: Mapping[TagKey, RuleValue], types: list[str]) -> None:
        self.rules = rules
        self.record = record
        self.values = values
        self.types = types
        self.cache: dict[int, bool] = {}  # results of rules that do not read the types

    def get(self, key: TagKey) -> Any:
        """The value of a tag for this image, or MISSING; names read the record first."""
        if isinstance(key, str):
            if key == CLASSIFY_TYPE:
                return self.types
            found = self.record.get(key)
            if found is not None:
                return found
        found = self.values.get(key)
        return MISSING if found is None else found

    def rule_holds(self, index: int) -> bool:
        rule = self.rules[index]
        if not rule.reads_types:
            cached = self.cache.get(index)
            if cached is not None:
                return cached
        held = True
        for entry in rule.entries:
            if not self.entry_holds(entry):
                held = False
                break
        if not rule.reads_types:
            self.cache[index] = held
        return held

    def entry_holds(self, entry: TagTest | RuleRef) -> bool:
        if isinstance(entry, RuleRef):
            return self.rule_holds(entry.target) != entry.negate
        other = MISSING if entry.value_tag is None else self.get(entry.value_tag)
        return entry.holds(self.get(entry.tag), other)


@dataclass(frozen=True)
class RuleSet:
    """Checked, compiled rules; immutable and picklable.

    ``warnings``: what the loader tolerated (ids several rules share, keys it does not
    know) and things that are valid but almost certainly wrong (a ``["Name"]`` tag that
    no dataset or record can hold); ``dcmsortd test`` shows them, the daemon and the
    import/catch-up commands log them (:func:`log_warnings`).
    """

    source: str
    rules: tuple[CompiledRule, ...]
    warnings: tuple[str, ...] = ()
    _keys: frozenset[TagKey] = field(init=False, repr=False, compare=False)
    _key_order: tuple[TagKey, ...] = field(init=False, repr=False, compare=False)
    _memo: dict[Any, Classification] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = {key for rule in self.rules for entry in rule.entries
                if isinstance(entry, TagTest) for key in (entry.tag, entry.value_tag)
                if key is not None}
        object.__setattr__(self, "_keys", frozenset(keys))
        object.__setattr__(self, "_key_order", tuple(sorted(keys, key=repr)))
        object.__setattr__(self, "_memo", {})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_memo"] = {}  # a cache: not worth sending to a worker process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def tag_keys(self) -> frozenset[TagKey]:
        """Every tag the rules read (in ``tag`` or as a tag-valued ``value``), canonical."""
        return self._keys

    def classify(self, record: Mapping[str, Any], values: Mapping[TagKey, RuleValue],
                 current: Sequence[str], vetoed: Collection[str]) -> Classification:
        """The series' types after this image (``current``: its types so far).

        The outcome depends only on the values the rules read (each ``tag``: the record's
        value for a name, else the image's), the current types and the vetoed ones; most
        images of a series agree on all of them, so outcomes are remembered by those.
        """
        memo_key = self._memo_key(record, values, current, vetoed)
        if memo_key is not None:
            found = self._memo.get(memo_key)
            if found is not None:
                return Classification(list(found.types), found.vetoed)
        result = self._classify(record, values, current, vetoed)
        if memo_key is not None:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[memo_key] = Classification(list(result.types), result.vetoed)
        return result

    def _memo_key(self, record: Mapping[str, Any], values: Mapping[TagKey, RuleValue],
                  current: Sequence[str], vetoed: Collection[str]) -> Any:
        """What ``classify``'s outcome depends on, hashable; None when it cannot be."""
        seen: list[Any] = []
        for key in self._key_order:
            found = record.get(key) if isinstance(key, str) else None
            if found is None:
                found = values.get(key)
            # text (most values) as is: no tuple of _hashable() equals a str
            seen.append(found if type(found) is str else _hashable(found))
        memo_key = (tuple(seen), tuple(current), frozenset(vetoed))
        try:
            hash(memo_key)
        except TypeError:
            return None
        return memo_key

    def _classify(self, record: Mapping[str, Any], values: Mapping[TagKey, RuleValue],
                  current: Sequence[str], vetoed: Collection[str]) -> Classification:
        vetoes = set(vetoed)
        types = [kind for kind in dict.fromkeys(current) if kind not in vetoes]
        evaluation = _Evaluation(self.rules, record, values, types)
        for _ in range(2 * len({rule.type for rule in self.rules}) + 1):
            if not self._one_pass(evaluation, vetoes):
                break
        return Classification(list(types), frozenset(vetoes))

    def _one_pass(self, evaluation: _Evaluation, vetoed: set[str]) -> bool:
        """Apply every rule once, in file order; True when a reader of the types is stale.

        A rule that reads ClassifyType saw the types as they were at its turn; when a later
        rule changes them, another pass makes the result a fixed point, so that sending the
        same image again changes nothing.
        """
        types = evaluation.types
        changes = 0
        first_read: int | None = None
        for rule in self.rules:
            if rule.type in vetoed:
                continue
            if rule.reads_types and first_read is None:
                first_read = changes
            if evaluation.rule_holds(rule.index):
                if rule.type not in types:
                    types.append(rule.type)
                    changes += 1
            elif rule.series_level:
                vetoed.add(rule.type)
                changes += 1
                if rule.type in types:
                    types.remove(rule.type)
        return first_read is not None and first_read < changes

    def explain(self, record: Mapping[str, Any], values: Mapping[TagKey, RuleValue],
                current: Sequence[str], vetoed: Collection[str]) -> list[RuleReport]:
        """Every rule's outcome for this image, judged on the types ``classify`` ends with."""
        result = self.classify(record, values, current, vetoed)
        evaluation = _Evaluation(self.rules, record, values, list(result.types))
        reports = []
        for rule in self.rules:
            entries = tuple(self._report_entry(evaluation, entry) for entry in rule.entries)
            reports.append(RuleReport(rule.index + 1, rule.id, rule.type, rule.series_level,
                                      all(entry.held for entry in entries),
                                      rule.type in result.vetoed, entries))
        return reports

    def _report_entry(self, evaluation: _Evaluation, entry: TagTest | RuleRef) -> EntryReport:
        held = evaluation.entry_holds(entry)
        if isinstance(entry, RuleRef):
            found = "it holds"
            if not evaluation.rule_holds(entry.target):
                found = f"it fails at {self._first_failure(evaluation, self.rules[entry.target])}"
            return EntryReport(entry.index + 1, held, entry.describe(), found)
        found = _shown(evaluation.get(entry.tag))
        if entry.value_tag is not None:
            found += f" (value tag: {_shown(evaluation.get(entry.value_tag))})"
        return EntryReport(entry.index + 1, held, entry.describe(), found)

    def _first_failure(self, evaluation: _Evaluation, rule: CompiledRule) -> str:
        for entry in rule.entries:
            if not evaluation.entry_holds(entry):
                if isinstance(entry, RuleRef):
                    return f"entry {entry.index + 1}: {entry.describe()}"
                return f"entry {entry.index + 1}: {entry.describe()}, found " + _shown(
                    evaluation.get(entry.tag))
        return "no entry"

    def resolved(self) -> list[dict[str, Any]]:
        """The rules as JSON-able data, defaults filled in, references expanded."""
        return [self._rule_json(rule) for rule in self.rules]

    def _rule_json(self, rule: CompiledRule) -> dict[str, Any]:
        out: dict[str, Any] = {"type": rule.type}
        if rule.id is not None:
            out["id"] = rule.id
        if rule.description is not None:
            out["description"] = rule.description
        if rule.series_level:
            out["check"] = "SeriesLevel"
        out["rules"] = [self._entry_json(entry) for entry in rule.entries]
        return out

    def _entry_json(self, entry: TagTest | RuleRef) -> dict[str, Any]:
        if isinstance(entry, TagTest):
            return entry.as_json()
        target = self.rules[entry.target]
        return {"notrule" if entry.negate else "rule": entry.target_id,
                "expanded": [self._entry_json(inner) for inner in target.entries]}


def _hashable(value: Any) -> Any:
    """``value`` as a hashable key that tells 1, 1.0, True and "1" apart."""
    if isinstance(value, list | tuple):
        return (list, tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _hashable(v)) for k, v in value.items()))
    return (type(value), value)


def _shown(value: Any) -> str:
    if value is MISSING:
        return "absent"
    text = repr(as_text(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def parse_rules(text: str, source: str, strict: bool = False) -> RuleSet:
    """Compile rules from JSON text; raise RulesError listing every problem.

    ``strict``: ids several rules share and unknown keys are problems, not warnings.
    """
    loaded = compile_rules(text, source, strict)
    return RuleSet(source, loaded.rules, loaded.warnings + unknown_names(loaded.rules))


def load_rules(path: str | os.PathLike[str] | None, strict: bool = False) -> RuleSet:
    """Load a rules file; None means the packaged default rules (see :func:`parse_rules`)."""
    if path is None:
        return default_rules()
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise RulesError(source, [f"cannot read the rules file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RulesError(source, [f"not UTF-8 text (byte {exc.start}): {exc.reason}"]) from None
    return parse_rules(text, source, strict)


def log_warnings(rules: RuleSet, log: logging.Logger) -> None:
    """Log each of the rules' warnings once, naming the rules file."""
    for warning in rules.warnings:
        log.warning("%s: %s", rules.source, warning)


def default_rules() -> RuleSet:
    """The rules packaged with dcmsortd, used when no rules file is configured."""
    text = resources.files("dcmsortd").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")
    return parse_rules(text, f"dcmsortd default rules ({DEFAULT_RULES})", strict=True)
