"""Malformed pipe lines and bad files against a real ``dcmsortd run``, and fuzzing of the
parsers those inputs reach.

Issue 4, items 5 (malformed lines and files), 9 (received files never modified),
10 (fuzzing) and the error-line shape of item 11.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import random
import struct
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from daemonproc import Site, stop
from dcmsortd.dicom import csa
from dcmsortd.dicom.header import RECORD_TAGS, UID_TAGS, instance_from_dataset, read_instance
from dcmsortd.model.errors import HeaderError, NotificationError
from dcmsortd.model.notice import Arrival, parse_line
from dcmsortd.rules.engine import load_rules
from dcmsortd.sorting.layout import MAX_COMPONENT_BYTES, plan
from pipefeed import (
    ERROR_SHAPE,
    checksums,
    error_lines,
    feed,
    line_for,
    linked,
    start_run_as,
    wait_linked,
    without_dac_override,
)
from realfiles import nibabel_data, pydicom_data, restamp, shared_dicom

STUDY = "1.2.826.0.1.3680043.8.498.5"
WHEN = {"StudyDate": "20240102", "StudyTime": "101010", "PatientID": "BAD01"}


def _mr() -> Path:
    return shared_dicom("siemens_vb17_axial.dcm")


def _good(folder: Path, name: str, n: int, **values: str | None) -> Path:
    series = f"{STUDY}.{n}"
    return restamp(_mr(), folder / name, STUDY, series, f"{series}.1", **{**WHEN, **values})


def _bad_files(archive: Path) -> dict[Path, str]:
    """Files that must not be sorted, each with (a part of) the reason to log."""
    mr = _mr().read_bytes()
    bad: dict[Path, str] = {}

    def put(name: str, data: bytes, reason: str) -> None:
        path = archive / name
        path.write_bytes(data)
        bad[path] = reason

    put("empty.dcm", b"", "empty file")
    put("header_cut.dcm", mr[:700], "truncated")
    put("pixels_cut.dcm", mr[:-1000], "truncated: pixel data declares")
    put("text.dcm", b"hello, I am not DICOM\n" * 20, "not DICOM")
    put("random.bin", random.Random(4).randbytes(4096), "not DICOM")
    put("dicm_only.dcm", b"\0" * 128 + b"DICM", "truncated or not DICOM")
    for i, keyword in enumerate(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
        path = _good(archive, f"no_{keyword}.dcm", 50 + i, **{keyword: None})
        bad[path] = f"missing {keyword}"
    gone = _good(archive, "vanished.dcm", 60)
    gone.unlink()
    bad[gone] = "No such file"
    folder = archive / "a_directory.dcm"
    folder.mkdir()
    bad[folder] = "is a directory"
    fifo = archive / "a_fifo.dcm"
    os.mkfifo(fifo)
    bad[fifo] = "not a regular file"
    loop = archive / "loop.dcm"
    loop.symlink_to(loop)
    bad[loop] = "Too many levels of symbolic links"
    return bad


def _sortable_files(archive: Path) -> dict[Path, str]:
    """Odd but usable files: each must be sorted, with its series UID."""
    out: dict[Path, str] = {}
    meta = archive / "no_preamble.dcm"
    meta.write_bytes(_good(archive, "tmp.dcm", 1).read_bytes()[132:])
    (archive / "tmp.dcm").unlink()
    out[meta] = f"{STUDY}.1"
    for i, keyword in enumerate(("PatientID", "StudyDate", "StudyTime", "StudyDescription"), 2):
        out[_good(archive, f"no_{keyword}.dcm", i, **{keyword: None})] = f"{STUDY}.{i}"
    everything = {k: None for k in ("PatientID", "StudyDate", "StudyTime", "StudyDescription")}
    out[_good(archive, "none_of_them.dcm", 6, **everything)] = f"{STUDY}.6"
    return out


FORGING_NAME = "gone\x1b[31m\u2028\x85 2026-11-29 10:00:00.000 ERROR [1] forged line.dcm"
BAD_LINES = {  # a marker in the line -> (a part of) the reason to log
    b"LONGLINE," + b"x" * 5000: "longer than 4096 bytes",
    b"NOTUTF8,\xff\xfe,1.2.3.4,/d,f": "not UTF-8",
    b"WRONGCOUNT3,b,c": "expected 5 comma-separated fields",
    b"WRONGCOUNT6,b,c,/d,e,f": "expected 5 comma-separated fields",
    b"RELDIR,b,c,relative/dir,f": "not an absolute path",
    b"NULBYTE,b,c,/d\x00x,f": "control characters",
    b"SINGLEFIELD.dcm": "must be an absolute path",
}


@pytest.mark.e2e
def test_bad_lines_and_files_get_one_line_each_and_the_daemon_goes_on(tmp_path: Path) -> None:
    site = Site(tmp_path)
    bad = _bad_files(site.archive)
    sortable = _sortable_files(site.archive)
    crlf = _good(site.archive, "crlf.dcm", 7)
    last = _good(site.archive, "last.dcm", 8)
    archive_before = checksums(site.archive)

    daemon = site.start_run("--no-catch-up")
    try:
        lines = [line_for(p) for p in bad]
        lines[3:3] = list(BAD_LINES) + [b"", b"   \r"]  # in between the files
        lines += [line_for(p) for p in sortable]
        lines.append(line_for(site.archive / FORGING_NAME))
        lines += [line_for(crlf) + b"\r\n", line_for(last)]
        feed(site.pipe, lines)
        wait_linked(site, last)
        assert daemon.poll() is None
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    log = site.log_text().splitlines()

    # each bad file: exactly one line, an ERROR naming it and the reason
    for path, reason in bad.items():
        about = [x for x in log if f"] {path}: " in x]
        assert len(about) == 1, (path, about)
        assert " ERROR " in about[0] and reason in about[0], about[0]
    for marker, reason in BAD_LINES.items():
        about = [x for x in log if marker.split(b",")[0].decode() in x]
        assert len(about) == 1 and " ERROR " in about[0] and reason in about[0], about
    assert len([x for x in log if x.endswith("pipe line rejected: empty line")]) == 2
    (forging,) = [x for x in log if "forged" in x]  # escaped: one line, nothing forged
    assert "gone\\x1b[31m\\u2028\\x85" in forging and "No such file" in forging, forging

    # the odd but usable files are sorted, without an error
    sorted_now = set(linked(site).values())
    assert sorted_now == {str(p) for p in [*sortable, crlf, last]}
    for path in [*sortable, crlf, last]:
        assert not [x for x in log if str(path) in x and (" ERROR " in x or " WARNING " in x)]
    records = {r["SeriesInstanceUID"]: r for r in site.records().values()}
    assert set(records) == {*sortable.values(), f"{STUDY}.7", f"{STUDY}.8"}
    assert records[f"{STUDY}.5"]["StudyDescription"] == "missing"
    assert "PatientID" not in records[f"{STUDY}.2"]
    when = sorted(p.name for p in (site.site / "participants" / "BAD01").iterdir())
    assert when == ["20240102_101010", "20240102_unknown", "unknown_101010"]

    # no partial output of the bad ones: no marker, no state, no temporary file, no failure
    series = {s for s in records}
    markers = {m.rsplit(" ", 1)[1] for m in os.listdir(site.site / ".arrived")}
    assert markers == series
    states = {p.stem for p in (site.site / ".dcmsortd" / "series").glob("*/*.json")}
    assert states == series
    assert os.listdir(site.site / "temp") == []

    # item 9: nothing received was modified or deleted
    assert checksums(site.archive) == archive_before

    # item 11: every error line has one shape: time, level, [pid], the input, the reason
    errors = error_lines(site)
    assert len(errors) == len(bad) + len(BAD_LINES) + 2 + 1
    for line in errors:
        match = ERROR_SHAPE.match(line)
        assert match is not None, line
        assert match["input"].startswith(("pipe line", str(site.archive))), line
    assert "Traceback" not in site.log_text()


@pytest.mark.e2e
def test_an_unreadable_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    prefix = without_dac_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot bind here")
    site = Site(tmp_path)
    locked = _good(site.archive, "locked.dcm", 20)
    locked.chmod(0)
    last = _good(site.archive, "after.dcm", 21)
    before = checksums(site.archive)
    daemon = start_run_as(site, prefix, "--no-catch-up")
    try:
        feed(site.pipe, [line_for(locked), line_for(last)])
        wait_linked(site, last)
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    (line,) = [x for x in site.log_text().splitlines() if str(locked) in x]
    assert ERROR_SHAPE.match(line) and "permission denied" in line.lower(), line
    assert list(linked(site).values()) == [str(last)]
    assert checksums(site.archive) == before


# ------------------------------------------------------------------ item 10: fuzzing

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_any_text_line_gives_a_clean_arrival_or_a_notification_error(text: str) -> None:
    try:
        a = parse_line(text)
    except NotificationError:
        return
    _assert_clean(a)


_FIELD = st.text(st.characters(blacklist_characters=",\n"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.tuples(_FIELD, _FIELD, _FIELD, _FIELD, _FIELD), st.sampled_from(["", "\n", "\r\n"]))
def test_five_field_lines_give_the_joined_path_or_a_notification_error(
    fields: tuple[str, str, str, str, str], end: str
) -> None:
    line = ",".join(fields) + end
    try:
        a = parse_line(line.encode("utf-8", "surrogatepass"))
    except NotificationError:
        return
    _assert_clean(a)
    assert a.path == os.path.normpath(os.path.join(fields[3].strip(), fields[4].strip()))


def _assert_clean(a: Arrival) -> None:
    assert a.path.startswith("/") and a.path == os.path.normpath(a.path)
    assert not any(ch in a.path for ch in "\x00\n\r")
    for ae in (a.caller, a.called):
        assert ae and not any(ch in ae for ch in "'\" \\\t,\n")
    assert "," not in a.ip and "\n" not in a.ip


_SITE = "/data/site"
_RULE_KEYS = load_rules(None).tag_keys()
_SEED_BYTES: dict[str, bytes] = {}


def _seed(name: str) -> bytes:
    if name not in _SEED_BYTES:
        path = shared_dicom(name) if name.startswith("siemens") else pydicom_data(name)
        _SEED_BYTES[name] = path.read_bytes()
    return _SEED_BYTES[name]


@st.composite
def _mutated_header(draw: st.DrawFn) -> bytes:
    data = bytearray(_seed(draw(st.sampled_from(
        ["siemens_ve11_dwi_b0.dcm", "siemens_ve11_phoenixzip_sr.dcm", "test-SR.dcm",
         "CT_small.dcm"]))))
    for _ in range(draw(st.integers(1, 8))):
        end = min(len(data), 20_000)  # the header; the pixel data is only measured
        if end <= 133:
            break
        pos = draw(st.integers(132, end - 1))
        kind = draw(st.sampled_from(["byte", "length", "cut"]))
        if kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "length":
            data[pos:pos + 2] = struct.pack("<H", draw(st.sampled_from([0, 1, 0xFFFF, 7])))
        else:
            del data[pos:pos + draw(st.integers(1, 40))]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=_mutated_header())
def test_mutated_headers_with_the_rules_tags_give_an_instance_inside_the_site_or_an_error(
    fuzz_dir: Path, data: bytes
) -> None:
    path = fuzz_dir / "mutated.dcm"
    path.write_bytes(data)
    try:
        inst = read_instance(str(path), _RULE_KEYS)
    except HeaderError:
        return
    _assert_inside(plan(_SITE, inst, Arrival("A", "B", "1.2.3.4", str(path))))


def _assert_inside(where: object) -> None:
    for value in vars(where).values():
        if value is None:
            continue
        assert value == os.path.normpath(value) and value.startswith(_SITE + "/"), value
        for part in value[len(_SITE) + 1:].split("/"):
            assert part and not part.startswith(".") or part == ".arrived", value
            limit = 255 if value.startswith(_SITE + "/.arrived/") else MAX_COMPONENT_BYTES + 5
            assert len(part.encode("utf-8")) <= limit, value


_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US", b"OB", b"UN", b"UT",
        b"SQ", b"OW", b"ZZ"]
_LONG = {b"OB", b"UN", b"UT", b"SQ", b"OW"}
_READ_TAGS = [tag for _, tag in RECORD_TAGS + UID_TAGS] + [0x00080016, 0x00080023, 0x0040A043]


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value) & 0xFFFF) + value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(elements=[(0x0020000D, b"ZZ", b"")])  # an empty UID of unknown VR: pydicom raised
@given(st.lists(st.tuples(st.sampled_from(_READ_TAGS), st.sampled_from(_VRS),
                          st.binary(max_size=80)), min_size=1, max_size=6))
def test_any_vr_and_value_in_the_elements_read_give_an_instance_or_a_header_error(
    elements: list[tuple[int, bytes, bytes]]
) -> None:
    """A meta-less explicit VR little endian data set whose record and UID elements hold
    any VR and any bytes: read as a file would be (pydicom decodes lazily)."""
    chosen = {tag: (b"UI", b"1.2.3.4\0") for _, tag in UID_TAGS}  # valid, unless drawn
    chosen[0x00080060] = (b"CS", b"SR")  # a structured report: its listing entry is read too
    chosen.update({tag: (vr, value) for tag, vr, value in elements})
    body = b"".join(_element(tag, *chosen[tag]) for tag in sorted(chosen))
    ds = Dataset()
    ds.update(pydicom.filereader.read_dataset(io.BytesIO(body), is_implicit_VR=False,
                                              is_little_endian=True))
    try:
        inst = instance_from_dataset(ds, "/data/site/archive/x", _RULE_KEYS)
    except HeaderError:
        return
    _assert_inside(plan(_SITE, inst, Arrival("A", "B", "1.2.3.4", "/data/site/archive/x")))


_CSA_DS: dict[str, Dataset] = {}


def _csa_dataset(into: Path) -> Dataset:
    if "dwi" not in _CSA_DS:
        path = nibabel_data("siemens_dwi_1000.dcm.gz", into)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CSA_DS["dwi"] = pydicom.dcmread(path, stop_before_pixels=True)
    return _CSA_DS["dwi"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_csa_elements_give_a_header_none_or_a_csa_error(
    fuzz_dir: Path, data: st.DataObject
) -> None:
    ds = copy.deepcopy(_csa_dataset(fuzz_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom validates what we set; the reader will not
        for tag in (0x00291010, 0x00291020):
            value = bytearray(ds[tag].value)
            for _ in range(data.draw(st.integers(0, 10))):
                value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
            ds[tag].value = bytes(value[: data.draw(st.integers(0, len(value)))])
            if data.draw(st.booleans()):
                ds[tag].VR = data.draw(st.sampled_from(["OB", "UN", "LO", "UT", "SQ", "US"]))
        if data.draw(st.integers(0, 4)) == 0:
            ds[0x00290010].value = data.draw(st.sampled_from(
                ["SIEMENS CSA HEADER\x00", " SIEMENS CSA HEADER ", "", "X" * 70]))
    for kind in ("image", "series"):
        try:
            hdr = csa.header(ds, kind)
        except csa.CsaError:
            continue
        if hdr is not None:
            assert all(isinstance(name, str) for name in hdr)
            csa.protocol_text(hdr)
    with contextlib.suppress(HeaderError):
        instance_from_dataset(ds, "/data/site/archive/x", _RULE_KEYS)


def test_the_fuzzed_seeds_are_real(fuzz_dir: Path) -> None:
    """The seeds of the fuzzing above read cleanly, so the mutations start from good input."""
    for name in ("siemens_ve11_dwi_b0.dcm", "test-SR.dcm", "CT_small.dcm"):
        path = shared_dicom(name) if name.startswith("siemens") else pydicom_data(name)
        assert read_instance(str(path), _RULE_KEYS).sop_uid
    assert csa.header(_csa_dataset(fuzz_dir), "image") is not None
