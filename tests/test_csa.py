"""The CSA wrapper: real Siemens headers, absent and corrupt ones, value rendering, fuzzing."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from dcmsortd.dicom import csa
from realfiles import nibabel_data, pydicom_data, shared_dicom


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _siemens_block(image: object = None, series: object = None, vr: str = "OB") -> Dataset:
    ds = Dataset()
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    if image is not None:
        ds.add_new(0x00291010, vr, image)
    if series is not None:
        ds.add_new(0x00291020, vr, series)
    return ds


def test_image_and_series_headers_of_a_siemens_dwi(tmp_path: Path) -> None:
    ds = _read(nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path))
    image = csa.header(ds, "image")
    series = csa.header(ds, "series")
    assert image is not None and series is not None
    assert image["B_value"] == [1000]
    assert csa.scalar(image, "B_value") == "1000"
    assert csa.scalar(image, "DiffusionDirectionality") == "DIRECTIONAL"
    assert csa.vector(image, "DiffusionGradientDirection") == [
        "0.99997449",
        "0.00505012",
        "-0.00505012",
    ]
    assert csa.scalar(image, "PhaseEncodingDirectionPositive") == "1"
    text = csa.protocol_text(series)
    assert text is not None and "### ASCCONV BEGIN" in text


def test_empty_items_and_absent_tags_give_none() -> None:
    ds = _read(shared_dicom("siemens_vb17_axial.dcm"))
    image = csa.header(ds, "image")
    assert image is not None
    assert image["B_value"] == []
    assert csa.scalar(image, "B_value") is None
    assert csa.vector(image, "DiffusionGradientDirection") is None
    assert csa.scalar(image, "NoSuchTag") is None


def test_series_header_of_an_sr_has_no_protocol_text() -> None:
    ds = _read(shared_dicom("siemens_ve11_phoenixzip_sr.dcm"))
    series = csa.header(ds, "series")
    assert series is not None
    assert csa.protocol_text(series) is None


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "test-SR.dcm"])
def test_no_csa_header_gives_none(name: str) -> None:
    ds = _read(pydicom_data(name))
    assert csa.header(ds, "image") is None
    assert csa.header(ds, "series") is None
    assert csa.raw_header(ds, "series") is None


def test_enhanced_xa_files_have_no_csa() -> None:
    ds = _read(shared_dicom("siemens_xa60_enhanced_bold_1.dcm"))
    assert csa.header(ds, "image") is None


def test_creator_without_element_and_empty_element_give_none() -> None:
    assert csa.header(_siemens_block(), "image") is None
    assert csa.header(_siemens_block(image=b""), "image") is None


def test_corrupt_header_raises_csa_error() -> None:
    with pytest.raises(csa.CsaError, match="^corrupt: CSAReadError"):
        csa.header(_siemens_block(image=b"SV10\x04\x03\x02\x01" + b"\xff" * 40), "image")


def test_text_element_instead_of_binary_raises_csa_error() -> None:
    with pytest.raises(csa.CsaError, match="^not binary data but str$"):
        csa.raw_header(_siemens_block(series="some text", vr="LO"), "series")


@pytest.mark.parametrize(
    ("value", "text"),
    [(1000, "1000"), (1000.0, "1000.00000000"), (-0.0, "-0.00000000"),
     (0.70710678, "0.70710678"), (1.0, "1.00000000"), ("A", "A")],
)
def test_text_renders_items_as_the_csa_text_holds_them(value: csa.CsaValue, text: str) -> None:
    assert csa.text(value) == text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_of_random_bytes_returns_a_header_or_raises_csa_error(raw: bytes) -> None:
    for candidate in (raw, b"SV10\x04\x03\x02\x01" + raw):
        try:
            hdr = csa.parse(candidate)
        except csa.CsaError:
            continue
        assert all(isinstance(name, str) for name in hdr)


_REAL_CSA: dict[str, bytes] = {}


def _real_image_csa() -> bytes:
    if "image" not in _REAL_CSA:
        ds = _read(nibabel_data("csa_slice_norm.dcm"))
        raw = csa.raw_header(ds, "image")
        assert raw is not None
        _REAL_CSA["image"] = raw
    return _REAL_CSA["image"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_header_returns_a_header_or_raises_csa_error(data: st.DataObject) -> None:
    raw = bytearray(_real_image_csa())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        hdr = csa.parse(bytes(raw[:cut]))
    except csa.CsaError:
        return
    for items in hdr.values():
        for item in items:
            assert isinstance(csa.text(item), str)
