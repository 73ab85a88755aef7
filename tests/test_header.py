"""Header extraction from real vendor files: the series-record fields, CSA, SR, the cache."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from dcmsortd.dicom.elements import element_text
from dcmsortd.dicom.header import (
    RECORD_TAGS,
    SeriesCache,
    _lenient,
    instance_from_dataset,
    protocol_fields,
    read_instance,
    uid_text,
)
from dcmsortd.model.errors import HeaderError
from realfiles import (
    SHARED_DICOM_ENV,
    nibabel_data,
    pydicom_data,
    restamp,
    shared_dicom,
    shared_dir,
)

CONTRACT_KEYS = {key for key, _ in RECORD_TAGS} | {
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "PhaseEncodingSteps",
    "Private0021_1106",
    "OSLevel",
    "siemensUUID",
    "NumSlices",
    "MeasID",
    "PhaseEncodingDirectionPositive",
}


def _dataset(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element as pydicom holds it right after reading a file (explicit VR LE)."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def test_siemens_dwi_b1000_gives_diffusion_entry_and_protocol_fields(tmp_path: Path) -> None:
    inst = read_instance(str(nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path)))
    assert inst.diffusion is not None
    assert inst.diffusion.b_value == "1000"
    assert inst.diffusion.directionality == "DIRECTIONAL"
    assert inst.diffusion.gradient_direction == ["0.99997449", "0.00505012", "-0.00505012"]
    assert inst.diffusion.sop_uid == inst.sop_uid
    assert inst.diffusion.instance_number == "2"
    assert inst.fields["NumSlices"] == "48"
    assert inst.fields["PhaseEncodingDirectionPositive"] == "1"
    assert inst.fields["SoftwareVersion"] == "syngo MR B17"
    image_type = "['ORIGINAL', 'PRIMARY', 'DIFFUSION', 'NONE', 'ND', 'MOSAIC']"
    assert inst.fields["ImageType"] == image_type
    assert inst.fields["AcquisitionMatrix"] == "[128, 0, 0, 128]"


def test_siemens_dwi_b0_has_no_gradient_direction(tmp_path: Path) -> None:
    inst = read_instance(str(nibabel_data("siemens_dwi_0.dcm.gz", tmp_path)))
    assert inst.diffusion is not None
    assert (inst.diffusion.b_value, inst.diffusion.gradient_direction) == ("0", None)
    assert inst.diffusion.as_json()["B_value"] == "0"


def test_vb17_space_aligned_protocol() -> None:
    inst = read_instance(str(shared_dicom("siemens_vb17_axial.dcm")))
    assert inst.fields["NumSlices"] == "35"
    assert inst.fields["PhaseEncodingDirectionPositive"] == "1"
    assert inst.fields["SliceSpacing"] == "3.6000000030835"
    assert inst.diffusion is None
    # VB17 protocols carry no tMeasuredBaselineString and this SoftwareVersions no release:
    assert "OSLevel" not in inst.fields
    assert "MeasID" not in inst.fields


def test_ve11_field_map_gives_os_level_and_meas_id() -> None:
    inst = read_instance(str(shared_dicom("siemens_ve11_fieldmap.dcm")))
    assert inst.fields["OSLevel"] == "VE11C"
    assert inst.fields["MeasID"] == "18"
    assert inst.fields["NumSlices"] == "1"
    assert inst.fields["ScanOptions"] == ""  # present but empty: "", not left out
    assert (inst.modality, inst.manufacturer) == ("MR", "SIEMENS")
    assert (inst.study_date, inst.study_time) == ("20161014", "092234.190000")


def test_ve11_diffusion_b0_gives_wip_uuid_and_direction() -> None:
    inst = read_instance(str(shared_dicom("siemens_ve11_dwi_b0.dcm")))
    assert inst.fields["siemensUUID"].startswith("cdbc7b0f-3d47-4339-af8e-76346ffc73f4||")
    assert inst.fields["MeasID"] == "218"
    assert inst.fields["NumSlices"] == "81"
    assert inst.diffusion is not None
    assert inst.diffusion.b_value == "5"
    assert inst.diffusion.gradient_direction == ["-0.49999994", "0.49999997", "0.70710683"]


@pytest.mark.parametrize(
    ("name", "steps", "counter"),
    [
        ("siemens_xa60_enhanced_bold_1.dcm", "31", "68"),
        ("siemens_xa60_enhanced_bold_2.dcm", "31", "68"),
        ("siemens_xa30_enhanced_mpr.dcm", "1", "23"),
    ],
)
def test_enhanced_xa_files_take_functional_groups(name: str, steps: str, counter: str) -> None:
    inst = read_instance(str(shared_dicom(name)))
    assert inst.fields["PhaseEncodingSteps"] == steps
    assert inst.fields["Private0021_1106"] == counter
    assert inst.diffusion is None
    assert "PhaseEncodingDirectionPositive" not in inst.fields
    assert "NumSlices" not in inst.fields


def test_only_the_first_per_frame_item_is_parsed() -> None:
    ds = _dataset(shared_dicom("siemens_xa60_enhanced_bold_1.dcm"))
    assert instance_from_dataset(ds, "mem").fields["Private0021_1106"] == "68"
    # the 34-item per-frame sequence is still raw: pydicom did not convert it
    assert isinstance(ds.get_item(0x52009230, keep_deferred=True), RawDataElement)


def test_phoenix_zip_report_gives_sr_entry() -> None:
    inst = read_instance(str(shared_dicom("siemens_ve11_phoenixzip_sr.dcm")))
    assert inst.modality == "SR"
    assert inst.sr is not None
    assert inst.sr.sop_uid == inst.sop_uid
    assert inst.sr.fields == {
        "SOPInstanceUID": inst.sop_uid,
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.22",
        "ContentDate": "20180911",
        "ContentTime": "143526.184000",
        "DocumentTitle": "Phoenix ZIP Acquisition Report",
        "PatientID": "o6jgilro",
        "StudyInstanceUID": inst.study_uid,
    }
    assert "MeasID" not in inst.fields  # its CSA series header holds no protocol


def test_pydicom_sr_leaves_out_absent_values(tmp_path: Path) -> None:
    src = pydicom_data("test-SR.dcm")
    inst = read_instance(str(restamp(src, tmp_path / "sr.dcm", ContentTime=None)))
    assert inst.sr is not None
    assert inst.sr.fields["DocumentTitle"] == "Diagnosis"
    assert "ContentTime" not in inst.sr.fields
    assert inst.manufacturer == ""


def test_non_siemens_files() -> None:
    mr = read_instance(str(pydicom_data("MR_small.dcm")))
    assert mr.fields["StudyDescription"] == "missing"
    assert mr.fields["EchoTime"] == "240.0000"
    assert mr.diffusion is None and mr.sr is None
    ct = read_instance(str(pydicom_data("CT_small.dcm")))
    assert ct.modality == "CT"
    assert ct.fields["SoftwareVersion"] == "05"
    assert set(ct.fields) <= CONTRACT_KEYS


def test_philips_enhanced_file(tmp_path: Path) -> None:
    inst = read_instance(str(nibabel_data("philips_mprage.dcm.gz", tmp_path)))
    assert inst.fields["SequenceType"] == "T1TFE"
    assert inst.fields["SoftwareVersion"] == "['3.2.2', '3.2.2.0']"
    assert inst.fields["PhaseEncodingSteps"] == "225"


GE_SOFTWARE = ["27", "LX", "MR Software release:DV26.0_R03_1831.b"]


@pytest.mark.parametrize(("software", "os_level"), [
    (GE_SOFTWARE, "DV26.0"),
    ("MR Software release:RX29.1", "RX29.1"),  # no "_": the whole word
    (["24", "LX", "MR Software release:24.0_M4_1151.a"], "24.0"),
])
def test_os_level_from_software_versions_of_a_real_ge_file(
    tmp_path: Path, software: str | list[str], os_level: str
) -> None:
    """Issue 14: GE's real CT file (pydicom's CT_small.dcm) re-stamped with an MR
    SoftwareVersions value of the GE form; OSLevel is the text after ``release:`` up to
    the first ``_``, as the original recorded it."""
    path = restamp(pydicom_data("CT_small.dcm"), tmp_path / "ge.dcm", SoftwareVersions=software)
    fields = read_instance(str(path)).fields
    assert fields["Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert fields["OSLevel"] == os_level
    assert "release:" in fields["SoftwareVersion"]


def test_siemens_protocol_still_overrides_the_release_text(tmp_path: Path) -> None:
    path = restamp(shared_dicom("siemens_ve11_fieldmap.dcm"), tmp_path / "s.dcm",
                   SoftwareVersions=GE_SOFTWARE)
    assert read_instance(str(path)).fields["OSLevel"] == "VE11C"


def test_ge_private_tags_and_release_os_level() -> None:
    ds = _dataset(pydicom_data("MR_small.dcm"))
    ds.SoftwareVersions = ["27", "LX", "MR Software release:DV26.0_R03_1831.b"]
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x9C, "LO", "epi2")
    block.add_new(0x5A, "FL", 2.5)
    ds.private_block(0x0021, "GEMS_RELA_01", create=True).add_new(0x4F, "SS", 36)
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [1000, 8, 0, 0])
    ds.add_new(0x00211106, "UN", b"X_1_2\x00")  # no sequence around it: not the XA field
    ds.add_new(0x0051100F, "UN", b"HEA;HEP ")
    fields = instance_from_dataset(ds, "mem").fields
    assert fields["OSLevel"] == "DV26.0"  # the original's: up to the first "_" (issue 14)
    assert fields["PulseSequenceName"] == fields["Private0019_109C"] == "epi2"
    assert fields["Private0019_105a"] == "2.5"
    assert fields["Slices"] == fields["Private0021_104F"] == "36"
    assert fields["Private0043_1039"] == "[1000, 8, 0, 0]"
    assert fields["ActiveCoils"] == "HEA;HEP"  # binary (UN) decoded, padding removed
    assert "Private0021_1106" not in fields


def test_missing_optional_values_are_not_errors() -> None:
    ds = _dataset(pydicom_data("CT_small.dcm"))
    for keyword in ("PatientID", "StudyDate", "StudyTime", "StudyDescription", "Modality"):
        delattr(ds, keyword)
    del ds.Manufacturer
    inst = instance_from_dataset(ds, "mem")
    assert (inst.patient_id, inst.study_date, inst.study_time) == ("", "", "")
    assert (inst.modality, inst.manufacturer) == ("", "")
    assert inst.fields["StudyDescription"] == "missing"
    assert "PatientID" not in inst.fields


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("value", [None, "", "\x00 "])
def test_missing_uids_are_errors(keyword: str, value: str | None) -> None:
    ds = _dataset(pydicom_data("CT_small.dcm"))
    if value is None:
        delattr(ds, keyword)
    else:
        ds[keyword] = _raw(ds.data_element(keyword).tag, "UI", value.encode())  # type: ignore[union-attr]
    with pytest.raises(HeaderError, match=f"missing {keyword}"):
        instance_from_dataset(ds, "mem")


def test_uid_padding_is_stripped() -> None:
    ds = _dataset(pydicom_data("CT_small.dcm"))
    ds[0x0020000D] = _raw(0x0020000D, "UI", b"1.2.3\x00")
    ds[0x0020000E] = _raw(0x0020000E, "UI", b"1.2.4 \x00")
    ds[0x00080018] = _raw(0x00080018, "UN", b"1.2.5  ")
    inst = instance_from_dataset(ds, "mem")
    assert (inst.study_uid, inst.series_uid, inst.sop_uid) == ("1.2.3", "1.2.4", "1.2.5")
    assert inst.fields["StudyInstanceUID"] == "1.2.3"


def test_rule_values_come_from_the_dataset() -> None:
    keys = frozenset({"EchoTime", "BodyPartExamined"})
    inst = read_instance(str(pydicom_data("MR_small.dcm")), keys)
    assert "EchoTime" in inst.rule_values
    assert "BodyPartExamined" not in inst.rule_values


def test_protocol_fields_mapping() -> None:
    prot = {
        "sWiPMemBlock.tFree": "uuid",
        "sGroupArray.asGroup[0].nSize": "12",
        "sSliceAcceleration.lSequenceID": "7",
        "sProtConsistencyInfo.tMeasuredBaselineString": "N4_VE11E_LATEST_20181129",
    }
    assert protocol_fields(prot) == {
        "siemensUUID": "uuid",
        "NumSlices": "12",
        "MeasID": "7",
        "OSLevel": "VE11E",
    }
    assert protocol_fields({"lSequenceID": "3", "xSequenceID": "9"})["MeasID"] == "3"
    assert protocol_fields({"sProtConsistencyInfo.tMeasuredBaselineString": "junk"}) == {}


def test_series_header_is_parsed_once_per_series() -> None:
    cache = SeriesCache()
    first = read_instance(str(nibabel_data("0.dcm")), cache=cache)
    second = read_instance(str(nibabel_data("1.dcm")), cache=cache)
    assert first.series_uid == second.series_uid
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)
    assert second.fields["NumSlices"] == first.fields["NumSlices"] == "48"
    read_instance(str(shared_dicom("siemens_vb17_axial.dcm")), cache=cache)
    assert (cache.misses, len(cache)) == (2, 2)


def test_other_protocol_content_in_the_same_series_is_not_taken_from_the_cache() -> None:
    cache = SeriesCache()
    fieldmap = _dataset(shared_dicom("siemens_ve11_fieldmap.dcm"))
    localizer = _dataset(shared_dicom("siemens_ve11_localizer.dcm"))
    fieldmap.SeriesInstanceUID = localizer.SeriesInstanceUID
    assert instance_from_dataset(fieldmap, "a", cache=cache).fields["MeasID"] == "18"
    assert instance_from_dataset(localizer, "b", cache=cache).fields["MeasID"] == "13"
    assert cache.hits == 0


def test_a_series_header_coming_back_is_compared_then_found_by_its_crc() -> None:
    """Later images compare their series header with the last one of the series; another
    header of the same series (and back) is looked up by length and CRC, never mixed up."""
    cache = SeriesCache()
    fieldmap = _dataset(shared_dicom("siemens_ve11_fieldmap.dcm"))
    localizer = _dataset(shared_dicom("siemens_ve11_localizer.dcm"))
    fieldmap.SeriesInstanceUID = localizer.SeriesInstanceUID
    seen = [instance_from_dataset(ds, "x", cache=cache).fields["MeasID"]
            for ds in (fieldmap, fieldmap, localizer, fieldmap, localizer, localizer)]
    assert seen == ["18", "18", "13", "18", "13", "13"]
    assert (cache.misses, cache.hits, len(cache)) == (2, 4, 2)


def test_cache_is_bounded_lru() -> None:
    cache = SeriesCache(maxsize=2)
    cache.put(("a", 1, 1), {"MeasID": "1"})
    cache.put(("b", 1, 1), {"MeasID": "2"})
    assert cache.get(("a", 1, 1)) == {"MeasID": "1"}
    cache.put(("c", 1, 1), {})
    assert cache.get(("b", 1, 1)) is None
    assert cache.get(("a", 1, 1)) is not None
    assert len(cache) == 2


def test_corrupt_csa_is_logged_and_the_image_still_read(caplog: pytest.LogCaptureFixture) -> None:
    ds = _dataset(nibabel_data("csa_slice_norm.dcm"))
    ds[0x00291010].value = b"SV10\x04\x03\x02\x01" + b"\xff" * 64
    with caplog.at_level(logging.WARNING, logger="dcmsortd.dicom.header"):
        inst = instance_from_dataset(ds, "/in/x.dcm")
    assert "PhaseEncodingDirectionPositive" not in inst.fields
    assert inst.fields["SeriesDescription"] == "RESTING_STATE_Yerkes"
    assert "/in/x.dcm: CSA image header ignored: corrupt: CSAReadError" in caplog.text


def test_non_conformant_values_are_read_without_warnings() -> None:
    ds = _dataset(pydicom_data("CT_small.dcm"))
    ds[0x00180024] = _raw(0x00180024, "SH", b"a sequence name longer than 16")
    inst = instance_from_dataset(ds, "/in/x.dcm")  # pytest turns warnings into errors
    assert inst.fields["SequenceName"] == "a sequence name longer than 16"


def test_pydicom_reader_warnings_are_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = pydicom.dcmread(pydicom_data("MR_small_implicit.dcm"))  # with its pixel data
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # but the data set stays implicit
    path = tmp_path / "mismatch.dcm"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True, force_encoding=True)
    with caplog.at_level(logging.DEBUG, logger="dcmsortd.dicom.header"):
        inst = read_instance(str(path))
    assert inst.modality == "MR"
    assert f"{path}: Expected explicit VR, but found implicit VR" in caplog.text


def test_restamped_copies_form_one_series_parsed_once(tmp_path: Path) -> None:
    src = nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path)
    cache = SeriesCache()
    paths = [
        restamp(src, tmp_path / f"{n}.dcm", "1.2.3", "1.2.3.4", f"1.2.3.4.{n}") for n in range(3)
    ]
    instances = [read_instance(str(path), cache=cache) for path in paths]
    assert {i.series_uid for i in instances} == {"1.2.3.4"}
    assert [i.diffusion.sop_uid for i in instances if i.diffusion] == [
        "1.2.3.4.0",
        "1.2.3.4.1",
        "1.2.3.4.2",
    ]
    assert (cache.misses, cache.hits) == (1, 2)


def test_shared_folder_can_be_moved_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARED_DICOM_ENV, str(tmp_path))
    assert shared_dir() == tmp_path


@pytest.mark.parametrize(("name", "echo", "repetition", "thickness"), [
    ("siemens_xa60_enhanced_bold_1.dcm", "30.0", "1810", "4"),
    ("siemens_xa30_enhanced_mpr.dcm", "1.37", "3.15", "1.6"),
])
def test_enhanced_files_take_timing_and_thickness_from_functional_groups(
    name: str, echo: str, repetition: str, thickness: str
) -> None:
    inst = read_instance(str(shared_dicom(name)))
    assert "EchoTime" not in pydicom.dcmread(shared_dicom(name), stop_before_pixels=True)
    assert (inst.fields["EchoTime"], inst.fields["RepetitionTime"],
            inst.fields["SliceThickness"]) == (echo, repetition, thickness)


_UID_BYTES = st.lists(
    st.sampled_from([b"1", b"2", b".", b"0", b" ", b"\x00", b"\\", b"\t", b"\n", b"\xe9",
                     b"\xa0", b"a", b"1.2.840.10008"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(value=_UID_BYTES, implicit=st.booleans(),
       tag=st.sampled_from([0x00080018, 0x0020000D, 0x0020000E]))
def test_uid_text_is_what_pydicom_makes_of_the_bytes(
    value: bytes, implicit: bool, tag: int,
) -> None:
    """The fast decoding of UID elements gives pydicom's text for any bytes, padding,
    backslashes (several values) and non-ASCII included, read explicit or implicit."""
    raw = RawDataElement(Tag(tag), None if implicit else "UI", len(value), value, 0,
                         implicit, True)
    with _lenient("hypothesis"):
        fast = uid_text(Dataset({Tag(tag): raw}), tag)
        slow = element_text(Dataset({Tag(tag): raw}), tag) or ""
    assert fast == slow


def test_uid_text_of_real_files_matches_pydicom() -> None:
    """Every UID of the real files reads the same through the fast path and pydicom."""
    paths = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
    if shared_dir().is_dir():
        paths += sorted(shared_dir().glob("*.dcm"))
    checked = 0
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a few bundled files are deliberately broken
            continue
        for tag in (0x00080018, 0x0020000D, 0x0020000E):
            if tag in ds:
                with _lenient(str(path)):
                    assert uid_text(ds, tag) == (element_text(ds, tag) or ""), (path, tag)
                checked += 1
    assert checked >= 30


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm"])
def test_empty_numeric_elements_render_as_pydicom_str_gives_them(
    tmp_path: Path, name: str
) -> None:
    """Issue 14: a SeriesNumber (IS), EchoTime (DS) present but empty is recorded as
    pydicom's ``str()`` of its value, ``"None"``, as the original wrote it; an empty text
    element (LO) is ``""``. Real files (lean reader and pydicom's) re-stamped so."""
    path = restamp(pydicom_data(name), tmp_path / name, SeriesNumber="", EchoTime="",
                   SeriesDescription="")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom.dcmread(path)
    assert (str(ref.SeriesNumber), str(ref.EchoTime), str(ref.SeriesDescription)) == (
        "None", "None", "")
    fields = read_instance(str(path)).fields
    assert (fields["SeriesNumber"], fields["EchoTime"], fields["SeriesDescription"]) == (
        "None", "None", "")
