"""Run short Python programs in real child processes, with dcmsortd importable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dcmsortd

SRC = str(Path(dcmsortd.__file__).resolve().parents[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return env


def _argv(code: str, args: tuple[object, ...]) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def run_py(code: str, *args: object, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``args`` as sys.argv[1:]; wait for it and capture its output."""
    return subprocess.run(
        _argv(code, args), env=_env(), capture_output=True, text=True, timeout=timeout
    )


def start_py(code: str, *args: object, capture: bool = True) -> subprocess.Popen[str]:
    """Start ``code`` with ``args``; stdout is a text pipe when ``capture``, else inherited."""
    stdout = subprocess.PIPE if capture else None
    return subprocess.Popen(_argv(code, args), env=_env(), stdout=stdout, text=True)
