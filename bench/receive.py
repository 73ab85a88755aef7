"""Receive benchmark: dcmtk storescu -> storescp -> dcmsortd, end to end, in one run.

For each receiver configuration, per round (rounds interleave the configurations), a fresh
data folder: storescp (FIONA's options ``--fork -aet FIONA -od ARCHIVE --sort-on-study-uid
scp_``, TCP_NODELAY=1) receives the corpus from one storescu association over loopback.

- ``alone``: storescp without an exec line; timed until storescu is done (every file stored);
- ``echo``: the classic line ``echo '#a,#c,#r,#p,#f' > PIPE`` and ``dcmsortd run``;
- ``journal``: exactly the command ``dcmsortd storescp-command --hookup journal`` prints
  (a per-file line appends to the arrivals journal) and ``dcmsortd run``;
- ``log`` (the recommended way): exactly the command ``dcmsortd storescp-command`` prints
  (storescp's own logger writes the receiver log; no command per file) and ``dcmsortd run``;
- ``notify`` (only with ``--with-notify``: slow): ``dcmsortd notify '#a,#c,#r,#p,#f'``.

With a daemon, the time runs from storescu's start until every file is linked (its series
folder in ``raw/`` holds all its links, polled every 5 ms); then, untimed, every series
record must show its final NumFiles, else the run fails. CPU per 1 000 files counts
storescp, every process it started (shells, notifiers) and the daemon with its workers:
storescp's group from its start until it is stopped and reaped (RUSAGE_CHILDREN), the daemon
in the timed window (/proc); storescu's own CPU is shown apart, not counted. Medians of
``--rounds``; ratios to the receiver-alone rate and to the echo line's CPU of the same run.
Example: ``python bench/receive.py --files 600 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from corpus import Corpus, generate, plan_mix
from runners import (
    BenchError,
    RecordWatch,
    become_subreaper,
    dcmsortd_command,
    link_probe,
    log_tail,
    start,
    stop,
    tree_cpu,
)

CONFIGS = ("alone", "echo", "journal", "log")
LABELS = {
    "alone": "storescp alone, no exec line",
    "echo": "classic line `echo ... > pipe` + dcmsortd run",
    "journal": "`storescp-command --hookup journal` (a shell per file) + dcmsortd run",
    "log": "recommended: `storescp-command` (receiver log) + dcmsortd run",
    "notify": "line `dcmsortd notify ...` + dcmsortd run",
}
TARGET_RATE = 0.67  # the recommended way, x the receiver-alone files/s
TARGET_CPU = 2.0  # the recommended way's CPU per file, at most x the echo line's
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class Result:
    config: str
    round: int
    seconds: float
    files: int
    cpu_s: float  # storescp and its children, plus the daemon tree, in the timed window
    storescu_cpu_s: float
    daemon_cpu_s: float  # the daemon tree's share of cpu_s
    sent_s: float  # until storescu was done (every file stored and answered)

    @property
    def rate(self) -> float:
        return self.files / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000 / self.files


def dcmtk(name: str) -> str:
    """dcmtk's tool by its system path (pynetdicom installs same-named scripts)."""
    for candidate in (f"/usr/bin/{name}", shutil.which(name)):
        if candidate and os.path.exists(candidate):
            return candidate
    raise BenchError(f"dcmtk's {name} is not installed (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"storescp exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise BenchError(f"storescp did not listen on port {port} within {timeout} s")


def _entries(folder: str) -> int:
    try:
        with os.scandir(folder) as found:
            return sum(1 for _ in found)
    except FileNotFoundError:
        return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Round:
    """One configuration's run in its own data folder under ``base``."""

    def __init__(self, base: str, config: str, args: argparse.Namespace) -> None:
        self.base, self.config, self.args = base, config, args
        self.datadir = os.path.join(base, "data")
        self.archive = os.path.join(self.datadir, "site", "archive")
        os.makedirs(self.archive)
        self.conf = os.path.join(base, "config.json")
        with open(self.conf, "w", encoding="utf-8") as fh:
            fh.write("{}")
        self.pipe = os.path.join(base, "pipe")
        self.port = free_port()
        self.paths = ["--config", self.conf, "--datadir", self.datadir, "--pipe", self.pipe,
                      "--pid-dir", base, "--log-dir", base]

    def receiver_argv(self) -> list[str]:
        storescp = dcmtk("storescp")
        plain = [storescp, "--fork", "-aet", "FIONA", "-od", self.archive,
                 "--sort-on-study-uid", "scp_"]
        if self.config == "alone":
            return [*plain, str(self.port)]
        if self.config == "echo":
            return [*plain, "--exec-on-reception",
                    f"echo '#a,#c,#r,#p,#f' > {shlex.quote(self.pipe)}", str(self.port)]
        if self.config == "notify":
            cli = " ".join(shlex.quote(w) for w in [*dcmsortd_command(), "notify", *self.paths])
            return [*plain, "--exec-on-reception", f"{cli} '#a,#c,#r,#p,#f'", str(self.port)]
        printed = subprocess.run(
            [*dcmsortd_command(), "storescp-command", *self.paths, "--port", str(self.port),
             "--aet", "FIONA", "--archive", self.archive, "--hookup", self.config],
            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        return ["/bin/bash", "-c", "exec " + printed]  # exactly the printed line

    def start_daemon(self) -> subprocess.Popen[bytes]:
        cmd = [*dcmsortd_command(), "run", *self.paths, "--no-catch-up",
               "--workers", str(self.args.workers)]
        proc = start(cmd, os.path.join(self.base, "run.out"))
        deadline = time.monotonic() + 60
        while not os.path.exists(self.pipe):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise BenchError(f"dcmsortd run did not start:\n"
                                 f"{log_tail(os.path.join(self.base, 'run.out'))}")
            time.sleep(0.02)
        return proc

    def run(self, corpus: Corpus, index: int) -> Result:
        daemon = None if self.config == "alone" else self.start_daemon()
        try:
            return self._receive(corpus, index, daemon)
        finally:
            if daemon is not None:
                stop(daemon)

    def _receive(self, corpus: Corpus, index: int,
                 daemon: subprocess.Popen[bytes] | None) -> Result:
        argv = self.receiver_argv()
        if self.config not in ("journal", "log"):  # the printed line sets it itself
            argv = ["/usr/bin/env", "TCP_NODELAY=1", *argv]
        cpu_children = _children_cpu()
        receiver = start(argv, os.path.join(self.base, "storescp.out"))
        try:
            _wait_listening(self.port, receiver)
            daemon_cpu = tree_cpu(daemon.pid)[0] if daemon is not None else 0.0
            started = time.monotonic()
            sender = subprocess.Popen(
                [dcmtk("storescu"), "-aet", "SCANNER", "-aec", "FIONA", "127.0.0.1",
                 str(self.port), *(f.path for f in corpus.files)],
                env=NODELAY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(sender.pid, 0)
            sender.returncode = os.waitstatus_to_exitcode(status)
            storescu_cpu = usage.ru_utime + usage.ru_stime
            sent = time.monotonic() - started
            if sender.returncode != 0:
                err = sender.stderr.read().decode(errors="replace") if sender.stderr else ""
                raise BenchError(f"storescu failed ({sender.returncode}): {err[-2000:]}")
            if daemon is not None:
                self._wait_linked(corpus, daemon)
            seconds = time.monotonic() - started
            if daemon is not None:
                daemon_cpu = tree_cpu(daemon.pid)[0] - daemon_cpu
                self._wait_sorted(corpus, daemon)
        finally:
            stop(receiver, grace=5.0)
        storescp_cpu = _children_cpu() - cpu_children - storescu_cpu
        return Result(self.config, index, seconds, len(corpus.files),
                      storescp_cpu + daemon_cpu, storescu_cpu, daemon_cpu, sent)

    def _wait_linked(self, corpus: Corpus, daemon: subprocess.Popen[bytes]) -> None:
        """Until every file has its link in ``raw/<study>/<series>/`` (what is timed)."""
        raw = os.path.join(self.datadir, "site", "raw")
        pending = {os.path.join(raw, study, series): n
                   for (study, series), n in corpus.expected.items()}
        deadline = time.monotonic() + self.args.timeout
        while pending:
            for folder, want in list(pending.items()):
                if _entries(folder) >= want:
                    del pending[folder]
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.config}: {len(pending)} series folder(s) not complete\n"
                                 f"{log_tail(os.path.join(self.base, 'run.out'))}")
            time.sleep(0.005)

    def _wait_sorted(self, corpus: Corpus, daemon: subprocess.Popen[bytes]) -> None:
        """Until every series record shows its final NumFiles (checked, not timed)."""
        watch = RecordWatch(corpus.record_paths(os.path.join(self.datadir, "site")))
        deadline = time.monotonic() + self.args.timeout
        while not watch.poll():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.config}: {watch.describe()}\n"
                                 f"{log_tail(os.path.join(self.base, 'run.out'))}")
            time.sleep(0.02)


