"""The ``hooks`` setting: what to run for which event, checked when the config is read (pure).

A hook is ``{"on": "series" | "study", "run": [argv...], "types": [T...], "timeout": s}``.
``run`` is an argument vector (never a shell); ``types`` (optional) runs the hook only for
an event whose ClassifyType holds one of them; ``timeout`` defaults to 600 seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HOOK_KEYS = ("on", "run", "types", "timeout")
EVENT_OF = {"series": "series-complete", "study": "study-complete"}
DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Hook:
    """One configured command for one kind of event."""

    on: str  # "series" or "study"
    run: tuple[str, ...]
    types: tuple[str, ...] = ()  # empty: every event of its kind
    timeout: float = DEFAULT_TIMEOUT

    @property
    def event(self) -> str:
        return EVENT_OF[self.on]

    @property
    def label(self) -> list[str]:
        """How the journal names the hook: its argument vector."""
        return list(self.run)

    def wants(self, event: Mapping[str, Any]) -> bool:
        """True when this hook runs for ``event`` (its kind, and one of its types if any)."""
        if event.get("event") != self.event:
            return False
        if not self.types:
            return True
        found = event.get("ClassifyType") or []
        return any(t in found for t in self.types)


def parse_hooks(value: Any) -> tuple[Hook, ...]:
    """The ``hooks`` setting checked and converted; ValueError names the hook and the reason."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of hook objects, got {value!r}")
    return tuple(_hook(item, number) for number, item in enumerate(value, start=1))


def _hook(item: Any, number: int) -> Hook:
    where = f"hook {number}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object like "
                         f'{{"on": "series", "run": ["/path/to/cmd"]}}, got {item!r}')
    unknown = sorted(set(item) - set(HOOK_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(HOOK_KEYS)})")
    on = item.get("on")
    if on not in EVENT_OF:
        raise ValueError(f'{where}: "on" must be "series" or "study", got {on!r}')
    run = item.get("run")
    if not isinstance(run, list) or not run or not all(isinstance(a, str) for a in run) \
            or not run[0]:
        raise ValueError(f'{where}: "run" must be a non-empty list of texts (an argument '
                         f"vector, no shell), got {run!r}")
    types = item.get("types", [])
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        raise ValueError(f'{where}: "types" must be a list of non-empty texts, got {types!r}')
    timeout = item.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f'{where}: "timeout" must be a number of seconds above 0, '
                         f"got {timeout!r}")
    return Hook(on=str(on), run=tuple(run), types=tuple(types), timeout=float(timeout))


def hook_env(event: Mapping[str, Any]) -> dict[str, str]:
    """The variables a hook gets besides the daemon's environment."""
    env = {
        "DCMSORTD_EVENT": str(event.get("event", "")),
        "DCMSORTD_STUDY": str(event.get("StudyInstanceUID", "")),
        "DCMSORTD_FOLDER": str(event.get("folder", "")),
    }
    if event.get("event") == EVENT_OF["series"]:
        env["DCMSORTD_SERIES"] = str(event.get("SeriesInstanceUID", ""))
        env["DCMSORTD_RECORD"] = str(event.get("record", ""))
    return env
