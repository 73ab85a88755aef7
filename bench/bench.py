"""dcmsortd throughput benchmark: the daemon and ``dcmsortd import`` against a bare pydicom loop.

On one generated corpus (see ``corpus.py``), in one invocation, each figure ``--repeat``
times (median reported), a fresh output tree for every run (the archive stays):

- the reference loop: ``pydicom.dcmread(stop_before_pixels=True)`` + one ``os.symlink`` per
  file + each series JSON written once at the end (in this process);
- the daemon end to end: ``dcmsortd run --workers N`` as a subprocess, warmed up with one
  file; a separate process writes every line into the pipe as fast as it is read; timed
  from the first line until every series record on disk shows its final NumFiles;
- ``dcmsortd import --workers N`` of the archive (wall time of the command);
- ``dcmsortd catch-up`` over the archive just imported, against the import time.

Files per second, the ratio to the reference loop and the peak RSS (VmHWM) are printed;
``--scaling`` adds the cost per file at 1 000 / 10 000 / 50 000 files and for one series of
500 versus 5 000 images. Example: ``python bench/bench.py --json bench/out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
from corpus import Corpus, generate, plan_mix, plan_single, write_warmup
from runners import (
    BenchError,
    DaemonSetup,
    Paths,
    Run,
    become_subreaper,
    check_command,
    check_records,
    dcmsortd_command,
    link_probe,
    logged_count,
    reference_loop,
    run_command,
    run_daemon,
)

METHODS = ("ref", "daemon", "import", "catchup")
REF = "reference loop"
CATCHUP = "catch-up of the sorted archive"
TARGET_W1 = 1.0
TARGET_WN = 1.6
CATCHUP_TARGET_FILES = 20_000
TARGET_CATCHUP = 0.05


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _methods(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {','.join(METHODS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000, help="corpus size (default 5000)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--workers-list", type=_ints, default=[1, 2], metavar="N,M",
                   help="worker counts for the daemon and import (default 1,2)")
    p.add_argument("--only", type=_methods, default=list(METHODS), metavar="LIST",
                   help="subset of ref,daemon,import,catchup (default: all)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="also save every run and result as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--warmup", type=int, default=1,
                   help="rounds run first and not counted (default 1): right after the corpus "
                   "is written the file system is slower for a while")
    p.add_argument("--tmpdir", default=None, help="where to make the temporary folder "
                   "(default: the system temp dir; use a local disk)")
    p.add_argument("--lean", action="store_true", help="4x4 pixel matrices in the main "
                   "corpus (headers unchanged; much less disk)")
    p.add_argument("--shared-dicom", type=Path, default=None,
                   help="real scanner files (default ../shared/dicom, if present)")
    p.add_argument("--scaling", action="store_true", help="also the scaling report "
                   "(takes several minutes)")
    p.add_argument("--scaling-sizes", type=_ints, default=[1000, 10000, 50000], metavar="N,M")
    p.add_argument("--series-sizes", type=_ints, default=[500, 5000], metavar="N,M",
                   help="single-series sizes of the scaling report (default 500,5000)")
    p.add_argument("--scaling-repeat", type=int, default=1,
                   help="runs per scaling figure (default 1: the runs are long)")
    return p


# ---------------------------------------------------------------------------- one corpus


@dataclass
class Bench:
    """Runs the figures on one corpus and collects them by label."""

    paths: Paths
    corpus: Corpus
    setup: DaemonSetup
    command: list[str]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    link_probes: list[float] = field(default_factory=list)  # µs per symlink, each round

    @property
    def timeout(self) -> float:
        return self.setup.timeout

    def add(self, run: Run) -> None:
        self.runs.setdefault(run.label, []).append(run)

    def attempt(self, label: str, action: Callable[[], Run]) -> Run | None:
        try:
            run = action()
        except (BenchError, OSError) as exc:
            self.failures.append(str(exc))
            print(f"  {label}: FAILED: {exc}", file=sys.stderr)
            return None
        self.add(run)
        print(f"  {label}: {run.seconds:.2f} s", file=sys.stderr)
        return run

    def reference(self) -> Run:
        self.paths.fresh_outputs()
        seconds, cpu = reference_loop(self.corpus, self.paths.site)
        check_records(self.corpus.record_paths(self.paths.site), REF)
        return Run(REF, seconds, len(self.corpus.files), cpu_s=cpu)

    def daemon(self, workers: int) -> Run:
        self.paths.fresh_outputs()
        return run_daemon(self.setup, self.corpus, workers, f"daemon --workers {workers}")

    def _cmd(self, name: str, extra: Sequence[str]) -> list[str]:
        return [*self.command, name, "--config", self.paths.config, "--datadir",
                self.paths.datadir, "--log-dir", self.paths.log_dir, *extra]

    def import_(self, workers: int) -> Run:
        self.paths.fresh_outputs()
        label = f"import --workers {workers}"
        cmd = self._cmd("import", ["--workers", str(workers), self.corpus.archive])
        run = run_command(label, cmd, self.paths.run_log(label), len(self.corpus.files),
                          self.timeout)
        check_records(self.corpus.record_paths(self.paths.site), label)
        return run

    def catch_up(self) -> Run:
        """Right after an import: everything is sorted, so nothing should be read."""
        cmd = self._cmd("catch-up", [self.corpus.archive])
        log_path = self.paths.run_log(CATCHUP)
        run = run_command(CATCHUP, cmd, log_path, len(self.corpus.files), self.timeout)
        check_records(self.corpus.record_paths(self.paths.site), CATCHUP)
        examined = logged_count(log_path, "examined")
        if examined:
            run.note = f"read {examined} header(s) of already sorted files"
        return run

    def startup(self, name: str) -> Run:
        """The fixed cost of a command: the same command over an empty folder."""
        label = f"{name} start-up"
        cmd = self._cmd(name, [self.paths.empty])
        return run_command(label, cmd, self.paths.run_log(label), 0, self.timeout)

    def median(self, label: str) -> float | None:
        runs = self.runs.get(label)
        return statistics.median(r.seconds for r in runs) if runs else None


def prepare(base: str, planned_files: Callable[[], Corpus], seed: int,
            command: list[str]) -> tuple[Paths, Corpus, DaemonSetup]:
    paths = Paths(base)
    paths.prepare()
    corpus = planned_files()
    warmup = write_warmup(paths.datadir, seed)
    started = time.perf_counter()
    os.sync()
    corpus.seconds += time.perf_counter() - started
    timeout = max(120.0, len(corpus.files) / 20)
    return paths, corpus, DaemonSetup(command, paths, warmup, timeout)


def run_main(args: argparse.Namespace, base: str, command: list[str]) -> Bench:
    def make() -> Corpus:
        planned = plan_mix(args.files, random.Random(args.seed))
        return generate(os.path.join(base, "data"), planned, args.seed, args.shared_dicom,
                        args.lean)

    paths, corpus, setup = prepare(base, make, args.seed, command)
    bench = Bench(paths, corpus, setup, command)
    print(f"corpus: {len(corpus.files)} files in {corpus.seconds:.1f} s", file=sys.stderr)
    bench.attempt("priming (byte-code cache, not counted)", partial(bench.startup, "import"))
    bench.runs.clear()
    only = set(args.only)
    imports = list(args.workers_list) if "import" in only else []
    if "catchup" in only and not imports:
        imports = [args.workers_list[0]]
    for rep in range(-args.warmup, args.repeat):
        if rep == 0:
            bench.runs.clear()  # the warm-up rounds are not counted
        title = f"round {rep + 1}/{args.repeat}" if rep >= 0 else "warm-up round (not counted)"
        probe = link_probe(paths.base, corpus.files[0].path)
        if rep >= 0:
            bench.link_probes.append(probe)
        print(f"{title}; a symlink costs {probe:.0f} µs now", file=sys.stderr)
        if imports:
            bench.attempt("import start-up", partial(bench.startup, "import"))
        if "catchup" in only:
            bench.attempt("catch-up start-up", partial(bench.startup, "catch-up"))
        if "ref" in only:
            bench.attempt(REF, bench.reference)
        for w in args.workers_list if "daemon" in only else []:
            bench.attempt(f"daemon --workers {w}", partial(bench.daemon, w))
        for i, w in enumerate(imports):
            if bench.attempt(f"import --workers {w}", partial(bench.import_, w)) and (
                    i == 0 and "catchup" in only):
                bench.attempt(CATCHUP, bench.catch_up)
    return bench


# ---------------------------------------------------------------------------- results


def _fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def summarize(bench: Bench, workers: Sequence[int]) -> dict[str, Any]:
    """Medians, files/s and ratios (wall, and net of the command's start-up)."""
    ref = bench.median(REF)
    start = {name: bench.median(f"{name} start-up") for name in ("import", "catch-up")}
    out: dict[str, Any] = {}
    for label, runs in bench.runs.items():
        if label.endswith("start-up"):
            continue
        med = statistics.median(r.seconds for r in runs)
        base = start["import"] if label.startswith("import") else (
            start["catch-up"] if label == CATCHUP else None)
        net = med - base if base is not None and med > base else None
        out[label] = {
            "median_s": med,
            "runs_s": [r.seconds for r in runs],
            "files_per_s": runs[0].files / med if med > 0 else None,
            "ratio_to_ref": ref / med if ref and label != CATCHUP else None,
            "net_s": net,
            "ratio_to_ref_net": ref / net if ref and net and label != CATCHUP else None,
            "cpu_ratio_to_ref": None,
            "paired_ratios": _paired(bench.runs.get(REF, []), runs) if label != CATCHUP else [],
            "paired_median": None,
            "rss_main_mb": max((r.rss_main_mb or 0.0) for r in runs) or None,
            "rss_tree_mb": max((r.rss_tree_mb or 0.0) for r in runs) or None,
            "pss_tree_mb": max((r.pss_tree_mb or 0.0) for r in runs) or None,
            "cpu_s": _median([r.cpu_s for r in runs]),
            "cpu_main_s": _median([r.cpu_main_s for r in runs]),
            "start_s": _median([r.start_s for r in runs]),
            "late_early": _median([r.late_early for r in runs]),
            "log_errors": max(r.log_errors for r in runs),
            "notes": sorted({r.note for r in runs if r.note}),
        }
    for r in out.values():
        if len(r["paired_ratios"]) >= 3:
            r["paired_median"] = statistics.median(r["paired_ratios"])
    ref_cpu = out.get(REF, {}).get("cpu_s")
    for label, r in out.items():
        if ref_cpu and r["cpu_s"] and label != CATCHUP:
            r["cpu_ratio_to_ref"] = ref_cpu / r["cpu_s"]
    out["_start_up_s"] = start
    full = bench.median(f"import --workers {workers[0]}")
    catch = bench.median(CATCHUP)
    if full and catch:
        net_full = full - (start["import"] or 0.0)
        net_catch = catch - (start["catch-up"] or 0.0)
        out["_catch_up"] = {
            "catch_up_s": catch, "import_s": full, "share": catch / full,
            "share_net": net_catch / net_full if net_full > 0 and net_catch > 0 else None,
        }
    return out


def _paired(ref: Sequence[Run], runs: Sequence[Run]) -> list[float]:
    """Round by round (the reference and this method ran a minute apart at most)."""
    if len(ref) != len(runs):
        return []
    return [r.seconds / m.seconds for r, m in zip(ref, runs, strict=True) if m.seconds > 0]


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _target(label: str) -> float | None:
    if label == "daemon --workers 1":
        return TARGET_W1
    if label.startswith(("daemon --workers", "import --workers")) and not label.endswith(" 1"):
        return TARGET_WN
    return None


def report(bench: Bench, results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    c = bench.corpus.summary()
    largest = c["largest_series"]
    out = [
        "dcmsortd throughput benchmark",
        f"  corpus : {c['files']} files, {c['bytes'] / 1e6:.0f} MB, {c['studies']} studies, "
        f"{c['patients']} patients, {c['series']} series (largest {c['largest_series']} "
        f"images), seed {args.seed}{', lean' if args.lean else ''}; generated in "
        f"{c['generate_seconds']:.1f} s",
        f"  machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pydicom {pydicom.__version__}, {_dcmsortd_version()}; median of {args.repeat} "
        "run(s); warm page cache",
        "  load   : 1-min load average {:.2f} before, {:.2f} after (other processes on the "
        "machine skew the figures)".format(results["_load_average"]["before"][0],
                                           results["_load_average"]["after"][0]),
        "",
        f"{'method':<32}{'median s':>9}{'files/s':>9}{'x ref':>7}{'x ref net':>10}"
        f"{'CPU s (main)':>14}{'x ref CPU':>10}  {'peak RSS MB main/tree/PSS':<26}{'log err':>8}"
        "  runs (s)",
    ]
    for label, r in results.items():
        if label.startswith("_"):
            continue
        rss = (f"{_fmt(r['rss_main_mb'], '.0f')} / {_fmt(r['rss_tree_mb'], '.0f')}"
               f" / {_fmt(r.get('pss_tree_mb'), '.0f')}" if r["rss_main_mb"] else "-")
        runs = " ".join(f"{s:.2f}" for s in r["runs_s"])
        out.append(f"{label:<32}{r['median_s']:>9.2f}{_fmt(r['files_per_s'], '.0f'):>9}"
                   f"{_fmt(r['ratio_to_ref']):>7}{_fmt(r['ratio_to_ref_net']):>10}"
                   f"{_cpu(r):>14}{_fmt(r['cpu_ratio_to_ref']):>10}  {rss:<26}"
                   f"{r['log_errors']:>8}  {runs}")
    out += ["", "CPU s: user + system seconds of the process tree, median (the daemon: in the "
            "timed window; (main) = its main process, the single writer). x ref CPU: the "
            "reference loop's CPU time over this one's, a view that other load on the machine "
            "skews much less than wall time. Peak RSS: of the main process; summed over the "
            "processes (each counts the pages of numpy, pydicom and nibabel they share); "
            "PSS: the peak of the processes' summed proportional set size (a shared page "
            "counted once), the memory they take together"]
    start = results["_start_up_s"]
    known = [f"{name} {value:.2f} s" for name, value in start.items() if value is not None]
    if known:
        out.append(f"start-up of a command (the same command over an empty folder): "
                   f"{', '.join(known)}; 'net' figures subtract it")
    for label, r in results.items():
        if not label.startswith("_") and r.get("start_s") is not None:
            out.append(f"{label}: launch to warmed up (one file sorted) {r['start_s']:.2f} s, "
                       "not timed")
        if not label.startswith("_") and r.get("late_early") is not None:
            out.append(f"{label}: largest series ({largest} images), time per image in its "
                       f"last 40 % over its first 40 %: {r['late_early']:.2f}x (1 = flat)")
    notes = [f"  {label}: {', '.join(r['notes'])}" for label, r in results.items()
             if not label.startswith("_") and r["notes"]]
    if notes:
        out += ["", "notes:", *notes]
    if bench.link_probes:
        probes = " / ".join(f"{p:.0f}" for p in bench.link_probes)
        out += ["", f"file system: one symlink cost {probes} µs at the start of each round "
                "(both the reference loop and dcmsortd make one per file; the cost varies "
                "with the machine's state, not with the method)"]
    out += ["", "ratios to the reference loop (files/s over files/s, same corpus, same run; with "
            "3 rounds or more the target is judged on the median of the round-by-round "
            "ratios, each method against the reference run of its own round):"]
    out += _ratio_lines(results, len(bench.corpus.files))
    return out


def _cpu(r: dict[str, Any]) -> str:
    if r["cpu_s"] is None:
        return "-"
    main = "" if r["cpu_main_s"] is None else f" ({r['cpu_main_s']:.1f})"
    return f"{r['cpu_s']:.1f}{main}"


def _ratio_lines(results: dict[str, Any], files: int) -> list[str]:
    out = []
    for label, r in results.items():
        if label.startswith("_") or r["ratio_to_ref"] is None or label == REF:
            continue
        line = f"ratio {label} / {REF}: {r['ratio_to_ref']:.2f}x"
        if r["ratio_to_ref_net"] is not None:
            line += f" (net of start-up {r['ratio_to_ref_net']:.2f}x)"
        if len(r["paired_ratios"]) > 1:
            rounds = " ".join(f"{x:.2f}" for x in r["paired_ratios"])
            line += f"; round by round {rounds}"
        judged = r["ratio_to_ref"]
        if r["paired_median"] is not None:
            judged = r["paired_median"]
            line += f", their median {judged:.2f}x"
        target = _target(label)
        if target is not None:
            verdict = "ok" if judged >= target else "BELOW TARGET"
            line += f"  target >= {target:.1f}x: {verdict}"
        out.append(line)
    cu = results.get("_catch_up")
    if cu:
        verdict = "ok" if cu["share"] < TARGET_CATCHUP else "ABOVE TARGET"
        if files < CATCHUP_TARGET_FILES:  # the issue sets it for 20 000 sorted files
            verdict = f"not judged below {CATCHUP_TARGET_FILES} files"
        net = f", net of start-up {cu['share_net'] * 100:.1f} %" if cu["share_net"] else ""
        out.append(f"ratio catch-up / full import: {cu['share'] * 100:.1f} % "
                   f"({cu['catch_up_s']:.2f} s vs {cu['import_s']:.2f} s{net})  "
                   f"target < {TARGET_CATCHUP * 100:.0f} %: {verdict}")
    return out


def _dcmsortd_version() -> str:
    try:
        from importlib.metadata import version

        return f"dcmsortd {version('dcmsortd')}"
    except Exception:  # not installed: the report still works
        return "dcmsortd (version unknown)"


# ---------------------------------------------------------------------------- scaling


def scaling(args: argparse.Namespace, base: str, command: list[str]) -> dict[str, Any]:
    """Cost per file on lean corpora of growing size, and for one series of growing length."""
    only = [m for m in ("ref", "daemon", "import") if m in args.only]
    cases: list[tuple[str, int, bool]] = [(f"mix of {n}", n, False) for n in args.scaling_sizes]
    cases += [(f"one series of {n}", n, True) for n in args.series_sizes]
    rows: dict[str, Any] = {}
    for name, n, single in cases:
        folder = os.path.join(base, f"scaling-{n}-{'series' if single else 'mix'}")

        def make(n: int = n, single: bool = single, folder: str = folder) -> Corpus:
            planned = plan_single(n) if single else plan_mix(n, random.Random(args.seed))
            return generate(os.path.join(folder, "data"), planned, args.seed,
                            args.shared_dicom, lean=True)

        paths, corpus, setup = prepare(folder, make, args.seed, command)
        print(f"scaling: {name} ({corpus.total_bytes / 1e6:.0f} MB)", file=sys.stderr)
        bench = Bench(paths, corpus, setup, command)
        for _ in range(args.scaling_repeat):
            if "import" in only:
                bench.attempt("import start-up", partial(bench.startup, "import"))
                bench.attempt("import --workers 1", partial(bench.import_, 1))
            if "ref" in only:
                bench.attempt(REF, bench.reference)
            if "daemon" in only:
                bench.attempt("daemon --workers 1", partial(bench.daemon, 1))
        rows[name] = _scaling_row(bench, n)
        rows[name]["failures"] = bench.failures
        discard(folder, base)
    return rows


def discard(path: str, base: str) -> None:
    """Move ``path`` into ``base/trash`` (removed with ``base`` at the end, not now: see
    ``Paths.fresh_outputs``)."""
    if os.path.exists(path):
        trash = os.path.join(base, "trash")
        os.makedirs(trash, exist_ok=True)
        os.rename(path, os.path.join(trash, f"{os.path.basename(path)}-{time.monotonic_ns()}"))


def _scaling_row(bench: Bench, n: int) -> dict[str, Any]:
    """Wall and CPU microseconds per file (import: net of its start-up), peak RSS."""
    start = bench.runs.get("import start-up", [])
    start_wall = bench.median("import start-up") or 0.0
    start_cpu = _median([r.cpu_s for r in start]) or 0.0
    row: dict[str, Any] = {"files": n}
    for key, label, wall0, cpu0 in (("ref", REF, 0.0, 0.0),
                                     ("daemon", "daemon --workers 1", 0.0, 0.0),
                                     ("import", "import --workers 1", start_wall, start_cpu)):
        runs = bench.runs.get(label, [])
        wall = bench.median(label)
        cpu = _median([r.cpu_s for r in runs])
        row[f"{key}_us_per_file"] = _per_file(wall, wall0, n)
        row[f"{key}_cpu_us_per_file"] = _per_file(cpu, cpu0, n)
        row[f"{key}_rss_mb"] = max((r.rss_main_mb or 0.0) for r in runs) if runs else None
    row["daemon_late_early"] = _median([r.late_early for r in
                                        bench.runs.get("daemon --workers 1", [])])
    return row


def _per_file(seconds: float | None, offset: float, n: int) -> float | None:
    if seconds is None or seconds - offset <= 0:
        return None
    return (seconds - offset) / n * 1e6


def scaling_report(rows: dict[str, Any]) -> list[str]:
    out = ["", "scaling: microseconds per file, wall / CPU (lean corpora: 4x4 pixel matrices, "
           "headers unchanged; import net of its start-up; the daemon's wall includes the "
           "last record write):",
           f"{'case':<22}{'reference':>14}{'daemon w1':>14}{'import w1':>14}"
           f"{'daemon RSS MB':>15}{'import RSS MB':>15}{'daemon late/early':>19}"]
    for name, r in rows.items():
        cells = [f"{_fmt(r[f'{k}_us_per_file'], '.0f')} / {_fmt(r[f'{k}_cpu_us_per_file'], '.0f')}"
                 for k in ("ref", "daemon", "import")]
        out.append(f"{name:<22}{cells[0]:>14}{cells[1]:>14}{cells[2]:>14}"
                   f"{_fmt(r['daemon_rss_mb'], '.0f'):>15}{_fmt(r['import_rss_mb'], '.0f'):>15}"
                   f"{_fmt(r['daemon_late_early']):>19}")
    series = [r for name, r in rows.items() if name.startswith("one series")]
    if len(series) >= 2:
        small, big = series[0], series[-1]
        growth = {}
        for key in ("ref", "daemon", "import"):
            a, b = small[f"{key}_cpu_us_per_file"], big[f"{key}_cpu_us_per_file"]
            if a and b:
                growth[key] = b / a
        parts = [f"{key} {g:.2f}x" for key, g in growth.items()]
        if "ref" in growth:  # the reference is flat by construction: what moves it is the machine
            parts += [f"{key} relative to the reference {g / growth['ref']:.2f}x"
                      for key, g in growth.items() if key != "ref"]
        out.append(f"flatness: CPU per file, one series of {big['files']} vs {small['files']} "
                   f"images (1.00x = flat): {', '.join(parts)}")
    out.append("daemon late/early: in the largest series, time per image in its last 40 % "
               "over its first 40 %, within one run (1 = flat, ~2.3 = cost growing linearly)")
    return out


# ---------------------------------------------------------------------------- main


def child_environment(base: str) -> None:
    """Children cache their byte code (in the temp folder) as an installed package would.

    Without it (PYTHONDONTWRITEBYTECODE set, as in some sandboxes) every command start-up
    recompiles dcmsortd and its dependencies, which is not what a site sees.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1 or args.files < 1 or args.scaling_repeat < 1:
        print("bench: --files, --repeat and --scaling-repeat must be at least 1", file=sys.stderr)
        return 2
    command = dcmsortd_command()
    broken = check_command(command)
    if broken:
        print(f"bench: dcmsortd cannot run (install it: pip install -e .): {broken}",
              file=sys.stderr)
        return 2
    # SIGTERM must run the finally blocks too: they stop the daemons and remove the data.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    base = tempfile.mkdtemp(prefix="dcmsortd-bench-", dir=args.tmpdir)
    child_environment(base)
    become_subreaper()
    load_before = os.getloadavg()
    try:
        bench = run_main(args, os.path.join(base, "main"), command)
        results = summarize(bench, args.workers_list)
        results["_load_average"] = {"before": load_before, "after": os.getloadavg()}
        lines = report(bench, results, args)
        failures = list(bench.failures)
        data: dict[str, Any] = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "corpus": bench.corpus.summary(), "results": results,
            "runs": {k: [r.as_json() for r in v] for k, v in bench.runs.items()},
            "command": command, "cpus": os.cpu_count(), "python": platform.python_version(),
        }
        if args.scaling:
            discard(os.path.join(base, "main"), base)
            rows = scaling(args, base, command)
            lines += scaling_report(rows)
            data["scaling"] = rows
            failures += [f for r in rows.values() for f in r["failures"]]
        if failures:
            lines += ["", f"FAILED runs: {len(failures)} (details above, on stderr)"]
        print("\n".join(lines))
        if args.json_out:
            os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
            with open(args.json_out, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
        return 1 if failures else 0
    finally:
        if args.keep:
            print(f"kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