def _table(results: list[Result], configs: Sequence[str]) -> tuple[str, dict[str, Any]]:
    by = {c: [r for r in results if r.config == c] for c in configs}
    rate = {c: statistics.median(r.rate for r in rs) for c, rs in by.items()}
    cpu = {c: statistics.median(r.cpu_per_1000 for r in rs) for c, rs in by.items()}
    alone = {r.round: r.rate for r in by["alone"]}
    by_round = {c: [r.rate / alone[r.round] for r in rs] for c, rs in by.items()}
    rows = ["| receiver configuration | files/s | x storescp alone | CPU s per 1 000 files "
            "| x echo line CPU | x alone, round by round |", "|---|---|---|---|---|---|"]
    for c in configs:
        rounds = " ".join(f"{x:.2f}" for x in by_round[c])
        echo_cpu = f"{cpu[c] / cpu['echo']:.2f}" if "echo" in cpu else "-"
        rows.append(f"| {LABELS[c]} | {rate[c]:.0f} | {rate[c] / rate['alone']:.2f} | "
                    f"{cpu[c]:.2f} | {echo_cpu} | {rounds} |")
    summary = {"rate": rate, "cpu_per_1000": cpu,
               "ratio_by_round": {c: statistics.median(v) for c, v in by_round.items()}}
    return "\n".join(rows), summary


