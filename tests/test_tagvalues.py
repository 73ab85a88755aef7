"""values_from_dataset: plain, picklable snapshots of the tags the rules read; never raises."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from dcmsortd.dicom import elements, tagvalues
from dcmsortd.dicom.tagvalues import values_from_dataset
from realfiles import nibabel_data, pydicom_data


def dataset() -> Dataset:
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.Manufacturer = "SIEMENS"
    ds.EchoTime = "2.460"
    ds.InstanceNumber = "0007"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.99", "0.1"]
    ds.AcquisitionMatrix = [0, 256, 256, 0]
    ds.Rows = 256
    ds.PatientName = "Doe^Jane"
    ds.StudyDescription = ""
    ds.add_new(0x00191000, "FL", 1.5)
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291010, "OB", b"SV10\x04\x03\x02\x01\x00\xff")
    ds.add_new(0x00431028, "OB", b"CT01 text  \x00")
    item = Dataset()
    item.add_new(0x00189112, "SQ", Sequence([Dataset()]))
    item[0x00189112].value[0].add_new(0x00180091, "IS", "128")
    item.EchoTime = "30"
    ds.add_new(0x52009229, "SQ", Sequence([item]))
    ds.add_new(0x00081140, "SQ", Sequence([]))
    return ds


def test_keywords_and_elements() -> None:
    got = values_from_dataset(dataset(), ["ImageType", "Manufacturer", "EchoTime", "Rows",
                                          (8, 0x70), (8, 8), (0x18, 0x1310), "InstanceNumber"])
    assert got == {
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"],
        "Manufacturer": "SIEMENS",
        "EchoTime": "2.460",  # DS keeps its text, as in the series record
        "Rows": 256,
        (8, 0x70): "SIEMENS",
        (8, 8): ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"],
        (0x18, 0x1310): [0, 256, 256, 0],
        "InstanceNumber": "0007",
    }


def test_absent_and_non_dicom_names_are_left_out() -> None:
    got = values_from_dataset(dataset(), ["SliceThickness", "ClassifyType", "NotAKeyword",
                                          (0x18, 0x50), (0x7777, 0x1000)])
    assert got == {}


def test_items_of_multi_valued_elements() -> None:
    got = values_from_dataset(dataset(), [(0x20, 0x37, 1), (0x20, 0x37, 4), (0x20, 0x37, 6),
                                          (8, 0x70, 0), (8, 0x70, 1), (0x5200, 0x9229, 0)])
    assert got == {(0x20, 0x37, 1): "0", (0x20, 0x37, 4): "0.99", (8, 0x70, 0): "SIEMENS"}


def test_elements_inside_sequences() -> None:
    ds = dataset()
    got = values_from_dataset(ds, [
        (0x5200, 0x9229, 0x18, 0x81),
        (0x5200, 0x9229, 0x18, 0x9112, 0x18, 0x91),
        (0x5200, 0x9229, 0x18, 0x9999),
        (0x0008, 0x1140, 0x18, 0x81),  # empty sequence
        (0x0008, 0x0070, 0x18, 0x81),  # not a sequence
    ])
    assert got == {(0x5200, 0x9229, 0x18, 0x81): "30",
                   (0x5200, 0x9229, 0x18, 0x9112, 0x18, 0x91): "128"}


def test_odd_values_get_plain_representations() -> None:
    got = values_from_dataset(dataset(), ["PatientName", "StudyDescription", (0x19, 0x1000),
                                          (0x29, 0x1010), (0x43, 0x1028), (0x5200, 0x9229),
                                          (0x8, 0x1140)])
    assert got == {
        "PatientName": "Doe^Jane",
        "StudyDescription": "",
        (0x19, 0x1000): 1.5,
        (0x29, 0x1010): str(b"SV10\x04\x03\x02\x01\x00\xff"),  # binary: str() of the bytes
        (0x43, 0x1028): "CT01 text",  # printable bytes: their text, padding removed
        (0x5200, 0x9229): 1,  # a sequence: its number of items
        (0x8, 0x1140): 0,
    }


def test_unreadable_elements_are_absent_not_errors() -> None:
    ds = dataset()
    ds[0x00280010] = RawDataElement(Tag(0x00280010), "US", 3, b"\x01\x02\x03", 0, True, True)
    got = values_from_dataset(ds, ["Rows", (0x28, 0x10), "Manufacturer"])
    assert got == {"Manufacturer": "SIEMENS"}


@pytest.mark.parametrize("ds", [None, 42, "text", Dataset()])
def test_never_raises_on_odd_input(ds: Any) -> None:
    assert values_from_dataset(ds, ["Manufacturer", (8, 8), (8, 8, 0), (8, 8, 8, 8)]) == {}


def test_snapshot_is_plain_and_picklable() -> None:
    ds = dataset()
    keys: list[Any] = ["ImageType", "EchoTime", (0x29, 0x1010), (0x5200, 0x9229, 0x18, 0x81),
            (0x18, 0x1310), "PatientName"]
    got = values_from_dataset(ds, keys)
    assert pickle.loads(pickle.dumps(got)) == got
    for value in got.values():
        items = value if isinstance(value, list) else [value]
        assert all(type(item) in (str, int, float) for item in items)


def test_pydicom_ct_private_ge_elements() -> None:
    ds = pydicom.dcmread(pydicom_data("CT_small.dcm"), stop_before_pixels=True)
    got = values_from_dataset(ds, [(0x43, 0x1012), (0x43, 0x1018), (0x9, 0x1001), (0x10, 0x1002),
                                   (0x19, 0x1002)])
    assert got == {(0x43, 0x1012): [14, 2, 3], (0x43, 0x1018): ["0.085000", "1.102000", "0.095000"],
                   (0x9, 0x1001): "GE_GENESIS_FF", (0x10, 0x1002): 2, (0x19, 0x1002): 912}


def test_nibabel_siemens_private_elements(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path), stop_before_pixels=True)
    got = values_from_dataset(ds, [(0x19, 0x100A), (0x19, 0x100C), (0x29, 0x1010)])
    assert got[(0x19, 0x100A)] == 48
    assert got[(0x19, 0x100C)] == "1000"
    assert isinstance(got[(0x29, 0x1010)], str) and got[(0x29, 0x1010)].startswith("b'SV10")


# Remembered values (per element in elements.value_of, per snapshot here) equal fresh ones.

_CREATOR, _GRADIENT = 0x00190010, 0x0019100E  # (0019,xx0E): FD x3 for Siemens, US for GE
_GRADIENT_BYTES = struct.pack("<3d", 0.5, -0.25, 0.75)


def _raw_dataset(elements: dict[int, tuple[str | None, bytes]], implicit: bool,
                 charset: str = "iso8859") -> Dataset:
    ds = Dataset({BaseTag(tag): RawDataElement(BaseTag(tag), vr, len(value), value, 0,
                                               implicit, True)
                  for tag, (vr, value) in elements.items()})
    ds.set_original_encoding(implicit, True, charset)
    return ds


def _fresh(ds: Dataset, keys: frozenset[Any]) -> dict[Any, Any]:
    elements._memo.clear()
    tagvalues._snapshots.clear()
    return values_from_dataset(ds, keys)


def _typed(values: dict[Any, Any]) -> dict[Any, Any]:
    """Values with their types, so "1" and 1 and 1.0 differ."""
    def typed(v: Any) -> Any:
        return [typed(x) for x in v] if isinstance(v, list) else (type(v).__name__, v)
    return {k: typed(v) for k, v in values.items()}


def test_an_element_pydicom_cannot_convert_is_absent_with_the_rules_keys_too() -> None:
    """An empty element of unknown VR (pydicom raises converting it): absent, whether the
    keys are the rules' frozenset (remembered snapshots) or a list."""
    ds = _raw_dataset({0x00080060: ("CS", b"MR")}, implicit=False)
    tag = BaseTag(0x0008103E)
    ds._dict[tag] = RawDataElement(tag, "ZZ", 0, None, 0, False, True)  # as read from a file
    for keys in (frozenset({"SeriesDescription", "Modality"}), ["SeriesDescription", "Modality"]):
        assert values_from_dataset(ds, keys) == {"Modality": "MR"}


