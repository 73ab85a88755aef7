"""The packaged default rules know GE and Philips (issue 14, part 4), through the real reader.

Each file goes the daemon's way: ``read_instance`` with the rules' tags, then the series
state's classification, image by image. The real files: nibabel's ``philips_mprage.dcm``
(a Philips 3D T1 TFE), pydicom's ``CT_small.dcm`` (GE, CT) and the Siemens files of
``../shared/dicom``. No real GE MR file nor Philips diffusion/fMRI/field map file is
bundled with pydicom, nibabel or the shared folder, so those kinds are made by
**re-stamping** a real file with the vendor's header elements: Manufacturer, the private
creator and the private elements the vendor writes (GE: ``GEMS_ACQU_01`` (0019,109C) pulse
sequence name, ``GEMS_PARM_01`` (0043,1039) whose first value is the b-value; Philips:
``Philips Imaging DD 001`` (2001,1020) scanning technique), and the public elements such a
series has (ScanningSequence, EchoTime, DiffusionBValue, ImageType...). Series descriptions
are kept neutral (no "DTI", "fMRI"...), so that the vendor cues, not the description
rules, are what is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from dcmsortd.dicom.header import read_instance
from dcmsortd.model.notice import Arrival
from dcmsortd.rules.engine import RuleSet, default_rules
from dcmsortd.sorting.series import SeriesState, apply_instance, new_state
from realfiles import nibabel_data, pydicom_data, restamp, shared_dicom

KINDS = {"localizer", "T1w", "T2w", "FLAIR", "diffusion", "BOLD", "fieldmap", "SR"}
GE = {"Manufacturer": "GE MEDICAL SYSTEMS", "ManufacturerModelName": "DISCOVERY MR750",
      "SoftwareVersions": ["27", "LX", "MR Software release:DV26.0_R01_1725.a"]}
PHILIPS = {"Manufacturer": "Philips Medical Systems", "ManufacturerModelName": "Achieva dStream"}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return default_rules()


def types_of(rules: RuleSet, *paths: Path) -> list[str]:
    """The series' ClassifyType after its images, as the daemon computes it."""
    state: SeriesState | None = None
    for path in paths:
        inst = read_instance(str(path), rules.tag_keys())
        if state is None:
            state = new_state(inst, Arrival("SCANNER", "FIONA", "127.0.0.1", str(path)))
        apply_instance(state, inst, rules)
    assert state is not None
    return list(state.classify)


def as_vendor(src: Path, dst: Path, private: dict[tuple[int, str], dict[int, tuple[str, Any]]],
              **keywords: Any) -> Path:
    """A copy of the real file ``src`` with ``keywords`` set and ``private`` elements added:
    ``{(group, creator): {element offset: (VR, value)}}``; other private blocks of those
    groups are removed first (a Siemens file keeps no Siemens (0019,xx) elements)."""
    path = restamp(src, dst, **keywords)
    ds = pydicom.dcmread(path)
    for (group, creator), elements in private.items():
        for elem in [e for e in ds if e.tag.group == group]:
            del ds[elem.tag]
        block = ds.private_block(group, creator, create=True)
        for offset, (vr, value) in elements.items():
            block.add_new(offset, vr, value)
    ds.save_as(path)
    return path


def ge_mr(dst: Path, sequence: str, bvalue: int | None = None, **keywords: Any) -> Path:
    """pydicom's MR_small.dcm (a real MR image) re-stamped as a GE MR image."""
    private: dict[tuple[int, str], dict[int, tuple[str, Any]]] = {
        (0x0019, "GEMS_ACQU_01"): {0x9C: ("LO", sequence)}}
    if bvalue is not None:
        private[(0x0043, "GEMS_PARM_01")] = {0x39: ("IS", [bvalue, 8, 0, 0])}
    return as_vendor(pydicom_data("MR_small.dcm"), dst, private, **{**GE, **keywords})


