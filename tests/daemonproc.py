"""Run the real dcmsortd CLI in child processes, and wait for what it writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-c", "from dcmsortd.cli.main import main_entry; main_entry()"]


def dcmtk_tool(name: str) -> str:
    """Path of dcmtk's ``name`` (not pynetdicom's same-named script); skip or fail without."""
    for candidate in (f"/usr/bin/{name}", shutil.which(name)):
        if not candidate or not os.path.exists(candidate):
            continue
        out = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if "dcmtk" in out.stdout.lower():
            return candidate
    reason = f"dcmtk's {name} is not installed (apt-get install dcmtk)"
    if os.environ.get("DCMSORTD_REQUIRE_DCMTK"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)


def is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@dataclass
class Site:
    """A data folder, pipe, pid and log folders for one test daemon."""

    root: Path
    project: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.datadir = self.root / "data"
        self.archive = self.datadir / "site" / "archive"
        self.archive.mkdir(parents=True, exist_ok=True)
        self.pipe = self.root / "pipe"
        self.pid_dir = self.root / "pids"
        self.log_dir = self.root / "logs"
        self.config_file = self.root / "config.json"
        self.write_config()

    def write_config(self) -> None:
        self.config_file.write_text(json.dumps(self.config))

    @property
    def site(self) -> Path:
        return self.datadir / "site"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"processSingleFile{self.project}.log"

    @property
    def pid_file(self) -> Path:
        return self.pid_dir / f"processSingleFile{self.project}.pid"

    def args(self, *extra: str) -> list[str]:
        out = ["--config", str(self.config_file), "--datadir", str(self.datadir),
               "--pipe", str(self.pipe), "--pid-dir", str(self.pid_dir),
               "--log-dir", str(self.log_dir)]
        if self.project:
            out += ["--project", self.project]
        return out + list(extra)

    def cli(
        self, command: str, *extra: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, command, *self.args(*extra)], capture_output=True,
                              text=True, timeout=timeout)

    def start_run(self, *extra: str) -> subprocess.Popen[str]:
        """``dcmsortd run`` as a child; returns once the pipe exists."""
        proc = subprocess.Popen([*CLI, "run", *self.args(*extra)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(
                lambda: (is_fifo(self.pipe) and self.pid_file.exists()) or proc.poll() is not None,
                15, "the daemon's pipe",
            )
        except AssertionError:
            proc.kill()
            raise
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"dcmsortd run exited with {proc.returncode}:\n{out}")
        return proc

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def records(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in sorted((self.site / "raw").glob("*/*.json")):
            out[str(path.relative_to(self.site))] = json.loads(path.read_text())
        return out

    def snapshot(self) -> dict[str, str]:
        """Every file's bytes (as text) and every link's target under site/, but the
        arrival markers' mtimes and dcmsortd's bookkeeping."""
        snap: dict[str, str] = {}
        for top in ("raw", "participants", "srs", ".arrived"):
            base = self.site / top
            for dirpath, dirnames, filenames in os.walk(base):
                for name in sorted(dirnames + filenames):
                    p = Path(dirpath) / name
                    rel = str(p.relative_to(self.site))
                    if p.is_symlink():
                        snap[rel] = "-> " + os.readlink(p)
                    elif p.is_file():
                        snap[rel] = p.read_text(errors="replace")
                    else:
                        snap[rel] = "<dir>"
        return snap


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the daemon did not stop within {timeout} s:\n{out}") from None
    return proc.returncode, out or ""


class Receiver:
    """dcmtk storescp receiving into ``archive``, announcing each file with ``exec_line``."""

    def __init__(self, archive: Path, exec_line: str, aet: str = "FIONA") -> None:
        self.port = free_port()
        self.aet = aet
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [dcmtk_tool("storescp"), "--fork", "-od", str(archive), "-aet", aet,
             "--exec-on-reception", exec_line, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._listening, 10, "storescp to listen")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def send(self, files: list[Path], calling: str = "SCANNER", timeout: float = 60) -> None:
        out = subprocess.run(
            [dcmtk_tool("storescu"), "-aet", calling, "-aec", self.aet, "127.0.0.1",
             str(self.port), *map(str, files)],
            capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, f"storescu failed: {out.stdout}\n{out.stderr}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
