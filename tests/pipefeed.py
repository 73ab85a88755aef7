"""Helpers of the hardening tests: raw writes into a daemon's pipe, checksums, log lines."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import warnings
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement

from daemonproc import CLI, Site, is_fifo, stop, wait_for

ERROR_SHAPE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR \[\d+\] "
    r"(?P<input>/[^\n]*?|pipe line [^\n]*?): (?P<reason>\S[^\n]*)$"
)
"""One error line: time, level, [pid], the input (a path, or the pipe line), the reason."""


def line_for(path: Path | str, caller: str = "SCANNER", called: str = "FIONA",
             ip: str = "127.0.0.1") -> bytes:
    """The storescp notification ``caller,called,ip,dir,file`` for ``path``."""
    directory, name = os.path.split(str(path))
    return f"{caller},{called},{ip},{directory},{name}".encode("utf-8", "surrogateescape")


def feed(pipe: Path, lines: Iterable[bytes]) -> None:
    """Write ``lines`` (each gets a newline unless it ends in one) into the FIFO as they are.

    Unlike ``dcmsortd send`` nothing is checked: over-long, non-UTF-8 and CRLF lines go in.
    """
    assert is_fifo(pipe), f"{pipe} is not a FIFO"
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    fd = os.open(pipe, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def linked(site: Site) -> dict[str, str]:
    """``raw/...`` link path (relative to site/) -> its target, for every raw link."""
    raw = site.site / "raw"
    if not raw.is_dir():
        return {}
    return {str(p.relative_to(site.site)): os.readlink(p) for p in raw.rglob("*")
            if p.is_symlink()}


def wait_linked(site: Site, path: Path, timeout: float = 30.0) -> str:
    """Wait until some raw link points at ``path``; return that link (relative to site/)."""
    def found() -> str | None:
        return next((k for k, v in linked(site).items() if v == str(path)), None)

    result: str = wait_for(found, timeout, f"a raw link to {path}")
    return result


def checksums(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every entry below ``root`` (``root`` too): (sha256 of a regular file, a link's target,
    or the kind), mode, owner, mtime_ns."""
    out: dict[str, tuple[str, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            p = Path(dirpath) / name
            if not name and p != root:
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:  # as root: also a file of mode 000
                    what = hashlib.sha256(fh.read()).hexdigest()
            else:
                what = f"<{stat.S_IFMT(st.st_mode):o}>"
            out[str(p.relative_to(root))] = (what, st.st_mode, st.st_uid, st.st_mtime_ns)
    return out


def log_lines_naming(site: Site, text: str) -> list[str]:
    return [line for line in site.log_text().splitlines() if text in line]


def error_lines(site: Site) -> list[str]:
    return [line for line in site.log_text().splitlines() if " ERROR " in line]


def set_raw(path: Path, tag: int, vr: str, value: bytes) -> Path:
    """Rewrite ``path`` with element ``tag`` holding exactly the bytes ``value``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        ds[tag] = DataElement(tag, vr, value)
        ds.save_as(path)
    return path


def run_cli(site: Site, command: str, *extra: str, prefix: tuple[str, ...] = (),
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *CLI, command, *site.args(*extra)], capture_output=True,
                          text=True, timeout=timeout)


def without_dac_override() -> tuple[str, ...] | None:
    """A command prefix under which file permissions bind (as root: setpriv dropping
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH); None when there is no such way here."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search")
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def start_run_as(site: Site, prefix: tuple[str, ...], *extra: str) -> subprocess.Popen[str]:
    """``dcmsortd run`` started under ``prefix``; returns once it listens."""
    proc = subprocess.Popen([*prefix, *CLI, "run", *site.args(*extra)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "listening on" in site.log_text() or proc.poll() is not None, 15,
                 "the daemon to listen")
    except AssertionError:
        stop(proc)
        raise
    if proc.poll() is not None:
        out = proc.stdout.read() if proc.stdout else ""
        raise AssertionError(f"dcmsortd run exited with {proc.returncode}:\n{out}")
    return proc