def _verdict(summary: dict[str, Any]) -> list[str]:
    rate, cpu = summary["rate"], summary["cpu_per_1000"]
    if not {"alone", "echo", "log"} <= set(rate):
        return []
    ratio, cpu_ratio = rate["log"] / rate["alone"], cpu["log"] / cpu["echo"]
    by_round = summary["ratio_by_round"]["log"]
    return [f"recommended / storescp alone (files/s): {ratio:.2f} (target >= {TARGET_RATE}): "
            f"{'met' if ratio >= TARGET_RATE else 'NOT met'}; median of the round-by-round "
            f"ratios {by_round:.2f}",
            f"recommended / echo line (CPU per file): {cpu_ratio:.2f} (target <= {TARGET_CPU}):"
            f" {'met' if cpu_ratio <= TARGET_CPU else 'NOT met'}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=600, help="images sent per run (600)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, medians shown (3)")
    parser.add_argument("--workers", type=int, default=1, help="daemon --workers (1)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (1)")
    parser.add_argument("--with-notify", action="store_true",
                        help="also the `dcmsortd notify` line (an interpreter per file: slow)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a run may take before it fails (300)")
    parser.add_argument("--tmpdir", default=None, help="where the temporary folder goes")
    parser.add_argument("--json", default=None, help="also write every run as JSON here")
    args = parser.parse_args(argv)
    configs = CONFIGS + (("notify",) if args.with_notify else ())
    become_subreaper()
    base = tempfile.mkdtemp(prefix="dcmsortd-receive-", dir=args.tmpdir)
    try:
        corpus = generate(os.path.join(base, "source"), plan_mix(args.files,
                          random.Random(args.seed)), args.seed)
        print(f"corpus: {len(corpus.files)} files, {corpus.total_bytes / 1e6:.0f} MB, "
              f"{len(corpus.expected)} series; {args.rounds} round(s); daemon --workers "
              f"{args.workers}", flush=True)
        results: list[Result] = []
        for index in range(args.rounds):
            probe = link_probe(base, corpus.files[0].path)
            print(f"round {index + 1}: one symlink costs {probe:.0f} us now (the daemon makes "
                  "one per file; this kernel's cost varies a lot)", flush=True)
            for config in configs:
                result = Round(os.path.join(base, f"r{index}-{config}"), config, args).run(
                    corpus, index)
                print(f"round {index + 1} {config}: {result.rate:.0f} files/s, "
                      f"{result.cpu_per_1000:.2f} s CPU per 1 000 files (daemon "
                      f"{result.daemon_cpu_s * 1000 / result.files:.2f}, storescu "
                      f"{result.storescu_cpu_s * 1000 / result.files:.2f}); storescu done "
                      f"after {result.sent_s:.2f} s, all linked after {result.seconds:.2f} s",
                      flush=True)
                results.append(result)
                shutil.rmtree(os.path.join(base, f"r{index}-{config}", "data"))
        table, summary = _table(results, configs)
        print(table)
        for line in _verdict(summary):
            print(line)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"results": [asdict(r) for r in results], **summary}, fh, indent=2)
    except BenchError as exc:
        print(f"receive benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
