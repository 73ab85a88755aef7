"""One SOPInstanceUID under two paths: a re-send stays quiet, different content warns once.

Issue 14 (smaller things). Real files, re-stamped: the copy of a re-send differs only in
its file meta group (a re-sending node writes its own AE title there), a conflicting copy
has another PatientName of the same length (same size, different bytes) or another length.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from daemonproc import Site, stop
from dcmsortd.sorting.duplicates import dataset_offset, same_data_set
from pipefeed import feed, line_for, linked, wait_linked
from realfiles import restamp, shared_dicom

STUDY = "1.2.826.0.1.3680043.8.498.1416"
SERIES = f"{STUDY}.1"
SOP = f"{SERIES}.1"


def _first(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return restamp(shared_dicom("siemens_ve11_fieldmap.dcm"), folder / "first.dcm", STUDY,
                   SERIES, SOP, PatientName="Alpha^Beta", SeriesNumber="")


def _resent(first: Path, dst: Path) -> Path:
    """The same data set, written again with another file meta group (as a PACS would)."""
    ds = pydicom.dcmread(first)
    ds.file_meta.SourceApplicationEntityTitle = "OTHER_PACS_NODE"
    ds.save_as(dst)
    return dst


def test_offset_is_after_the_file_meta_group() -> None:
    path = shared_dicom("siemens_ve11_fieldmap.dcm")
    with open(path, "rb") as fp:
        offset = dataset_offset(fp)
    data = path.read_bytes()
    assert data[offset : offset + 2] == b"\x08\x00"  # the first element of group 0008
    assert data[offset - 200 : offset].count(b"\x02\x00") >= 1  # meta elements before it


def test_same_content_and_different_content(tmp_path: Path) -> None:
    first = _first(tmp_path)
    copy = tmp_path / "copy.dcm"
    shutil.copyfile(first, copy)
    resent = _resent(first, tmp_path / "resent.dcm")
    assert resent.stat().st_size != first.stat().st_size  # the meta group grew
    same_size = restamp(first, tmp_path / "same_size.dcm", PatientName="Gamma^Beta")
    assert same_size.stat().st_size == first.stat().st_size
    longer = restamp(first, tmp_path / "longer.dcm", PatientName="Alpha^Betamax")
    assert same_data_set(str(first), str(copy)) is True
    assert same_data_set(str(first), str(resent)) is True
    assert same_data_set(str(first), str(same_size)) is False
    assert same_data_set(str(first), str(longer)) is False
    assert same_data_set(str(first), str(tmp_path / "gone.dcm")) is None
    (tmp_path / "linked").symlink_to(tmp_path)
    assert same_data_set(str(first), str(tmp_path / "linked" / "first.dcm")) is True


def test_a_file_without_meta_is_compared_whole(tmp_path: Path) -> None:
    first = _first(tmp_path)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(first.read_bytes()[132:])
    assert same_data_set(str(bare), str(bare)) is True
    assert same_data_set(str(first), str(bare)) is False  # the meta group is compared too


@pytest.mark.e2e
def test_daemon_warns_once_naming_both_paths_and_keeps_the_first(tmp_path: Path) -> None:
    site = Site(tmp_path)
    first = _first(site.archive / "a")
    (site.archive / "b").mkdir()
    resent = _resent(first, site.archive / "b" / "resent.dcm")
    conflict = restamp(first, site.archive / "b" / "conflict.dcm", PatientName="Gamma^Beta")
    last = restamp(shared_dicom("siemens_ve11_fieldmap.dcm"), site.archive / "b" / "last.dcm",
                   STUDY, f"{STUDY}.2", f"{STUDY}.2.1")
    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, [line_for(first), line_for(resent), line_for(conflict),
                         line_for(first), line_for(last)])
        wait_linked(site, last)
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    targets = sorted(linked(site).values())
    assert targets == sorted([str(first), str(last)])  # the first copy stays linked
    log = site.log_text().splitlines()
    warnings = [x for x in log if " WARNING " in x]
    assert len(warnings) == 1, warnings
    assert f"{conflict}: SOPInstanceUID {SOP} arrived before as {first}" in warnings[0]
    assert not [x for x in log if str(resent) in x]  # a re-send stays quiet
    (record,) = [r for r in site.records().values() if r["SeriesInstanceUID"] == SERIES]
    assert record["NumFiles"] == "1"
    assert record["PatientName"] == "Alpha^Beta"
    assert record["SeriesNumber"] == "None"  # empty IS, as pydicom's str() and the original
