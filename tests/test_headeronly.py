"""Images without pixel data are sorted (one WARNING each); files cut inside an element are not.

Issue 14, part 1. The header-only files are real: nibabel's ``csa_slice_norm.dcm`` (a Siemens
mosaic whose pixels were stripped) and real files cut here at the boundary just before their
PixelData element, or at an earlier element boundary after Rows. The damaged ones are the
same real files cut inside an element's value or inside an element's head.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from bulkcorpus import Site as BulkSite
from bulkcorpus import restore_logging
from daemonproc import Site, stop
from dcmsortd.dicom.dicomfile import read_dataset
from dcmsortd.dicom.header import read_instance
from dcmsortd.model.errors import HeaderError
from pipefeed import feed, line_for, linked, wait_linked
from realfiles import nibabel_data, pydicom_data, restamp, shared_dicom

__all__ = ["restore_logging"]
ROWS = 0x00280010
PIXEL_DATA = 0x7FE00010
# real files of every little/big endian, implicit/explicit reading path of dicomfile
REAL = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "CT_small.dcm"]


def _ends(path: Path) -> list[tuple[int, int, int]]:
    """(tag, value start, value end) of each top-level element with a defined length, as
    pydicom reads the file (no pixel data), in file order."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = []
    for tag in sorted(ds.keys()):  # not `in ds`: that converts every element
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement):
            continue  # Specific Character Set: pydicom converts it while reading
        if raw.length != 0xFFFFFFFF:
            out.append((int(tag), raw.value_tell, raw.value_tell + raw.length))
    return out


def _pixel_start(path: Path) -> int:
    ends = _ends(path)
    data = path.read_bytes()
    start = ends[-1][2]
    assert int.from_bytes(data[start : start + 2], "little" if "bigendian" not in path.name
                          else "big") == PIXEL_DATA >> 16
    return start


def _cut(src: Path, dst: Path, at: int) -> Path:
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def test_nibabel_header_only_file_is_read_and_flagged() -> None:
    path = nibabel_data("csa_slice_norm.dcm")
    read = read_dataset(str(path))
    assert ROWS in read.dataset and not read.pixel_data and read.image_without_pixels
    inst = read_instance(str(path))
    assert not inst.pixel_data
    assert inst.fields["SequenceName"] == "epfid2d1_64"
    assert inst.fields["PhaseEncodingDirectionPositive"] == "1"  # the CSA header is read


@pytest.mark.parametrize("name", REAL)
def test_real_file_cut_before_its_pixel_data_is_sorted(tmp_path: Path, name: str) -> None:
    src = pydicom_data(name)
    whole = read_instance(str(src))
    assert whole.pixel_data
    cut = _cut(src, tmp_path / name, _pixel_start(src))
    inst = read_instance(str(cut))
    assert not inst.pixel_data
    assert (inst.study_uid, inst.series_uid, inst.sop_uid) == (
        whole.study_uid, whole.series_uid, whole.sop_uid)
    assert inst.fields == whole.fields


@pytest.mark.parametrize("name", REAL)
def test_real_file_cut_at_every_element_boundary_after_rows_is_sorted(
    tmp_path: Path, name: str
) -> None:
    src = pydicom_data(name)
    ends = _ends(src)
    after_rows = [end for tag, _, end in ends if tag >= ROWS]
    assert len(after_rows) >= 3
    for at in after_rows:
        inst = read_instance(str(_cut(src, tmp_path / "x.dcm", at)))
        assert not inst.pixel_data, at