@pytest.mark.parametrize("vr", ["UN", None])
def test_a_private_element_without_its_vr_is_read_by_its_own_creator(vr: str | None) -> None:
    """The same bytes under the same private tag are three floats for Siemens, twelve
    numbers for GE and text for an unknown creator, whatever was read before."""
    keys = frozenset({(0x0019, 0x100E)})
    expected = {
        b"SIEMENS MR HEADER ": [0.5, -0.25, 0.75],
        b"GEMS_ACQU_01": list(struct.unpack("<12H", _GRADIENT_BYTES)),
        b"ACME PRIVATE": str(_GRADIENT_BYTES),
    }

    def image(creator: bytes) -> Dataset:
        return _raw_dataset({_CREATOR: ("LO" if vr else None, creator),
                             _GRADIENT: (vr, _GRADIENT_BYTES)}, implicit=vr is None)

    texts = {}
    for creator in expected:  # the record's text, each read with nothing remembered
        elements._memo.clear()
        texts[creator] = elements.element_text(image(creator), _GRADIENT)
    assert len(set(texts.values())) == 3
    for creators in (list(expected), list(reversed(expected))):
        for creator in creators * 2:
            assert values_from_dataset(image(creator), keys) == {
                (0x19, 0x100E): expected[creator]}
            assert elements.element_text(image(creator), _GRADIENT) == texts[creator]


