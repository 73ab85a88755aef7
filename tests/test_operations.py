"""Operating a real daemon (issue 17): ``status`` shows the running daemon's own view from
anywhere, Prometheus metrics scraped over HTTP, sd_notify to a socket of the test's own,
the stop line, and the systemd and logrotate files of ``contrib/``."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import CLI, Site, free_port, is_fifo, stop, wait_for
from dcmsortd.intake.spool import Spool
from dcmsortd.rules.engine import load_rules
from dcmsortd.service.config import resolve
from dcmsortd.service.operations import Operations
from dcmsortd.service.runtime import build
from dcmsortd.service.sdnotify import SdNotify
from pipefeed import feed, line_for
from realfiles import pydicom_data, restamp

ROOT = Path(__file__).resolve().parents[1]
STUDY = "1.2.826.0.1.3680043.8.498.1717"
FILES = 12
KEYS = {"pid", "datadir", "pipe", "uptime_s", "files_sorted", "files_failed", "spool_backlog",
        "version", "input_roots", "workers", "workers_alive", "rate_per_s",
        "latency_median_s", "latency_p99_s", "series_in_memory", "last_error"}


def mr_files(folder: Path, count: int) -> list[Path]:
    """``count`` real MR images in two series (pydicom's MR_small, re-stamped)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in range(count):
        series = f"{STUDY}.{1 + n % 2}"
        out.append(restamp(pydicom_data("MR_small.dcm"), folder / f"mr{n}.dcm", STUDY, series,
                           f"{series}.{n}", InstanceNumber=n + 1))
    return out


def status_elsewhere(site: Site, where: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``dcmsortd status`` run from another folder with another data folder and pipe: only
    the config and the pid folder are the daemon's."""
    where.mkdir(exist_ok=True)
    return subprocess.run(
        [*CLI, "status", "--config", str(site.config_file), "--pid-dir", str(site.pid_dir),
         "--datadir", str(where / "otherdata"), "--pipe", str(where / "otherpipe"), *extra],
        capture_output=True, text=True, timeout=60, cwd=where)


def status_json(site: Site, where: Path) -> dict[str, Any]:
    out = status_elsewhere(site, where, "--json")
    assert out.returncode in (0, 3), out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.e2e
def test_status_and_metrics_show_what_the_daemon_did(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    port = free_port()
    files = mr_files(site.archive, FILES)
    bad = site.archive / "notdicom.dcm"
    bad.write_bytes(b"this is not DICOM" * 20)
    outside = restamp(pydicom_data("MR_small.dcm"), tmp_path / "outside.dcm", STUDY,
                      f"{STUDY}.9", f"{STUDY}.9.1")
    daemon = site.start_run("--no-catch-up", "--workers", "2", "--metrics", f":{port}")
    elsewhere = tmp_path / "elsewhere"
    try:
        feed(site.pipe, [line_for(p) for p in [*files, bad, outside]])
        wait_for(lambda: status_json(site, elsewhere).get("files_failed") == 2
                 and status_json(site, elsewhere).get("files_sorted") == FILES, 30,
                 "the daemon's status to count every file")
        state = status_json(site, elsewhere)
        assert set(state) >= KEYS, KEYS - set(state)
        assert state["running"] is True and state["pid"] == daemon.pid
        assert (state["datadir"], state["pipe"]) == (str(site.datadir), str(site.pipe))
        assert state["input_roots"] == [str(site.datadir)]
        assert state["outcomes"] == {"sorted": FILES, "bad": 1, "rejected": 1}
        assert state["spool_backlog"] == 0 and state["workers"] == 2
        assert state["workers_alive"] == 2
        assert state["latency_samples"] == FILES
        assert 0 < state["latency_median_s"] <= state["latency_p99_s"] < 30
        assert state["rate_per_s"] > 0 and state["uptime_s"] > 0
        assert str(outside) in state["last_error"]["message"]  # the last file fed
        assert state["phase"] == "listening"

        text = status_elsewhere(site, elsewhere)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0] == "dcmsortd: running"
        assert f"datadir: {site.datadir}" in lines and f"pipe: {site.pipe}" in lines
        assert f"files sorted: {FILES}" in lines
        assert "files failed: 2, 1 bad, 1 rejected" in lines
        assert not (elsewhere / "otherdata").exists()  # status creates nothing

        wait_for(lambda: scrape(port)[("dcmsortd_files_sorted_total", ())] == FILES, 10,
                 "the metrics to count every file")
        metrics = scrape(port)
        reason = "reason"
        assert metrics[("dcmsortd_files_failed_total", ((reason, "bad"),))] == 1
        assert metrics[("dcmsortd_files_failed_total", ((reason, "rejected"),))] == 1
        assert metrics[("dcmsortd_files_failed_total", ((reason, "failed"),))] == 0
        assert metrics[("dcmsortd_arrival_to_linked_seconds_count", ())] == FILES
        assert metrics[("dcmsortd_arrival_to_linked_seconds_bucket", (("le", "+Inf"),))] == FILES
        assert metrics[("dcmsortd_records_written_total", ())] >= 2  # two series
        assert metrics[("dcmsortd_spool_backlog", ())] == 0
        assert metrics[("dcmsortd_workers_alive", ())] == 2
        assert metrics[("dcmsortd_series_in_memory", ())] == 2
        assert time.time() - metrics[("dcmsortd_status_updated_timestamp_seconds", ())] < 10
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert f"dcmsortd stopped: {FILES} file(s) sorted, 2 failed (1 bad, 1 rejected), up " \
        in site.log_text()
    after = status_elsewhere(site, elsewhere, "--json")
    assert after.returncode == 3 and json.loads(after.stdout)["running"] is False
    assert not (site.pid_dir / "processSingleFile.status.json").exists()
    with pytest.raises(OSError):
        scrape(port)


@pytest.mark.e2e
def test_status_says_not_running_after_the_daemon_is_killed(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    daemon = site.start_run("--no-catch-up")
    elsewhere = tmp_path / "elsewhere"
    try:
        wait_for(lambda: status_json(site, elsewhere).get("phase") == "listening", 20,
                 "the daemon to listen")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert (site.pid_dir / "processSingleFile.status.json").exists()  # left by the crash
        out = status_elsewhere(site, elsewhere)
        assert out.returncode == 3 and out.stdout.startswith("dcmsortd: not running")
        assert status_json(site, elsewhere) == {"running": False,
                                                "pid_file": str(site.pid_file)}
    finally:
        stop(daemon)


@pytest.mark.e2e
def test_a_metrics_port_in_use_stops_the_start(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = site.cli("run", "--no-catch-up", "--metrics", f"127.0.0.1:{port}", timeout=60)
    assert out.returncode == 1
    expected = f"metrics: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert expected in out.stderr
    assert [line for line in site.log_text().splitlines() if expected in line] != []
    assert "Traceback" not in site.log_text()
    assert not os.path.lexists(site.pipe) and not site.pid_file.exists()
    assert not (site.pid_dir / "processSingleFile.status.json").exists()


@pytest.mark.e2e
def test_run_tells_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        address = str(tmp_path / "notify")
        listener.bind(address)
        listener.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        daemon = subprocess.Popen([*CLI, "run", *site.args("--no-catch-up")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            messages: list[list[str]] = []

            def receive() -> list[str]:
                message = listener.recv(4096).decode().split("\n")
                messages.append(message)
                return message

            while "READY=1" not in (ready := receive()):
                pass
            assert is_fifo(site.pipe)  # ready: the pipe is open, writers do not block
            assert f"MAINPID={daemon.pid}" in ready
            assert any(line.startswith("STATUS=") for line in ready)
            watchdogs = 0
            while watchdogs < 3:  # every 0.2 s (half of WATCHDOG_USEC) from the main loop
                watchdogs += receive() == ["WATCHDOG=1"]
            assert any(m[0].startswith("STATUS=listening") for m in messages)
            daemon.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in receive():
                pass
        finally:
            code, out = stop(daemon)
    assert code == 0, out
    assert [m for m in messages if "STOPPING=1" in m][0][1].startswith("STATUS=stopping")


def test_other_parts_add_their_numbers_to_status_and_metrics(tmp_path: Path) -> None:
    """The seam for the completion summary: ``Operations.provide(name, summary)``."""
    (tmp_path / "c.json").write_text("{}")
    port = free_port()
    settings = resolve({"config": str(tmp_path / "c.json"), "datadir": str(tmp_path / "data"),
                        "pid_dir": str(tmp_path / "pids"), "metrics": str(port)},
                       home=str(tmp_path))
    runtime = build(settings, load_rules(None), heartbeat=False)
    os.makedirs(tmp_path / "pids")
    ops = Operations(runtime, Spool(settings.spool_dir), notify=SdNotify(None))
    try:
        ops.provide("completion", lambda: {"pending_series": 2, "hooks_failed_total": 1})
        ops.provide("broken", lambda: {"x": 1 // 0})
        ops.start_metrics()
        ops.publish()
        state = json.loads(Path(ops.path).read_text())
        assert state["completion"] == {"pending_series": 2, "hooks_failed_total": 1}
        assert state["providers"] == ["completion"] and "broken" not in state
        metrics = scrape(port)
        assert metrics[("dcmsortd_completion_pending_series", ())] == 2
        assert metrics[("dcmsortd_completion_hooks_failed_total", ())] == 1
    finally:
        summary = ops.close()
        runtime.close()
    assert summary.startswith("0 file(s) sorted, 0 failed, up ")
    assert not Path(ops.path).exists()


def test_the_spool_backlog_counts_complete_entries(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.count() == 0
    for n in range(3):
        spool.put(f"/data/site/archive/f{n}.dcm")
    (tmp_path / "spool" / ".tmp-half-written").write_text("x")
    assert spool.count() == 3 == len(spool.entries())


# ---------------------------------------------------------------- contrib/


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Path]:
    """The units, with the dcmsortd path of this installation (verify checks it exists)."""
    script = Path(sysconfig.get_path("scripts")) / "dcmsortd"
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    out = tmp_path / "units"
    out.mkdir()
    for unit in (ROOT / "contrib" / "systemd").glob("*.service"):
        text = unit.read_text().replace("/usr/local/bin/dcmsortd", str(script))
        (out / unit.name).write_text(text)
        (out / unit.name).chmod(0o644)  # as installed (whatever the umask)
    yield out


def test_the_systemd_units_verify(units: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    if not Path("/usr/bin/storescp").exists():
        pytest.skip("dcmtk's /usr/bin/storescp, named by the storescp unit, is not installed")
    instances = [str(units / "dcmsortd@ABCD.service"),
                 str(units / "dcmsortd-storescp@ABCD.service")]
    out = subprocess.run([analyze, "verify", *instances], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    unit = (units / "dcmsortd@.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/data /tmp"):
        assert f"\n{line}\n" in unit, line
    assert "run --project %i" in unit
    for text in (unit, (units / "dcmsortd-storescp@.service").read_text()):
        assert "\nPrivateTmp" not in text  # storescp and dcmsortd share the pipe in /tmp


def unit_service(path: Path, instance: str) -> tuple[dict[str, str], dict[str, str]]:
    """A unit's [Service] section, ``%i`` and ``%%`` expanded as systemd does: the
    variables its ``Environment=`` lines set, and its other keys (the last one wins)."""
    env: dict[str, str] = {}
    keys: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        if section != "[Service]" or not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.replace("%%", "\0").replace("%i", instance).replace("\0", "%")
        if key == "Environment":
            for word in shlex.split(value):
                name, _, setting = word.partition("=")
                env[name] = setting
        else:
            keys[key] = value
    return env, keys


def expand(command: str, env: dict[str, str]) -> list[str]:
    """An ``Exec*=`` line as systemd runs it: words split, each ``${NAME}`` replaced."""
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
            for word in shlex.split(command)]


def test_the_storescp_unit_runs_what_storescp_command_prints(tmp_path: Path) -> None:
    """ExecStartPre= runs ``storescp-command`` with the unit's values and writes the log
    configuration; ExecStart= is then exactly the line it prints, less ``/usr/bin/env
    TCP_NODELAY=1``, which Environment= gives, and names that configuration. The data
    folder comes from the config file, as for dcmsortd@.service (here a folder of the
    test's own, as an env file would set STORESCP_DATADIR); the other values are the
    unit's defaults."""
    env, keys = unit_service(ROOT / "contrib" / "systemd" / "dcmsortd-storescp@.service",
                             "ABCD")
    datadir = tmp_path / "data"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"SITES": {"ABCD": {"DATADIR": str(datadir)}}}))
    env["STORESCP_DATADIR"] = str(datadir)
    assert env["TCP_NODELAY"] == "1"
    assert {"STORESCP_PORT", "STORESCP_AET", "STORESCP_ARCHIVE"} <= set(env)
    pre = expand(keys["ExecStartPre"], env)
    assert pre[:3] == ["/usr/local/bin/dcmsortd", "storescp-command", "--project"]
    out = subprocess.run([*CLI, *pre[1:], "--config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = shlex.split(out.stdout)
    start = expand(keys["ExecStart"], env)
    assert Path(printed[0]).name == "env" and printed[1] == "TCP_NODELAY=1"
    assert start[0] == "/usr/bin/storescp" and Path(printed[2]).name == "storescp"
    assert printed[3:] == start[1:]
    assert start[-1] == env["STORESCP_PORT"] and "--exec-on-reception" not in start
    journal = datadir / "site" / ".dcmsortd" / "journal"
    cfg = Path(start[start.index("--log-config") + 1])
    assert cfg == journal / "storescpABCD.cfg"
    assert f"receiverlog.File = {journal / 'storescpABCD.log'}\n" in cfg.read_text()
    assert (journal / "storescpABCD.log").is_file()


def test_logrotate_leaves_the_receiver_log_and_the_journal_alone(tmp_path: Path) -> None:
    """storescp keeps its receiver log open: a rotated one would go on being written
    where the daemon no longer reads. No path pattern of the logrotate file may match it,
    nor the journal folder's other files, for the default data folder and project ABCD."""
    text = (ROOT / "contrib" / "logrotate" / "dcmsortd").read_text()
    patterns = [word for line in text.splitlines()
                if line.rstrip().endswith("{") and not line.lstrip().startswith("#")
                for word in shlex.split(line.rstrip().removesuffix("{"))]
    daemon_log = "/var/log/dcmsortd/processSingleFileABCD.log"  # what it is for
    assert any(fnmatch.fnmatch(daemon_log, pattern) for pattern in patterns), patterns
    (tmp_path / "c.json").write_text("{}")
    settings = resolve({"project": "ABCD", "config": str(tmp_path / "c.json"),
                        "datadir": "/data"}, home=str(tmp_path))
    for path in (settings.receiver_log, settings.receiver_log_config, settings.journal):
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


@pytest.mark.e2e
def test_logrotate_rotates_a_running_daemons_log(tmp_path: Path) -> None:
    """contrib/logrotate/dcmsortd run for real (forced) on a running daemon's log folder:
    the daemon writes its next lines into the new file (``create``, no signal needed)."""
    text = (ROOT / "contrib" / "logrotate" / "dcmsortd").read_text()
    directives = [line.split()[0] for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    assert "create" in directives and "copytruncate" not in directives
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if logrotate is None:
        pytest.skip("logrotate is not installed (apt-get install logrotate)")
    site = Site(tmp_path / "site")
    home = Path.home()
    conf = tmp_path / "dcmsortd"
    conf.write_text(text.replace("/var/log/dcmsortd", str(site.log_dir))
                    .replace("fiona fiona", f"{home.owner()} {home.group()}"))
    conf.chmod(0o644)  # logrotate ignores a config others may write (whatever the umask)
    daemon = site.start_run("--no-catch-up")
    try:
        first = site.archive / "first.dcm"
        first.write_bytes(b"not DICOM")
        feed(site.pipe, [line_for(first)])
        wait_for(lambda: str(first) in site.log_text(), 20, "the first error line")
        out = subprocess.run([logrotate, "--verbose", "--force", "--state", str(tmp_path / "state"),
                              str(conf)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        rotated = site.log_dir / "processSingleFile.log.1"
        assert rotated.is_file(), out.stdout + out.stderr
        assert str(first) in rotated.read_text()
        assert site.log_file.stat().st_mode & 0o777 == 0o640  # created by logrotate
        second = site.archive / "second.dcm"
        second.write_bytes(b"not DICOM either")
        feed(site.pipe, [line_for(second)])
        wait_for(lambda: str(second) in site.log_text(), 20, "the next error line")
        assert str(first) not in site.log_text()
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert "dcmsortd stopped: 0 file(s) sorted, 2 failed (2 bad)" in site.log_text()


def test_prometheus_client_is_imported_only_when_metrics_are_on() -> None:
    code = ("import sys; import dcmsortd.cli.commands, dcmsortd.service.daemon, "
            "dcmsortd.service.operations; print('prometheus_client' in sys.modules)")
    out = subprocess.run([*CLI[:1], "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
