"""Helpers of the completion tests: hook scripts that note what they got, series to send."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from daemonproc import Site, wait_for
from manyfiles import Corpus, uid, write_series
from realfiles import pydicom_data

# Appends {"argv", "stdin", "env"} to argv[1]. Options after it: --fail-once MARKER (exit 3
# the first time, when MARKER does not exist yet), --sleep S (before noting), --started F
# (append a line to F at once).
HOOK = """\
import json, os, sys, time
args = sys.argv[2:]
opt = {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2)}
if "--started" in opt:
    with open(opt["--started"], "a") as fh:
        fh.write(str(os.getpid()) + "\\n")
event = json.loads(sys.stdin.read())
if "--sleep" in opt:
    time.sleep(float(opt["--sleep"]))
if "--fail-once" in opt and not os.path.exists(opt["--fail-once"]):
    open(opt["--fail-once"], "w").close()
    print("the first run fails", file=sys.stderr)
    sys.exit(3)
got = {"argv": sys.argv[1:], "stdin": event,
       "env": {k: v for k, v in os.environ.items() if k.startswith("DCMSORTD_")}}
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(got) + "\\n")
"""

RULES = [
    {"type": "MR", "rules": [{"tag": ["Modality"], "value": "^MR$"}]},
    {"type": "ABCD-Phantom", "rules": [{"tag": ["SeriesDescription"], "value": "Phantom"}]},
]


def hook(tmp_path: Path, on: str, out: str, *opts: str, **more: Any) -> dict[str, Any]:
    script = tmp_path / "hook.py"
    if not script.exists():
        script.write_text(HOOK)
    return {"on": on, "run": [sys.executable, str(script), str(tmp_path / out), *opts], **more}


def completion_site(tmp_path: Path, hooks: list[dict[str, Any]], **settings: Any) -> Site:
    rules = tmp_path / "classifyRules.json"
    rules.write_text(json.dumps(RULES))
    return Site(tmp_path, config={"dcmsortd": {"hooks": hooks, "rules": str(rules),
                                               **settings}})


def got(tmp_path: Path, out: str) -> list[dict[str, Any]]:
    path = tmp_path / out
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_got(tmp_path: Path, out: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    return list(wait_for(lambda: len(got(tmp_path, out)) >= count and got(tmp_path, out),
                         timeout, f"{count} run(s) of the hook noting into {out}"))


def journal(site: Site, deliveries: bool = False) -> list[dict[str, Any]]:
    path = site.site / ".dcmsortd" / f"events{site.project}.jsonl"
    if not path.exists():
        return []
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [i for i in items if deliveries or "delivery" not in i]


def series(corpus: Corpus, study: int, number: int, count: int, patient: str,
           description: str = "T1", first: int = 1) -> list[Path]:
    tags = {"PatientID": patient, "StudyDate": "20240102", "StudyTime": "101010",
            "SeriesDescription": description}
    return write_series(corpus, pydicom_data("MR_small.dcm"), uid(study),
                        uid(study, number), count, tags, first=first)


def lines(paths: list[Path]) -> list[bytes]:
    return [f"SCANNER,FIONA,127.0.0.1,{p.parent},{p.name}\n".encode() for p in paths]
