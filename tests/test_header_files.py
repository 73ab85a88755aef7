"""Reading files: bad input of every kind gives HeaderError with its reason; fuzzing."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcmsortd.dicom.header import read_instance
from dcmsortd.model.errors import HeaderError
from realfiles import pydicom_data, restamp, shared_dicom

SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _meta_end(data: bytes) -> int:
    """Offset of the first byte after the file meta group of a standard file."""
    group_length: int = struct.unpack("<I", data[140:144])[0]  # (0002,0000) UL, explicit VR
    return 144 + group_length


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="^empty file$"):
        read_instance(_write(tmp_path / "x", b""))


@pytest.mark.parametrize("data", [os.urandom(4096), b"hello, world\n" * 50, b"\0" * 200])
def test_not_dicom(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(HeaderError, match="^not DICOM"):
        read_instance(_write(tmp_path / "x", data))


def test_truncated_header(tmp_path: Path) -> None:
    data = shared_dicom("siemens_ve11_fieldmap.dcm").read_bytes()
    with pytest.raises(HeaderError, match="^truncated: element .* declares"):
        read_instance(_write(tmp_path / "x", data[:5000]))


@pytest.mark.parametrize("cut", [1, 100, 8000])
def test_truncated_pixel_data(tmp_path: Path, cut: int) -> None:
    data = shared_dicom("siemens_ve11_fieldmap.dcm").read_bytes()
    with pytest.raises(HeaderError, match="^truncated: pixel data declares 8192 bytes"):
        read_instance(_write(tmp_path / "x", data[:-cut]))


def test_image_cut_just_before_its_pixel_data_is_a_header_only_image(tmp_path: Path) -> None:
    """Issue 14: such a file cannot be told from one whose pixels were stripped; it is read
    (and sorted, with a warning). More in tests/test_headeronly.py."""
    data = pydicom_data("MR_small.dcm").read_bytes()
    pixels = data.rindex(b"\xe0\x7f\x10\x00")
    inst = read_instance(_write(tmp_path / "x", data[:pixels]))
    assert not inst.pixel_data and inst.modality == "MR"


def test_truncated_pixel_data_implicit_and_big_endian(tmp_path: Path) -> None:
    for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        data = pydicom_data(name).read_bytes()
        assert read_instance(_write(tmp_path / name, data)).modality == "MR"
        with pytest.raises(HeaderError, match="^truncated: pixel data"):
            read_instance(_write(tmp_path / name, data[:-2]))


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "JPEG2000.dcm"])
def test_encapsulated_pixel_data(tmp_path: Path, name: str) -> None:
    data = pydicom_data(name).read_bytes()
    assert data.endswith(SEQUENCE_DELIMITER)
    read_instance(_write(tmp_path / "whole", data))
    padded = data + struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, 4) + b"\0" * 4
    read_instance(_write(tmp_path / "padded", padded))  # not at the end: items are walked
    with pytest.raises(HeaderError, match="^truncated: encapsulated pixel data ends"):
        read_instance(_write(tmp_path / "cut", data[:-8]))
    with pytest.raises(HeaderError, match="^truncated: a pixel data fragment"):
        read_instance(_write(tmp_path / "cut", data[:-40]))


def test_deflated_file_is_read(tmp_path: Path) -> None:
    inst = read_instance(str(pydicom_data("image_dfl.dcm")))
    assert inst.study_uid


def test_huge_declared_length_is_truncation_not_a_huge_read(tmp_path: Path) -> None:
    data = pydicom_data("test-SR.dcm").read_bytes()
    data += struct.pack("<HH2sHI", 0x0029, 0x1020, b"OB", 0, 0xFFFFFFF0) + b"abc"
    with pytest.raises(HeaderError, match="declares 4294967280 bytes, the file holds 3"):
        read_instance(_write(tmp_path / "x", data))


def test_stray_bytes_after_the_last_element(tmp_path: Path) -> None:
    data = pydicom_data("test-SR.dcm").read_bytes()
    with pytest.raises(HeaderError, match="^truncated: 3 stray bytes"):
        read_instance(_write(tmp_path / "x", data + b"\x08\x00\x10"))


def test_file_meta_without_preamble_is_read(tmp_path: Path) -> None:
    data = shared_dicom("siemens_vb17_axial.dcm").read_bytes()
    inst = read_instance(_write(tmp_path / "x", data[128 + 4 :]))
    assert inst.fields["NumSlices"] == "35"


@pytest.mark.parametrize("name", ["siemens_vb17_axial.dcm", "siemens_ve11_dwi_b0.dcm"])
def test_dataset_without_preamble_and_meta_is_read(tmp_path: Path, name: str) -> None:
    data = shared_dicom(name).read_bytes()
    inst = read_instance(_write(tmp_path / "x", data[_meta_end(data) :]))
    assert inst.fields["PhaseEncodingDirectionPositive"] == "1"
    assert inst.fields["Modality"] == "MR"


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_uid(tmp_path: Path, keyword: str) -> None:
    path = restamp(pydicom_data("CT_small.dcm"), tmp_path / "x.dcm", **{keyword: None})
    with pytest.raises(HeaderError, match=f"^missing {keyword}$"):
        read_instance(str(path))


def test_missing_patient_and_study_values_are_not_errors(tmp_path: Path) -> None:
    gone = {k: None for k in ("PatientID", "StudyDate", "StudyTime", "StudyDescription")}
    path = restamp(pydicom_data("CT_small.dcm"), tmp_path / "x.dcm", **gone)
    inst = read_instance(str(path))
    assert (inst.patient_id, inst.study_date, inst.study_time) == ("", "", "")
    assert inst.fields["StudyDescription"] == "missing"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="^is a directory"):
        read_instance(str(tmp_path))


def test_vanished(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="^vanished"):
        read_instance(str(tmp_path / "gone.dcm"))


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            read_instance(str(fifo))
        except HeaderError as exc:
            errors.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "read_instance blocked on a FIFO"
    assert [str(e) for e in errors] == ["not a regular file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(pydicom_data("CT_small.dcm").read_bytes())
    path.chmod(0)
    with pytest.raises(HeaderError, match="^unreadable: permission denied"):
        read_instance(str(path))


# --- fuzzing: mutated real files give an Instance or HeaderError, never anything else ---

_SEEDS = ("siemens_ve11_fieldmap.dcm", "siemens_vb17_axial.dcm", "siemens_xa60_enhanced_bold_2.dcm")
_SEED_BYTES: dict[str, bytes] = {}


def _seed(name: str) -> bytes:
    if name not in _SEED_BYTES:
        if name.startswith("siemens"):
            _SEED_BYTES[name] = shared_dicom(name).read_bytes()
        else:
            _SEED_BYTES[name] = pydicom_data(name).read_bytes()
    return _SEED_BYTES[name]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(_seed(draw(st.sampled_from(_SEEDS + ("test-SR.dcm", "SC_rgb_rle.dcm")))))
    # mutations land in the header, mostly after the preamble, where parsing happens
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "splice", "delete", "insert"]))
        low = draw(st.sampled_from([0, 132, 132, 132]))
        pos = low + draw(st.integers(0, max(0, min(len(data), 130_000) - low - 1)))
        if pos >= len(data):
            break
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "splice":
            data[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xfe\xff\xdd\xe0"]))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "mutated.dcm"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=_mutated())
def test_mutated_files_give_an_instance_or_header_error(fuzz_file: Path, data: bytes) -> None:
    fuzz_file.write_bytes(data)
    try:
        inst = read_instance(str(fuzz_file))
    except HeaderError as exc:
        assert not str(exc).startswith("unexpected"), str(exc)  # the safety net stays unused
        return
    assert inst.study_uid and inst.series_uid and inst.sop_uid
    assert all(isinstance(v, str) for v in inst.fields.values())


def test_implicit_data_set_under_an_explicit_transfer_syntax_is_read(tmp_path: Path) -> None:
    """pydicom's SC_rgb_jpeg.dcm says JPEG Baseline (explicit VR) but its data set is
    implicit VR; pydicom switches, and so does the check of its encapsulated pixel data."""
    path = pydicom_data("SC_rgb_jpeg.dcm")
    inst = read_instance(str(path))
    assert inst.pixel_data and inst.sop_uid
    data = path.read_bytes()
    with pytest.raises(HeaderError, match="^truncated: a pixel data fragment"):
        read_instance(_write(tmp_path / "cut", data[:-200]))
