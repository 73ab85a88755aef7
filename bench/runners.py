"""The timed runs of the benchmark: the reference loop, the daemon end to end, a command.

Every child process is started in its own session, so stopping it takes its workers along;
``stop`` sends SIGTERM, then SIGKILL to that process group after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pydicom
from corpus import Corpus, CorpusFile

STOP_GRACE = 30.0
PR_SET_CHILD_SUBREAPER = 36


class BenchError(RuntimeError):
    """A run that did not produce the expected output (the benchmark reports it and fails)."""


@dataclass
class Run:
    """One timed run."""

    label: str
    seconds: float
    files: int
    rss_main_mb: float | None = None
    rss_tree_mb: float | None = None
    pss_tree_mb: float | None = None  # peak of the tree's summed PSS (shared pages once)
    cpu_s: float | None = None  # user + system time of the process tree (less load-sensitive)
    cpu_main_s: float | None = None  # the daemon: its main process (the single writer) alone
    log_errors: int = 0
    start_s: float | None = None  # daemon: launch to warmed up (not in ``seconds``)
    late_early: float | None = None  # daemon: see RecordWatch.late_vs_early
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paths:
    """Where a benchmark keeps its data folder and the daemon's files."""

    base: str

    @property
    def datadir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def site(self) -> str:
        return os.path.join(self.datadir, "site")

    @property
    def work(self) -> str:
        return os.path.join(self.base, "work")

    @property
    def config(self) -> str:
        return os.path.join(self.work, "config.json")

    @property
    def pipe(self) -> str:
        return os.path.join(self.work, "pipe")

    @property
    def empty(self) -> str:
        return os.path.join(self.datadir, "empty")

    def prepare(self) -> None:
        for folder in (self.site, self.work, self.empty, self.log_dir):
            os.makedirs(folder, exist_ok=True)
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write("{}\n")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.work, "logs")

    def run_log(self, label: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        return os.path.join(self.log_dir, f"{safe}.log")

    def fresh_outputs(self) -> None:
        """Move everything the previous run wrote out of the way; the archive (the corpus) stays.

        The outputs are renamed into ``<base>/trash/`` (one rename per top folder) and deleted
        when the benchmark ends, not before the next timed run: on this project's machines,
        creating links right after thousands were deleted cost up to 30 times more kernel
        time, which would time the file system's recovery rather than the sorter.
        """
        if os.path.isdir(self.site):
            trash = os.path.join(self.base, "trash", str(time.monotonic_ns()))
            for entry in os.scandir(self.site):
                if entry.name == "archive":
                    continue
                os.makedirs(trash, exist_ok=True)
                os.rename(entry.path, os.path.join(trash, entry.name))
        for name in os.listdir(self.log_dir):
            if name.startswith("processSingleFile"):
                os.unlink(os.path.join(self.log_dir, name))
        os.sync()


def link_probe(base: str, target: str, count: int = 300) -> float:
    """Microseconds per ``os.symlink`` (to ``target``) in a new folder under ``base``.

    Both the reference loop and dcmsortd make one link per file, and what a link costs
    this kernel varies a lot over minutes (much more after mass deletions), so each round
    reports it next to its figures. The probe's links stay until the benchmark ends.
    """
    folder = os.path.join(base, "probe", str(time.monotonic_ns()))
    os.makedirs(folder)
    started = time.perf_counter()
    for i in range(count):
        os.symlink(target, os.path.join(folder, f"1.2.826.0.1.3680043.8.498.{i:020d}"))
    return (time.perf_counter() - started) / count * 1e6


def dcmsortd_command() -> list[str]:
    """The console script installed next to this interpreter, else the same via ``-c``."""
    script = os.path.join(os.path.dirname(sys.executable), "dcmsortd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from dcmsortd.cli.main import main_entry; main_entry()"]


def check_command(command: Sequence[str]) -> str | None:
    """None when ``command --version`` works, else why not (before minutes of corpus)."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except OSError as exc:
        return f"{command[0]}: {exc.strerror or exc}"
    except subprocess.TimeoutExpired:
        return f"{' '.join(command)} --version did not answer within 60 s"
    if done.returncode != 0:
        return f"{' '.join(command)} --version failed:\n{(done.stderr or done.stdout)[-2000:]}"
    return None


# ---------------------------------------------------------------------------- memory


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, own: bool) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(v) for v in fields[11:13 if own else 15])  # utime stime [cutime cstime]


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of ``pid`` and its live descendants, and of the
    children they have reaped (each tick counted once); and of ``pid`` alone."""
    total = sum(_ticks(p, own=False) for p in (pid, *descendants(pid)))
    return total / _TICK, _ticks(pid, own=True) / _TICK


def _pss_kb(pid: int) -> int | None:
    """The proportional set size: each page shared with n processes counts 1/n."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Polls VmHWM (peak resident set) of a process and of its descendants, and the sum of
    their PSS (the memory they take together: a page they share is counted once; summed
    VmHWM counts numpy's, pydicom's and nibabel's pages once per process)."""

    def __init__(self, pid: int, interval: float = 0.05, rescan: float = 0.5,
                 pss_every: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self.pss_every = pss_every
        self.pss_peak_kb = 0
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self, pids: Sequence[int]) -> None:
        for pid in pids:
            kb = _status_kb(pid, "VmHWM:")
            if kb is not None and kb > self.peaks.get(pid, 0):
                self.peaks[pid] = kb

    def sample_pss(self, pids: Sequence[int]) -> None:
        total = sum(kb for kb in map(_pss_kb, pids) if kb is not None)
        self.pss_peak_kb = max(self.pss_peak_kb, total)

    def _loop(self) -> None:
        pids: list[int] = [self.pid]
        scanned = pss_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - scanned >= self.rescan:
                pids, scanned = [self.pid, *descendants(self.pid)], now
            self.sample(pids)
            if now - pss_at >= self.pss_every:
                self.sample_pss(pids)
                pss_at = now
            self._stop.wait(self.interval)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.sample([self.pid, *descendants(self.pid)])
            self._stop.set()
            self._thread.join()

    @property
    def main_mb(self) -> float | None:
        kb = self.peaks.get(self.pid)
        return None if kb is None else kb / 1024

    @property
    def tree_mb(self) -> float | None:
        return sum(self.peaks.values()) / 1024 if self.peaks else None

    @property
    def pss_mb(self) -> float | None:
        return self.pss_peak_kb / 1024 if self.pss_peak_kb else None


# ---------------------------------------------------------------------------- processes


def start(cmd: Sequence[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the group we created with start_new_session (id = pid)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (a worker pool outliving its parent), so they are reaped
    here and their CPU time shows in ``RUSAGE_CHILDREN``. Linux only; False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _reap_group(pgid: int, timeout: float = 5.0) -> None:
    """Reap the exited members of the group ``pgid`` that were adopted by us."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int | None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL the whole group. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)  # leftovers (workers) of an exited leader
    _reap_group(proc.pid)
    return proc.returncode


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def log_errors(path: str) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return sum(1 for line in fh if " ERROR " in line or "Traceback" in line)
    except OSError:
        return 0


def logged_count(path: str, word: str) -> int | None:
    """The number after ``word:`` in the last log line holding it (a command's summary)."""
    found = None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = re.search(rf"\b{re.escape(word)}: (\d+)", line)
                if match:
                    found = int(match[1])
    except OSError:
        return None
    return found


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"


def run_command(label: str, cmd: Sequence[str], log_path: str, files: int,
                timeout: float) -> Run:
    """Run ``cmd`` to its end: wall time, peak RSS; BenchError when it fails."""
    cpu_before = _cpu_children()
    started = time.perf_counter()
    proc = start(cmd, log_path)
    timer = threading.Timer(timeout, _kill_group, (proc.pid, signal.SIGKILL))
    timer.start()
    try:
        with RssSampler(proc.pid) as sampler:
            code = proc.wait()
            seconds = time.perf_counter() - started
    finally:
        timer.cancel()
        stop(proc)  # also reaps adopted workers: their CPU time counts below
    if code != 0:
        raise BenchError(f"{label}: exit code {code}\n{log_tail(log_path)}")
    return Run(label, seconds, files, rss_main_mb=sampler.main_mb, rss_tree_mb=sampler.tree_mb,
               pss_tree_mb=sampler.pss_mb,
               cpu_s=_cpu_children() - cpu_before, log_errors=log_errors(log_path))


# ---------------------------------------------------------------------------- records


def num_files(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh).get("NumFiles")
        return int(value)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


@dataclass
class RecordWatch:
    """Polls series records until each shows its expected NumFiles (stat first: cheap)."""

    expected: dict[str, int]
    pending: dict[str, int] = field(init=False)
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    progress: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pending = dict(self.expected)

    def poll(self) -> bool:
        for path, want in list(self.pending.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self.seen.get(path) == signature:
                continue
            self.seen[path] = signature
            count = num_files(path)
            if count is not None:
                self.progress.setdefault(path, []).append((time.monotonic(), count))
            if count == want:
                del self.pending[path]
        return not self.pending

    def late_vs_early(self, min_span: float = 2.0) -> float | None:
        """For the largest series: time per file while its record went from 50 % to 90 % of
        its images over the time from 10 % to 50 % (same run: load drift hardly matters).
        About 1 when the cost per image stays flat; about 2.3 when it grows linearly
        (quadratic rewriting). None when the series streamed in too briefly to tell."""
        path = max(self.expected, key=lambda p: self.expected[p])
        total, points = self.expected[path], self.progress.get(path, [])

        def reached(share: float) -> float | None:
            return next((t for t, n in points if n >= share * total), None)

        t10, t50, t90 = reached(0.1), reached(0.5), reached(0.9)
        if t10 is None or t50 is None or t90 is None or t90 - t10 < min_span or t50 <= t10:
            return None
        return (t90 - t50) / (t50 - t10)

    def describe(self, limit: int = 3) -> str:
        shown = [f"{p} (NumFiles {num_files(p)}, expected {n})"
                 for p, n in list(self.pending.items())[:limit]]
        return f"{len(self.pending)} record(s) not final: " + "; ".join(shown)


def check_records(expected: dict[str, int], label: str) -> None:
    watch = RecordWatch(expected)
    if not watch.poll():
        raise BenchError(f"{label}: {watch.describe()}")


# ---------------------------------------------------------------------------- reference


REFERENCE_FIELDS = ("Modality", "PatientID", "StudyDate", "SeriesDescription", "SeriesNumber")


def reference_loop(corpus: Corpus, site: str) -> tuple[float, float]:
    """dcmread(stop_before_pixels) + one symlink per file + each series JSON once at the end.

    Returns the wall and CPU seconds."""
    raw = os.path.join(site, "raw")
    made: set[str] = set()
    series: dict[tuple[str, str], dict[str, Any]] = {}
    started = time.perf_counter()
    cpu = time.process_time()
    for item in corpus.files:
        ds = pydicom.dcmread(item.path, stop_before_pixels=True)
        key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        folder = os.path.join(raw, *key)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        os.symlink(item.path, os.path.join(folder, str(ds.SOPInstanceUID)))
        record = series.get(key)
        if record is None:
            record = series[key] = {k: str(ds.get(k, "")) for k in REFERENCE_FIELDS}
            record["NumFiles"] = 0
        record["NumFiles"] += 1
    for (study, series_uid), record in series.items():
        record["NumFiles"] = str(record["NumFiles"])
        with open(os.path.join(raw, study, series_uid + ".json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
    return time.perf_counter() - started, time.process_time() - cpu


# ---------------------------------------------------------------------------- the daemon

WRITER = """
import os, sys, time
pipe, lines_file = sys.argv[1], sys.argv[2]
with open(lines_file, "rb") as fh:
    lines = fh.read().splitlines(keepends=True)
chunks, chunk = [], b""
for line in lines:  # whole lines, at most PIPE_BUF bytes per write: atomic
    if len(chunk) + len(line) > 4096:
        chunks.append(chunk)
        chunk = b""
    chunk += line
chunks.append(chunk)
fd = os.open(pipe, os.O_WRONLY)
started = time.monotonic()
print(repr(started), flush=True)
for chunk in chunks:
    os.write(fd, chunk)
os.close(fd)
print(repr(time.monotonic()), flush=True)
"""


def send_nonblocking(pipe: str, line: str, timeout: float) -> None:
    """Write one line once a reader has the FIFO open (ENXIO/ENOENT until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{pipe}: no daemon listening after {timeout:.0f} s") from None
            time.sleep(0.02)
            continue
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        return


@dataclass(frozen=True)
class DaemonSetup:
    command: list[str]
    paths: Paths
    warmup: CorpusFile
    timeout: float


def _wait(watch: RecordWatch, proc: subprocess.Popen[bytes], log_path: str, label: str,
          timeout: float, interval: float = 0.02) -> float:
    deadline = time.monotonic() + timeout
    while not watch.poll():
        if proc.poll() is not None:
            raise BenchError(f"{label}: the daemon exited ({proc.returncode})\n"
                             f"{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: {watch.describe()} after {timeout:.0f} s\n"
                             f"{log_tail(log_path)}")
        time.sleep(interval)
    return time.monotonic()


def run_daemon(setup: DaemonSetup, corpus: Corpus, workers: int, label: str) -> Run:
    """Start ``dcmsortd run``, warm it up with one file, then time the whole corpus.

    A separate process writes every line into the pipe as fast as the daemon takes them;
    the time runs from its first write to the moment every series record on disk shows its
    final NumFiles.
    """
    paths = setup.paths
    log_path = paths.run_log(label)
    lines_path = os.path.join(paths.work, "lines.txt")
    with open(lines_path, "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in corpus.lines())
    cmd = [*setup.command, "run", "--config", paths.config, "--datadir", paths.datadir,
           "--pipe", paths.pipe, "--pid-dir", paths.work, "--log-dir", paths.log_dir,
           "--workers", str(workers), "--no-catch-up"]
    launched = time.monotonic()
    proc = start(cmd, log_path)
    writer: subprocess.Popen[bytes] | None = None
    try:
        with RssSampler(proc.pid) as sampler:
            send_nonblocking(paths.pipe, setup.warmup.line, timeout=60.0)
            warm = os.path.join(paths.site, "raw", setup.warmup.study_uid,
                                setup.warmup.series_uid + ".json")
            ready = _wait(RecordWatch({warm: 1}), proc, log_path, label, 60.0) - launched
            cpu_before = tree_cpu(proc.pid)
            writer = subprocess.Popen([sys.executable, "-c", WRITER, paths.pipe, lines_path],
                                      stdout=subprocess.PIPE, start_new_session=True)
            watch = RecordWatch(corpus.record_paths(paths.site))
            done = _wait(watch, proc, log_path, label, setup.timeout)
            cpu_after = tree_cpu(proc.pid)
            out, _ = writer.communicate(timeout=setup.timeout)
            first = float(out.decode().split()[0])
            sampler.sample([proc.pid, *descendants(proc.pid)])
    finally:
        if writer is not None and writer.poll() is None:
            _kill_group(writer.pid, signal.SIGKILL)
            writer.wait()
        code = stop(proc)
    note = "" if code == 0 else f"exit code {code} at stop"
    return Run(label, done - first, len(corpus.files), rss_main_mb=sampler.main_mb,
               rss_tree_mb=sampler.tree_mb, pss_tree_mb=sampler.pss_mb,
               cpu_s=cpu_after[0] - cpu_before[0],
               cpu_main_s=cpu_after[1] - cpu_before[1], log_errors=log_errors(log_path),
               start_s=ready, late_early=watch.late_vs_early(), note=note)
