"""Hostile input against a real ``dcmsortd run``: header values and pipe lines that try to
write outside the data folder, files outside the input roots, and a planted pipe path.

Issue 4, items 1 (no escape), 2 (only allowed inputs) and 3 (the pipe is ours).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonproc import Site, is_fifo, stop, wait_for
from pipefeed import checksums, feed, line_for, linked, run_cli, set_raw, wait_linked
from realfiles import pydicom_data, restamp, shared_dicom

pytestmark = pytest.mark.e2e

ROOT = "1.2.826.0.1.3680043.8.498.4"
WHEN = {"StudyDate": "20240102", "StudyTime": "101010"}
DEEP = "../" * 16  # from any folder below the data folder up to /
NOBODY = 65534


def _mr() -> Path:
    return shared_dicom("siemens_vb17_axial.dcm")


# --------------------------------------------------------------------- item 1: no escape

HOSTILE_PATIENT_IDS = [
    "../../../tmp/pwned",
    DEEP + "tmp/pwned-deep",
    "a/b",
    "a_b",  # must not share a folder with "a/b"
    "..",
    ".",
    ".hidden",
    "P" * 300,
    "ctl\x01\x1b[31m\x7fend",
    "c1\x85\x9b2J\u2028\u2029end",
    "Müller 患者 ﷽",
    "..\\..\\pwned-bs",  # a backslash makes it multi-valued: str() renders a list
    "  spaced  ",
]


def _hostile_files(folder: Path) -> list[tuple[Path, dict[str, str]]]:
    """Real MR and SR files re-stamped with hostile values; each with what was set."""
    out: list[tuple[Path, dict[str, str]]] = []

    def add(name: str, study: str, series: str, sop: str, src: Path | None = None,
            **values: str) -> Path:
        path = restamp(src or _mr(), folder / name, study, series, sop,
                       SpecificCharacterSet="ISO_IR 192", **{**WHEN, **values})
        out.append((path, {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                           "SOPInstanceUID": sop, **values}))
        return path

    for i, pid in enumerate(HOSTILE_PATIENT_IDS):
        add(f"pid{i}.dcm", f"{ROOT}.1.{i}", f"{ROOT}.1.{i}.1", f"{ROOT}.1.{i}.1.1", PatientID=pid)
    # a PatientID that is not valid UTF-8 although the file says UTF-8
    raw = add("pidbytes.dcm", f"{ROOT}.2", f"{ROOT}.2.1", f"{ROOT}.2.1.1", PatientID="x")
    set_raw(raw, 0x00100020, "LO", b"\xff\xfe/../pwned-bytes\xc3")
    out[-1][1].pop("PatientID")
    # hostile UIDs, dates and times
    add("uid1.dcm", DEEP + "tmp/pwned-study", "..", ".hidden", PatientID="UIDS")
    add("uid2.dcm", ".", "a/b/../../pwned-series", DEEP + "tmp/pwned-sop", PatientID="UIDS",
        StudyTime="121212")
    add("uid3.dcm", "S" * 300, "\x01\x02", "x" * 300, PatientID="UIDS", StudyTime="131313")
    add("uid4.dcm", "S" * 300, "\x01\x02", "x" * 299 + "y", PatientID="UIDS",
        StudyTime="131313")  # same long prefix: a distinct SOP link
    add("when.dcm", f"{ROOT}.3", f"{ROOT}.3.1", f"{ROOT}.3.1.1", PatientID="WHEN",
        StudyDate="../../../pwned-date", StudyTime=DEEP + "tmp/pwned-time")
    # a series whose UID ends in .json next to the series whose record has that name
    add("json1.dcm", f"{ROOT}.4", f"{ROOT}.4.1", f"{ROOT}.4.1.1", PatientID="JSON")
    add("json2.dcm", f"{ROOT}.4", f"{ROOT}.4.1.json", f"{ROOT}.4.1.json.1", PatientID="JSON")
    # structured reports with hostile manufacturers and a study UID ending in .json
    sr = pydicom_data("test-SR.dcm")
    for i, vendor in enumerate([DEEP + "tmp/pwned-vendor", "..", ".hidden", "a/b", ""]):
        add(f"sr{i}.dcm", f"{ROOT}.5.{i}", f"{ROOT}.5.{i}.1", f"{ROOT}.5.{i}.1.1", sr,
            Manufacturer=vendor, PatientID="SR")
    add("sr9.dcm", f"{ROOT}.5.9", f"{ROOT}.5.9.1", f"{ROOT}.5.9.1.1", sr,
        Manufacturer="ACME", PatientID="SR")
    add("sr10.dcm", f"{ROOT}.5.9.json", f"{ROOT}.5.10.1", f"{ROOT}.5.10.1.1", sr,
        Manufacturer="ACME", PatientID="SR")
    return out


HOSTILE_LINE_FIELDS = [  # caller, called, ip: no comma, no newline, no NUL can get through
    (DEEP + "tmp/pwned-ae", "..", DEEP + "tmp/pwned-ip"),
    (".hidden", ".", "..."),
    ("\x1b[2J\x01", "C" * 300, "I" * 300),
    ("Müller", "患者", "::1"),
    ("'\"\\ ", "", ""),
]


def _tree(root: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip:
            dirnames.clear()
            continue
        out.update(str((here / n).relative_to(root)) for n in dirnames + filenames)
    return out


def _names_with(folder: Path, token: str) -> set[str]:
    try:
        return {name for name in os.listdir(folder) if token in name}
    except OSError:
        return set()


def _sane(name: str, limit: int = 120) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and not any(unicodedata.category(ch) == "Cc" for ch in name)
        and len(name.encode("utf-8")) <= limit
    )


def _odd_names(site: Path) -> list[str]:
    problems: list[str] = []
    for top, limit in (("raw", 125), ("participants", 120), ("srs", 125), (".arrived", 255)):
        for dirpath, dirnames, filenames in os.walk(site / top):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if not _sane(name, limit):
                    problems.append(f"odd name {p.relative_to(site)!r}")
                if p.is_symlink() and not p.exists():
                    problems.append(f"dangling link {p.relative_to(site)!r}")
    return problems


def _browsable(site: Path) -> list[str]:
    """Every problem with the layout: odd names, dangling links, links leaving their tree."""
    problems = _odd_names(site)
    raw, archive = site / "raw", site / "archive"
    for link in [*raw.glob("*/*/*"), *(site / "srs").glob("*/*/*")]:
        if not (link.is_symlink() and Path(os.readlink(link)).parent == archive):
            problems.append(f"{link.relative_to(site)!r} is no link to the archive")
    for link in (site / "participants").glob("*/*"):
        target = Path(os.readlink(link))
        if not (link.is_symlink() and target.parent == raw and target.is_dir()):
            problems.append(f"participant link {link.relative_to(site)!r} -> {target}")
    for record in [*raw.glob("*/*.json"), *(site / "srs").glob("*/*.json")]:
        json.loads(record.read_text(encoding="utf-8"))
    return problems


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield Site(tmp_path)


def test_hostile_values_never_escape_and_the_layout_stays_browsable(
    site: Site, tmp_path: Path
) -> None:
    files = _hostile_files(site.archive)
    lines = [line_for(path) for path, _ in files]
    lines += [line_for(files[0][0], *fields) for fields in HOSTILE_LINE_FIELDS]
    lines.append(str(site.archive / ".." / "archive" / files[1][0].name).encode())
    outside_before = _tree(tmp_path, site.site)
    siblings_before = _tree(tmp_path.parent, tmp_path)  # the other tests' folders
    watched = [Path("/tmp"), Path("/"), *tmp_path.parents]
    before = {folder: _names_with(folder, "pwned") for folder in watched}

    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, lines)
        wait_for(lambda: set(linked(site).values()) == {str(p) for p, _ in files}, 30,
                 "every hostile file linked")
        wait_for(lambda: len(site.records()) == len({(v["StudyInstanceUID"],
                                                       v["SeriesInstanceUID"])
                                                      for _, v in files}), 30, "every record")
    finally:
        code, out = stop(daemon)
    assert code == 0, out

    # nothing new outside <datadir>/site, but the daemon's own log and pid folders
    created = _tree(tmp_path, site.site) - outside_before
    assert created <= {"logs", "logs/processSingleFile.log", "pids"}, created
    assert _tree(tmp_path.parent, tmp_path) == siblings_before
    for folder in watched:
        assert _names_with(folder, "pwned") == before[folder], folder
    assert not list(site.datadir.glob("*pwned*")) and not list(site.site.glob("*pwned*"))

    assert _browsable(site.site) == []
    # each file linked once; distinct values kept apart
    targets = list(linked(site).values())
    assert sorted(targets) == sorted(str(p) for p, _ in files)
    participants = sorted(p.name for p in (site.site / "participants").iterdir())
    assert len(participants) == len(HOSTILE_PATIENT_IDS) + 1 + 4  # + bytes, UIDS WHEN JSON SR
    assert "a_b" in participants and any(n.startswith("a_b-") for n in participants)
    assert len(list((site.site / "srs").iterdir())) == 6  # 5 hostile vendors + ACME

    # the records keep the values as they came, only the paths are made safe
    by_series = {r["SeriesInstanceUID"]: r for r in site.records().values()}
    for path, values in files:
        record = by_series[values["SeriesInstanceUID"]]
        for key in ("StudyInstanceUID", "StudyDate", "StudyTime", "Manufacturer"):
            if values.get(key):
                assert record[key] == values[key], (path.name, key)
        pid = values.get("PatientID", "")
        if pid and pid == pid.strip() and "\\" not in pid:
            assert record["PatientID"] == pid, path.name
    markers = os.listdir(site.site / ".arrived")
    assert all(_sane(m, 255) for m in markers)
    log = site.log_text()
    assert " ERROR " not in log and "Traceback" not in log, log


# ------------------------------------------------------------- item 2: only allowed inputs


def test_inputs_outside_the_roots_are_rejected_and_delete_stays_inside(tmp_path: Path) -> None:
    site = Site(tmp_path, config={"dcmsortd": {"modalities": ["MR"],
                                               "other_modalities": "delete"}})
    outside = tmp_path / "outside"
    outside.mkdir()
    mr_out = restamp(_mr(), outside / "mr.dcm", f"{ROOT}.6", f"{ROOT}.6.1", f"{ROOT}.6.1.1")
    ct_out = restamp(pydicom_data("CT_small.dcm"), outside / "ct.dcm")
    ct_in = restamp(pydicom_data("CT_small.dcm"), site.archive / "ct.dcm")
    mr_in = restamp(_mr(), site.archive / "mr.dcm", f"{ROOT}.7", f"{ROOT}.7.1", f"{ROOT}.7.1.1")
    (site.archive / "link-mr.dcm").symlink_to(mr_out)
    (site.archive / "link-ct.dcm").symlink_to(ct_out)
    (site.archive / "linkdir").symlink_to(outside)
    rejected = [
        mr_out, ct_out, site.archive / "link-mr.dcm", site.archive / "link-ct.dcm",
        site.archive / "linkdir" / "mr.dcm", site.archive / "linkdir" / "ct.dcm",
    ]
    climbing = f"SCANNER,FIONA,1.2.3.4,{site.archive}/../../..,outside/ct.dcm".encode()
    outside_sums = checksums(outside)

    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, [*map(line_for, rejected), climbing, line_for(ct_in), line_for(mr_in)])
        wait_linked(site, mr_in)
        wait_for(lambda: not ct_in.exists(), 10, "the CT inside the roots deleted")
    finally:
        code, out = stop(daemon)
    assert code == 0, out

    assert list(linked(site).values()) == [str(mr_in)]
    assert checksums(outside) == outside_sums  # nothing outside was touched or deleted
    for link in ("link-mr.dcm", "link-ct.dcm", "linkdir"):
        assert (site.archive / link).is_symlink()
    log = site.log_text().splitlines()
    for path in rejected:
        about = [line for line in log if f"] {path}: " in line]
        # one line per line sent: ct_out also arrived as the climbing line, normalized
        assert len(about) == (2 if path == ct_out else 1), (path, about)
        assert all(" ERROR " in x and "outside the input roots" in x for x in about)
    (deleted,) = [line for line in log if f"] {ct_in}: " in line]
    assert " WARNING " in deleted and "deleted as configured" in deleted


def test_explicit_input_roots_exclude_the_rest_of_the_data_folder(tmp_path: Path) -> None:
    site = Site(tmp_path)
    elsewhere = site.datadir / "elsewhere"
    elsewhere.mkdir()
    refused = restamp(_mr(), elsewhere / "mr.dcm", f"{ROOT}.8", f"{ROOT}.8.1", f"{ROOT}.8.1.1")
    taken = restamp(_mr(), site.archive / "mr.dcm", f"{ROOT}.9", f"{ROOT}.9.1", f"{ROOT}.9.1.1")
    daemon = site.start_run("--no-catch-up", "--input-root", str(site.archive))
    try:
        feed(site.pipe, [line_for(refused), line_for(taken)])
        wait_linked(site, taken)
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert list(linked(site).values()) == [str(taken)]
    (line,) = [x for x in site.log_text().splitlines() if f"] {refused}: " in x]
    assert "outside the input roots" in line


# ------------------------------------------------------------------ item 3: the pipe is ours


def _state(path: Path) -> tuple[int, int, int, int, int, str]:
    st = path.lstat()
    what = os.readlink(path) if path.is_symlink() else (
        path.read_text() if stat.S_ISREG(st.st_mode) else "")
    return (st.st_ino, st.st_mode, st.st_uid, st.st_mtime_ns, st.st_size, what)


def _plant(kind: str, pipe: Path, tmp_path: Path) -> Path | None:
    """Put something at the pipe path; return a file the plant points at, if any."""
    victim = tmp_path / "victim"
    if kind == "symlink to a file":
        victim.write_text("precious\n")
        pipe.symlink_to(victim)
        return victim
    if kind == "symlink to nothing":
        pipe.symlink_to(victim)
        return victim
    if kind == "symlink to a fifo of ours":
        os.mkfifo(victim, 0o600)
        pipe.symlink_to(victim)
        return victim
    if kind == "file of another user":
        pipe.write_text("SCANNER,FIONA,1.2.3.4,/etc,passwd\n")
        os.chown(pipe, NOBODY, NOBODY)
    elif kind == "fifo of another user":
        os.mkfifo(pipe, 0o666)
        os.chown(pipe, NOBODY, NOBODY)
    elif kind == "directory":
        pipe.mkdir()
    return None


PLANTS = {
    "symlink to a file": "symbolic link",
    "symlink to nothing": "symbolic link",
    "symlink to a fifo of ours": "symbolic link",
    "file of another user": f"belongs to uid {NOBODY}",
    "fifo of another user": f"belongs to uid {NOBODY}",
    "directory": "is a directory",
}


@pytest.mark.parametrize("kind", list(PLANTS))
def test_a_planted_pipe_path_is_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    if kind.endswith("another user") and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    site = Site(tmp_path)
    target = _plant(kind, site.pipe, tmp_path)
    before = _state(site.pipe)
    target_before = _state(target) if target is not None and target.exists() else None
    try:
        out = run_cli(site, "run", "--no-catch-up", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dcmsortd run started on a planted pipe path ({kind})")
    assert out.returncode == 1, out
    assert PLANTS[kind] in out.stderr and "refusing" in out.stderr, out.stderr
    assert _state(site.pipe) == before
    if target is not None:
        assert (_state(target) if target.exists() else None) == target_before
    assert not site.pid_file.exists()
    assert not (site.site / "raw").exists()  # refused before sorting anything


def test_a_stale_fifo_of_ours_is_reused(site: Site) -> None:
    os.mkfifo(site.pipe, 0o666)
    inode = site.pipe.lstat().st_ino
    mr = restamp(_mr(), site.archive / "mr.dcm", f"{ROOT}.10", f"{ROOT}.10.1", f"{ROOT}.10.1.1")
    daemon = site.start_run("--no-catch-up")
    try:
        wait_for(lambda: "listening on" in site.log_text(), 10, "the daemon to listen")
        assert site.pipe.lstat().st_ino == inode
        assert stat.S_IMODE(site.pipe.lstat().st_mode) == 0o620
        feed(site.pipe, [line_for(mr)])
        wait_linked(site, mr)
    finally:
        code, out = stop(daemon)
    assert code == 0, out


def test_a_regular_file_of_ours_at_the_pipe_path_is_sorted_and_the_fifo_comes_back(
    site: Site,
) -> None:
    files = [restamp(_mr(), site.archive / f"mr{i}.dcm", f"{ROOT}.11", f"{ROOT}.11.1",
                     f"{ROOT}.11.1.{i}") for i in range(3)]
    site.pipe.write_bytes(b"".join(line_for(p) + b"\n" for p in files) + b"garbage line\n")
    daemon = site.start_run("--no-catch-up")
    try:
        assert is_fifo(site.pipe)
        wait_for(lambda: sorted(linked(site).values()) == sorted(map(str, files)), 30,
                 "the stray file's lines sorted")
        wait_for(lambda: any(r.get("NumFiles") == "3" for r in site.records().values()), 10,
                 "the record")
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    log = site.log_text()
    assert "was a regular file holding 4 line(s)" in log
    (garbage,) = [x for x in log.splitlines() if "garbage line" in x]
    assert " ERROR " in garbage
    assert not list((site.site / ".dcmsortd" / "spool").glob("*.line"))
