"""The benchmark script runs end to end on a tiny corpus (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


@pytest.mark.slow
def test_bench_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(BENCH), "--files", "60", "--repeat", "1", "--only", "ref,import",
           "--tmpdir", str(tmp_path), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratio import --workers 1 / reference loop: " in done.stdout
    assert "ratio import --workers 2 / reference loop: " in done.stdout
    results = json.loads(out.read_text())
    assert results["corpus"]["files"] == 60
    assert set(results["results"]) >= {"reference loop", "import --workers 1",
                                       "import --workers 2"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # temp folder removed
