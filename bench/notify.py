"""Wall time per ``dcmsortd notify`` call, beside the interpreter's own start, in one run.

Runs, interleaved, ``--calls`` times each: the interpreter alone (``python -c pass``, the
floor no Python command goes below), ``dcmsortd notify LINE`` into a listening pipe (the quick
path: no settings, no argparse), and ``dcmsortd notify LINE`` with no daemon (the full
command, which spools the line). The console script beside this interpreter is run, as
storescp would run it (else the same entry through ``python -c``). Prints the median wall
time of each and the notify call's time above the interpreter's start.
Example: ``python bench/notify.py --calls 40``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

TARGET_MS = 25.0
LINE = "SCANNER,FIONA,10.0.0.1,/data/site/archive/scp_1.2.3,MR.1.2.3.4"


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="calls of each kind (40)")
    args = parser.parse_args(argv)
    script = os.path.join(os.path.dirname(sys.executable), "dcmsortd")
    launcher = [script] if os.access(script, os.X_OK) else [
        sys.executable, "-c", "from dcmsortd.cli.entry import main_entry; main_entry()"]
    print(f"dcmsortd run as: {' '.join(launcher)}")
    base = tempfile.mkdtemp(prefix="dcmsortd-notify-")
    try:
        fifo = os.path.join(base, "pipe")
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a daemon's end, kept open
        keep = os.open(fifo, os.O_WRONLY)
        config = os.path.join(base, "config.json")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write("{}")
        kinds = {
            "interpreter alone (python -c pass)": [sys.executable, "-c", "pass"],
            "notify into a listening pipe (quick path)":
                [*launcher, "notify", "--config", config, "--pipe", fifo, LINE],
            "notify with no daemon (full command, spooled)":
                [*launcher, "notify", "--config", config, "--datadir", os.path.join(base, "d"),
                 "--pipe", os.path.join(base, "absent"), LINE],
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.calls):
            for kind, command in kinds.items():
                times[kind].append(_timed(command))
            while True:  # empty the pipe as the daemon would
                try:
                    if not os.read(reader, 65536):
                        break
                except BlockingIOError:
                    break
        os.close(keep)
        os.close(reader)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for kind, ms in medians.items():
        print(f"{kind}: median {ms:.1f} ms wall ({args.calls} calls)")
    floor, quick = list(medians.values())[:2]
    print(f"notify into a listening pipe: {quick:.1f} ms (target < {TARGET_MS:.0f} ms: "
          f"{'met' if quick < TARGET_MS else 'NOT met'}); {quick - floor:.1f} ms above the "
          f"interpreter's own start ({floor:.1f} ms here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
