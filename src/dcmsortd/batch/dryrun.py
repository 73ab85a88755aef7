"""``dcmsortd import --dry-run``: read every header and report what an import would do.

Nothing is written: no folder, no link, no record, no index, no deletion. The planned
paths come from the same layout planner as the real run, and the modality policy is the
Sorter's, so the report names the series records an import would create or extend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from dcmsortd.batch.progress import Progress
from dcmsortd.batch.tally import Tally, reason
from dcmsortd.batch.walk import WalkStats, arrival, count, distinct_tops, output_folders, walk
from dcmsortd.model.errors import RejectedInput
from dcmsortd.rules.engine import RuleSet
from dcmsortd.service.config import Settings
from dcmsortd.sorting.layout import plan
from dcmsortd.sorting.processor import Examined, Examiner, under

log = logging.getLogger(__name__)

MAX_SERIES_LINES = 50


@dataclass
class SeriesPlan:
    """One series an import would create or extend."""

    record: str  # path of its record, relative to the data folder
    modality: str
    description: str
    exists: bool  # the record is on disk already
    files: int = 0
    linked: int = 0  # files whose link exists already

    def line(self) -> str:
        state = "extends" if self.exists else "new"
        return (f"  {self.record}: {self.files} file(s), {self.files - self.linked} not linked "
                f"yet; {self.modality or '(no modality)'} {self.description!r} ({state})")


@dataclass
class DryReport:
    roots: list[str]
    walk: WalkStats = field(default_factory=WalkStats)
    tally: Tally = field(default_factory=Tally)
    series: dict[str, SeriesPlan] = field(default_factory=dict)

    def lines(self) -> list[str]:
        plans = sorted(self.series.values(), key=lambda p: p.record)
        studies = {os.path.dirname(p.record) for p in plans}
        linked = sum(p.linked for p in plans)
        out = [
            f"dry run of {', '.join(self.roots)}: nothing written; "
            f"{self.walk.files} file(s) found",
            f"would sort {self.tally.counts['sorted']} file(s) ({linked} linked already) into "
            f"{len(plans)} series ({sum(not p.exists for p in plans)} new) of "
            f"{len(studies)} stud(ies)",
        ]
        out += [p.line() for p in plans[:MAX_SERIES_LINES]]
        if len(plans) > MAX_SERIES_LINES:
            out.append(f"  ... and {len(plans) - MAX_SERIES_LINES} more series")
        out += self.tally.lines(sorted_label="would sort", skipped_label="would skip")
        return out + self.walk.lines()


def would(settings: Settings, ex: Examined) -> str:
    """The outcome the Sorter would give ``ex`` (without filing or deleting anything)."""
    if ex.instance is None:
        return "rejected" if isinstance(ex.error, RejectedInput) else "bad"
    wanted = settings.modalities
    if wanted is None or ex.instance.modality.upper() in wanted:
        return "sorted"
    if settings.other_modalities != "delete":
        return "ignored"
    roots = tuple(os.path.realpath(r) for r in settings.roots())
    return "deleted" if under(os.path.realpath(ex.arrival.path), roots) else "rejected"


def _account(settings: Settings, report: DryReport, ex: Examined) -> None:
    assert ex.instance is not None
    where = plan(settings.site, ex.instance, ex.arrival)
    key = os.path.relpath(where.record, settings.datadir)
    entry = report.series.get(key)
    if entry is None:
        entry = SeriesPlan(key, ex.instance.modality,
                           ex.instance.fields.get("SeriesDescription", ""),
                           os.path.exists(where.record))
        report.series[key] = entry
    entry.files += 1
    entry.linked += os.path.lexists(where.link)


def plan_import(settings: Settings, rules: RuleSet, paths: list[str],
                terminal: bool = False) -> DryReport:
    """Examine every file under ``paths`` (in import order) and tally what would happen."""
    report = DryReport(distinct_tops(paths))
    examiner = Examiner(settings.roots() + tuple(report.roots))
    keys = rules.tag_keys()
    skip = output_folders(settings.site)
    total = count(report.roots, skip, terminal)
    with Progress("dry run", total, terminal) as progress:
        for entry in walk(report.roots, skip, report.walk, lstat=False):
            ex = examiner(arrival(entry.path), keys)
            outcome = would(settings, ex)
            report.tally.add(outcome, entry.path, *reason(ex, outcome))
            if outcome == "sorted":
                _account(settings, report, ex)
            progress.advance()
    return report


def dry_run(settings: Settings, rules: RuleSet, paths: list[str], terminal: bool) -> int:
    report = plan_import(settings, rules, paths, terminal)
    for line in report.lines():
        log.info("%s", line)
    return 1 if report.walk.errors else 0