def philips_mr(tmp: Path, name: str, technique: str, **keywords: Any) -> Path:
    """nibabel's philips_mprage.dcm (a real Philips file) with another scanning technique."""
    src = nibabel_data("philips_mprage.dcm.gz", tmp)
    private = {(0x2001, "Philips Imaging DD 001"): {0x20: ("LO", technique)}}
    plain = {"AcquisitionContrast": None, "PulseSequenceName": None,
             "ImageType": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]}
    return as_vendor(src, tmp / name, private, **{**PHILIPS, **plain, **keywords})


# ------------------------------------------------------------------ real files, unchanged


def test_real_philips_mprage_is_t1w(rules: RuleSet, tmp_path: Path) -> None:
    path = nibabel_data("philips_mprage.dcm.gz", tmp_path)
    assert set(types_of(rules, path)) == {"PHILIPS", "ORIGINAL", "T1w"}


def test_real_philips_mprage_by_its_technique_alone(rules: RuleSet, tmp_path: Path) -> None:
    """Without AcquisitionContrast and descriptions, (2001,1020) T1TFE still says T1w."""
    path = philips_mr(tmp_path, "t1.dcm", "T1TFE", SeriesDescription="Sag 3D 1mm",
                      ProtocolName="Sag 3D 1mm")
    assert set(types_of(rules, path)) == {"PHILIPS", "ORIGINAL", "T1w"}


def test_real_ge_ct_file_is_ge_and_nothing_more(rules: RuleSet) -> None:
    assert types_of(rules, pydicom_data("CT_small.dcm")) == ["GE", "ORIGINAL"]


# ------------------------------------------------------------------- GE, re-stamped


@pytest.mark.parametrize(("name", "sequence", "bvalue", "keywords", "kind"), [
    ("dti", "epi2", 1000, {"ScanningSequence": ["EP", "SE"], "EchoTime": 85.1}, "diffusion"),
    ("dti_offset", "epi2", 1000001000, {"ScanningSequence": ["EP", "SE"]}, "diffusion"),
    ("dti_public", "epi2", None, {"ScanningSequence": ["EP", "SE"], "DiffusionBValue": 1000},
     "diffusion"),
    ("tensor", "tensor", None, {"ScanningSequence": ["EP", "SE"]}, "diffusion"),
    ("fmri", "epiRT", 0, {"ScanningSequence": ["EP", "GR"], "EchoTime": 30,
                          "ImageType": ["ORIGINAL", "PRIMARY", "EPI", "NONE"]}, "BOLD"),
    ("fmri_gre_epi", "epi", 0, {"ScanningSequence": ["EP", "GR"]}, "BOLD"),
    ("b0map", "B0map", None, {"ScanningSequence": "GR", "EchoTime": 2.2}, "fieldmap"),
    ("bravo", "efgre3d", None, {"ScanningSequence": "GR", "MRAcquisitionType": "3D",
                                "InversionTime": 450, "EchoTime": 3.2}, "T1w"),
    ("cube_t2", "Cube", None, {"ScanningSequence": "SE", "EchoTime": 90.0,
                               "RepetitionTime": 3200}, "T2w"),
    ("loc", "fgre", None, {"ScanningSequence": "GR",
                           "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "localizer"),
])
def test_ge_kinds(rules: RuleSet, tmp_path: Path, name: str, sequence: str,
                  bvalue: int | None, keywords: dict[str, Any], kind: str) -> None:
    neutral = {"SeriesDescription": "Axial 3mm", "ProtocolName": "Study protocol",
               "SequenceName": None, "EchoTime": 20, "RepetitionTime": 800,
               "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"]}
    path = ge_mr(tmp_path / f"{name}.dcm", sequence, bvalue, **{**neutral, **keywords})
    types = types_of(rules, path)
    assert types[0] == "GE" and set(types) & KINDS == {kind}, types


def test_ge_diffusion_series_image_by_image(rules: RuleSet, tmp_path: Path) -> None:
    """A b=0 image first (no cue of its own), then b=1000: the series becomes diffusion."""
    series = "1.2.826.0.1.3680043.8.498.1415"
    common = {**GE, "ScanningSequence": ["EP", "SE"], "SeriesDescription": "Axial 3 shells",
              "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"],
              "SeriesInstanceUID": series}
    b0 = ge_mr(tmp_path / "b0.dcm", "epi2", 0, SOPInstanceUID=f"{series}.1", **common)
    b1000 = ge_mr(tmp_path / "b1000.dcm", "epi2", 1000, SOPInstanceUID=f"{series}.2", **common)
    assert types_of(rules, b0) == ["GE", "ORIGINAL"]
    assert types_of(rules, b0, b1000) == ["GE", "ORIGINAL", "diffusion"]


