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


def test_bench_stops_at_once_when_dcmsortd_cannot_run(tmp_path: Path) -> None:
    """An interpreter without dcmsortd importable: exit 2 with the reason, no corpus made."""
    runner = tmp_path / "bin" / "python"
    runner.parent.mkdir()
    # the same interpreter, but dcmsortd's import fails (as in a venv it was not installed in)
    runner.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import dcmsortd_missing' \"$@\"\n")
    runner.chmod(0o755)
    cmd = [sys.executable, "-c",
           "import sys, runpy; sys.executable = sys.argv[1]; sys.argv = sys.argv[2:]; "
           f"sys.path.insert(0, {str(BENCH.parent)!r}); runpy.run_path(sys.argv[0], "
           "run_name='__main__')", str(runner), str(BENCH), "--files", "60", "--tmpdir",
           str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "dcmsortd cannot run" in done.stderr
    assert "dcmsortd_missing" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no corpus folder


RECEIVE = BENCH.parent / "receive.py"


@pytest.mark.e2e
def test_the_receive_benchmark_runs_on_a_few_files(tmp_path: Path) -> None:
    """storescu -> storescp -> dcmsortd for the four receiver configurations, one round."""
    from daemonproc import dcmtk_tool

    dcmtk_tool("storescp")
    dcmtk_tool("storescu")
    out = tmp_path / "receive.json"
    cmd = [sys.executable, str(RECEIVE), "--files", "30", "--rounds", "1", "--tmpdir",
           str(tmp_path), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| storescp alone, no exec line |" in done.stdout
    assert "recommended / storescp alone (files/s): " in done.stdout
    results = json.loads(out.read_text())
    assert {r["config"] for r in results["results"]} == {"alone", "echo", "journal", "log"}
    assert all(r["files"] == 30 and r["seconds"] > 0 and r["cpu_s"] > 0
               for r in results["results"])
    assert [p.name for p in tmp_path.iterdir()] == ["receive.json"]  # temp folder removed


NOTIFY = BENCH.parent / "notify.py"


def test_the_notify_benchmark_runs_a_few_calls() -> None:
    """Interpreter alone, the quick path into a listening pipe, the spooling full command."""
    done = subprocess.run([sys.executable, str(NOTIFY), "--calls", "2"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for kind in ("interpreter alone", "notify into a listening pipe (quick path)",
                 "notify with no daemon (full command, spooled)"):
        assert f"{kind}" in done.stdout and "ms wall (2 calls)" in done.stdout
    assert "above the interpreter's own start" in done.stdout
