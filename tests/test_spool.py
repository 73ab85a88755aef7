"""The spool folder, with real writer processes and a real crash."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from dcmsortd.intake.spool import Spool
from osprocs import run_py, start_py


def ticking(*values: int) -> Callable[[], int]:
    it = iter(values)
    return lambda: next(it)


def test_put_stores_one_line_durably_and_read_gives_it_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool" / "deep")
    entry = spool.put("AE1,AE2,10.0.0.1,/data/in,x.dcm")
    assert re.fullmatch(r"\d{20}-\d{10}-\d{12}\.line", entry.name)
    assert entry.read_bytes() == b"AE1,AE2,10.0.0.1,/data/in,x.dcm\n"
    assert spool.read(entry) == "AE1,AE2,10.0.0.1,/data/in,x.dcm"
    assert sorted(os.listdir(spool.directory)) == [entry.name]  # no temporary file left


def test_entries_come_in_arrival_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, clock=ticking(30, 10, 20, 10))
    put = [spool.put(line) for line in ("third", "first", "second", "also-first")]
    assert [spool.read(e) for e in spool.entries()] == ["first", "also-first", "second", "third"]
    assert set(spool.entries()) == set(put)


def test_entries_ignore_temporary_and_foreign_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("/x")
    (tmp_path / f".tmp-{entry.name.replace('0', '1', 1)}").write_text("/partial")
    (tmp_path / "README").write_text("operator notes")
    assert spool.entries() == [entry]


def test_a_missing_folder_has_no_entries_and_is_not_created(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "none")
    assert spool.entries() == []
    assert spool.clean_temp() == []
    assert not spool.directory.exists()


def test_remove_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("/x")
    spool.remove(entry)
    spool.remove(entry)
    assert spool.entries() == []


def test_undecodable_bytes_survive_the_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    line = b"/in/\xff\xfe.dcm".decode("utf-8", "surrogateescape")
    assert spool.read(spool.put(line)).encode("utf-8", "surrogateescape") == b"/in/\xff\xfe.dcm"


def test_clean_temp_removes_only_old_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("/kept")
    old, young = tmp_path / ".tmp-old", tmp_path / ".tmp-young"
    old.write_text("/old")
    young.write_text("/young")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert spool.clean_temp() == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-young", entry.name]


def test_a_writer_killed_mid_put_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    crash = """
        import os, signal, sys
        from dcmsortd.intake.spool import Spool
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die before the rename
        Spool(sys.argv[1]).put("/lost/in/crash")
    """
    result = run_py(crash, tmp_path)
    assert result.returncode == -9
    spool = Spool(tmp_path)
    assert spool.entries() == []
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".tmp-")
    assert spool.clean_temp(now=time.time()) == []  # young: may belong to a live writer
    assert spool.clean_temp(now=time.time() + 61) == [leftover]
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writer_processes_lose_nothing_and_keep_their_order(tmp_path: Path) -> None:
    writer = """
        import sys
        from dcmsortd.intake.spool import Spool
        spool = Spool(sys.argv[1])
        for i in range(100):
            spool.put(f"{sys.argv[2]} {i:03d}")
    """
    procs = [start_py(writer, tmp_path, f"w{n}", capture=False) for n in range(8)]
    assert [p.wait(timeout=20) for p in procs] == [0] * 8
    spool = Spool(tmp_path)
    lines = [spool.read(e) for e in spool.entries()]
    assert sorted(lines) == sorted(f"w{n} {i:03d}" for n in range(8) for i in range(100))
    for n in range(8):
        mine = [line for line in lines if line.startswith(f"w{n} ")]
        assert mine == sorted(mine)