def test_ge_spin_echo_epi_without_b_value_is_not_diffusion(rules: RuleSet, tmp_path: Path) -> None:
    path = ge_mr(tmp_path / "se_epi.dcm", "epi", 0, ScanningSequence=["EP", "SE"],
                 SeriesDescription="Axial 3mm", ImageType=["ORIGINAL", "PRIMARY", "OTHER"])
    assert set(types_of(rules, path)) & KINDS == set()


def test_ge_cues_need_a_ge_file(rules: RuleSet, tmp_path: Path) -> None:
    """The same private elements in a file of another maker say nothing."""
    path = ge_mr(tmp_path / "other.dcm", "epiRT", 1000, Manufacturer="TOSHIBA_MEC",
                 ScanningSequence=["EP", "SE"], SeriesDescription="Axial 3mm",
                 ImageType=["ORIGINAL", "PRIMARY", "OTHER"])
    assert types_of(rules, path) == ["ORIGINAL"]


# -------------------------------------------------------------- Philips, re-stamped


@pytest.mark.parametrize(("technique", "keywords", "kind"), [
    ("DwiSE", {"DiffusionBValue": 1000.0}, "diffusion"),
    ("DwiSE", {}, "diffusion"),
    ("SE", {"DiffusionBValue": 1000.0}, "diffusion"),
    ("FEEPI", {"ScanningSequence": "GR", "EchoTime": 30}, "BOLD"),
    ("SEEPI", {"ScanningSequence": "SE", "EchoTime": 60}, "fieldmap"),
    ("FFE", {"ImageType": ["ORIGINAL", "PRIMARY", "B0", "B0", "FFE"]}, "fieldmap"),
    ("TSE", {"ScanningSequence": "SE", "EchoTime": 100, "RepetitionTime": 3000}, "T2w"),
])
def test_philips_kinds(rules: RuleSet, tmp_path: Path, technique: str,
                       keywords: dict[str, Any], kind: str) -> None:
    path = philips_mr(tmp_path, "p.dcm", technique, SeriesDescription="Axial 3mm",
                      ProtocolName="Axial 3mm", **keywords)
    types = types_of(rules, path)
    assert types[0] == "PHILIPS" and set(types) & KINDS == {kind}, types


def test_philips_survey_is_a_localizer_by_its_description(rules: RuleSet, tmp_path: Path) -> None:
    path = philips_mr(tmp_path, "survey.dcm", "FFE", SeriesDescription="SmartSurvey",
                      ProtocolName="SmartSurvey")
    types = types_of(rules, path)
    assert types[0] == "PHILIPS" and set(types) & KINDS == {"localizer"}, types


def test_philips_bold_by_technique_is_not_sbref(rules: RuleSet, tmp_path: Path) -> None:
    path = philips_mr(tmp_path, "sbref.dcm", "FEEPI", SeriesDescription="rest_SBRef",
                      ProtocolName="x")
    assert "BOLD" not in types_of(rules, path)


# ------------------------------------------------------- Siemens expectations unchanged


@pytest.mark.parametrize(("name", "kind"), [
    ("siemens_ve11_dwi_b0.dcm", "diffusion"),
    ("siemens_ve11_localizer.dcm", "localizer"),
    ("siemens_ve11_fieldmap.dcm", "fieldmap"),
    ("siemens_xa60_enhanced_bold_1.dcm", "BOLD"),
    ("siemens_vb17_axial.dcm", "BOLD"),
    ("siemens_ve11_phoenixzip_sr.dcm", "SR"),
])
def test_siemens_files_through_the_reader(rules: RuleSet, name: str, kind: str) -> None:
    types = types_of(rules, shared_dicom(name))
    assert types[0] == "SIEMENS" and set(types) & KINDS == {kind}, types
