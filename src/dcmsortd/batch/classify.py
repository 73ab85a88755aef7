"""``dcmsortd classify``: what the daemon would write per series, touching nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from dcmsortd.dicom.header import SeriesCache, read_instance
from dcmsortd.model.errors import HeaderError
from dcmsortd.model.notice import Arrival
from dcmsortd.rules.engine import load_rules
from dcmsortd.service.config import Settings
from dcmsortd.sorting.series import SeriesState, apply_instance, new_state

log = logging.getLogger(__name__)


def iter_paths(paths: list[str]) -> Iterator[str]:
    """Files named, and files below folders named, in sorted order (links not followed)."""
    for path in paths:
        if os.path.isdir(path):
            for top, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield os.path.join(top, name)
        else:
            yield path


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, list | tuple):
        return [_plain(x) for x in obj]
    if isinstance(obj, frozenset | set):
        return sorted(_plain(x) for x in obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def classify_paths(settings: Settings, paths: list[str], explain: bool) -> int:
    rules = load_rules(settings.rules_path)
    keys = rules.tag_keys()
    cache = SeriesCache()
    series: dict[str, SeriesState] = {}
    explained: dict[str, list[Any]] = {}
    bad = 0
    for path in iter_paths(paths):
        absolute = os.path.abspath(path)
        try:
            inst = read_instance(absolute, keys, cache)
        except HeaderError as exc:
            print(f"{absolute}: {exc}", file=sys.stderr)
            bad += 1
            continue
        arrival = Arrival("unknown", "unknown", "unknown", absolute)
        state = series.setdefault(inst.series_uid, new_state(inst, arrival))
        if explain:
            report = rules.explain(
                state.rules_view(), inst.rule_values, list(state.classify), set(state.vetoed)
            )
            explained.setdefault(inst.series_uid, []).append(
                {"file": absolute, "rules": _plain(report)}
            )
        apply_instance(state, inst, rules)
    for uid, state in series.items():
        out: dict[str, Any] = {"SeriesInstanceUID": uid, "record": state.record(),
                               "ClassifyType": state.classify}
        if explain:
            out["explain"] = explained.get(uid, [])
        print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return 0 if not bad or series else 1