@pytest.mark.parametrize("name", REAL)
def test_real_file_cut_inside_an_element_is_refused(tmp_path: Path, name: str) -> None:
    src = pydicom_data(name)
    inside = [(start + end) // 2 for _, start, end in _ends(src) if end - start >= 2]
    heads = [end + 3 for _, _, end in _ends(src)[:-1]]  # three bytes into the next head
    pixels = _pixel_start(src)
    cuts = [*inside[-12:], *heads[-12:], pixels + 6, pixels + 20, pixels + 1000]
    for at in cuts:
        with pytest.raises(HeaderError, match="^truncated|^corrupt"):
            read_instance(str(_cut(src, tmp_path / "x.dcm", at)))


def test_siemens_file_with_csa_cut_before_pixels_and_inside_the_csa(tmp_path: Path) -> None:
    src = shared_dicom("siemens_ve11_fieldmap.dcm")
    inst = read_instance(str(_cut(src, tmp_path / "head.dcm", _pixel_start(src))))
    assert not inst.pixel_data and inst.fields["Manufacturer"] == "SIEMENS"
    (csa_series,) = [(s, e) for tag, s, e in _ends(src) if tag == 0x00291020]
    with pytest.raises(HeaderError, match="^truncated: element .* declares"):
        read_instance(str(_cut(src, tmp_path / "csa.dcm", csa_series[0] + 100)))


def test_a_report_without_pixel_data_is_no_image_and_not_flagged() -> None:
    inst = read_instance(str(shared_dicom("siemens_ve11_phoenixzip_sr.dcm")))
    assert inst.pixel_data  # "pixel_data" False means an image header without pixels


def _header_only_series(folder: Path) -> tuple[list[Path], list[Path]]:
    """Three header-only images of one series (nibabel's file re-stamped, and a real file
    cut before its pixels), and two files cut inside an element."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = "1.2.826.0.1.3680043.8.498.14", "1.2.826.0.1.3680043.8.498.14.1"
    good = [restamp(nibabel_data("csa_slice_norm.dcm"), folder / f"hdr{i}.dcm", study, series,
                    f"{series}.{i}") for i in range(1, 3)]
    mr = shared_dicom("siemens_vb17_axial.dcm")
    whole = restamp(mr, folder / "whole.tmp", study, f"{series}9", f"{series}9.1")
    good.append(_cut(whole, folder / "cut_before_pixels.dcm", _pixel_start(whole)))
    bad = [_cut(whole, folder / "cut_in_pixels.dcm", whole.stat().st_size - 100),
           _cut(whole, folder / "cut_in_header.dcm", _ends(whole)[-2][1] + 1)]
    whole.unlink()
    return good, bad


@pytest.mark.e2e
def test_daemon_sorts_header_only_files_with_one_warning_each(tmp_path: Path) -> None:
    site = Site(tmp_path)
    good, bad = _header_only_series(site.archive / "in")
    daemon = site.start_run("--no-catch-up")
    try:
        feed(site.pipe, [line_for(p) for p in [*bad, *good]])
        for path in good:
            wait_linked(site, path)
    finally:
        code, out = stop(daemon)
    assert code == 0, out
    assert set(linked(site).values()) == {str(p) for p in good}
    log = site.log_text().splitlines()
    for path in good:
        about = [x for x in log if f"{path}:" in x]
        assert len(about) == 1 and " WARNING " in about[0] and "no pixel data" in about[0], about
    for path in bad:
        about = [x for x in log if f"{path}:" in x]
        assert len(about) == 1 and " ERROR " in about[0] and "truncated" in about[0], about
    records = site.records()
    assert sorted(r["NumFiles"] for r in records.values()) == ["1", "2"]
    assert len(os.listdir(site.site / ".arrived")) == 2


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("command", ["import", "catch-up"])
def test_import_and_catch_up_sort_header_only_files(tmp_path: Path, command: str) -> None:
    site = BulkSite(tmp_path / "site")
    folder = site.datadir / "incoming" if command == "catch-up" else tmp_path / "in"
    good, bad = _header_only_series(folder)
    args = [] if command == "catch-up" else [str(folder)]
    assert site.run(command, *args) == 0  # bad files are skipped and named, not failures
    targets = {os.readlink(p) for p in (site.site / "raw").glob("*/*/*") if p.is_symlink()}
    assert targets == {str(p) for p in good}
    text = site.log_text()
    for path in good:
        assert f"{path}: no pixel data" in text
    for path in bad:
        assert f"{path}: truncated" in text


@pytest.mark.usefixtures("restore_logging")
def test_catch_up_reads_again_a_file_an_older_reader_refused(tmp_path: Path) -> None:
    """A header-only image the reader before issue 14 refused is in the index as ``bad``:
    the next catch-up reads it again and sorts it; files refused now are not read again."""
    from dcmsortd.sorting.index import BAD, ProcessedIndex

    site = BulkSite(tmp_path / "site")
    good, bad = _header_only_series(site.datadir / "incoming")
    index = ProcessedIndex(str(site.site / ".dcmsortd" / "processed.sqlite"))
    index._db.executemany(  # rows as the reader before wrote them
        "INSERT INTO files (path, size, mtime_ns, outcome) VALUES (?, ?, ?, 'bad')",
        [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in [*good, *bad]])
    index.close()
    assert site.run("catch-up") == 0
    targets = {os.readlink(p) for p in (site.site / "raw").glob("*/*/*") if p.is_symlink()}
    assert targets == {str(p) for p in good}
    index = ProcessedIndex(str(site.site / ".dcmsortd" / "processed.sqlite"))
    rows = dict(index._db.execute("SELECT path, outcome FROM files").fetchall())
    index.close()
    assert {rows[str(p)] for p in bad} == {BAD}
    assert {rows[str(p)] for p in good} == {"sorted"}
    before = site.log_text()
    assert site.run("catch-up") == 0
    assert not [x for x in site.log_text()[len(before):].splitlines() if "truncated" in x]