_RULE_KEYS = frozenset({"SeriesDescription", "ImageType", "EchoTime", "Rows",
                        "SmallestImagePixelValue", (0x0019, 0x100E), (0x0008, 0x0008, 1)})
# tag: the VRs it may be written with (explicit VR), and the bytes it may hold
_ELEMENTS: dict[int, tuple[list[str], list[bytes]]] = {
    0x0008103E: (["LO", "UN"], [b"ep2d_diff ", b"\xe9t\xe9 ", b"\xd0\x96\xd0\xb8", b""]),
    0x00080008: (["CS", "UN"], [b"ORIGINAL\\PRIMARY", b"DERIVED\\SECONDARY\\ADC ", b"M"]),
    0x00180081: (["DS", "UN"], [b"30 ", b"2.460", b"1e3 ", b""]),
    0x00280010: (["US", "UN"], [b"\x00\x01", b"\x40\x00", b"\x01"]),
    0x00280103: (["US"], [b"\x00\x00", b"\x01\x00"]),  # PixelRepresentation
    0x00280106: (["US", "SS", "UN"], [b"\xff\xff", b"\x10\x00"]),  # "US or SS"
    _CREATOR: (["LO"], [b"SIEMENS MR HEADER ", b"GEMS_ACQU_01", b"ACME PRIVATE"]),
    _GRADIENT: (["UN", "FD", "OB"], [_GRADIENT_BYTES, b"\x00" * 24, b"1000"]),
}


@st.composite
def _series(draw: st.DrawFn) -> list[tuple[dict[int, tuple[str | None, bytes]], bool, str]]:
    """Images each like the one before but for one thing: an element's value, VR or
    presence, or the character set. So each shares what is remembered with an earlier
    one, and any dependency the remembering misses shows."""
    implicit = draw(st.booleans())

    def element(tag: int) -> tuple[str | None, bytes] | None:
        vrs, values = _ELEMENTS[tag]
        if draw(st.integers(0, 4)) == 0:
            return None  # absent
        return (None if implicit else draw(st.sampled_from(vrs)), draw(st.sampled_from(values)))

    charsets = ["iso8859", "iso8859_5", "utf_8"]
    charset = draw(st.sampled_from(charsets))
    this = {tag: element(tag) for tag in _ELEMENTS}
    images = []
    for _ in range(draw(st.integers(2, 12))):
        images.append(({t: e for t, e in this.items() if e is not None}, implicit, charset))
        changed = draw(st.sampled_from([*sorted(_ELEMENTS), "charset"]))
        if changed == "charset":
            charset = draw(st.sampled_from(charsets))
        else:
            this = {**this, changed: element(int(changed))}
    return images


@settings(max_examples=300, deadline=None)
@given(_series())
def test_remembered_rule_values_equal_fresh_ones(
    images: list[tuple[dict[int, tuple[str | None, bytes]], bool, str]]
) -> None:
    """A run of images, many alike, some differing only in the encoding, a VR, the
    character set, the private creator or the element that resolves "US or SS": each
    one's values, read with what earlier ones left remembered, are those read afresh."""
    elements._memo.clear()
    tagvalues._snapshots.clear()
    remembered = []
    for image in images:
        remembered.append(_typed(values_from_dataset(_raw_dataset(*image), _RULE_KEYS)))
        remembered.append(_typed(values_from_dataset(_raw_dataset(*image), _RULE_KEYS)))
    fresh = []
    for image in images:
        value = _typed(_fresh(_raw_dataset(*image), _RULE_KEYS))
        fresh += [value, value]
    assert remembered == fresh
