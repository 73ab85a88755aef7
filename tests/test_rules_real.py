"""The packaged default rules on real scanner files (Siemens, Philips, GE-like).

Real files are read in place (see ``realfiles``: ``../shared/dicom`` or
$DCMSORTD_SHARED_DICOM, nibabel's and pydicom's bundled test data; each test skips with the
reason when its file is absent). The ``record`` is built simply as ``{keyword: str(value)}``,
the way the series record renders values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from dcmsortd.dicom.tagvalues import values_from_dataset
from dcmsortd.rules.engine import RuleSet, default_rules
from realfiles import nibabel_data, pydicom_data, shared_dicom

ALL_KINDS = {"localizer", "T1w", "T2w", "FLAIR", "diffusion", "BOLD", "fieldmap", "SR"}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return default_rules()


def read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def classify(rules: RuleSet, ds: pydicom.Dataset, current: list[str] | None = None) -> list[str]:
    keys = rules.tag_keys()
    record: dict[str, Any] = {k: str(ds[k].value) for k in keys if isinstance(k, str) and k in ds}
    record["ClassifyType"] = list(current or [])
    values = values_from_dataset(ds, keys)
    return rules.classify(record, values, current or [], []).types


@pytest.mark.parametrize(("name", "expected"), [
    ("siemens_ve11_dwi_b0.dcm", {"SIEMENS", "ORIGINAL", "mosaic", "diffusion"}),
    ("siemens_ve11_localizer.dcm", {"SIEMENS", "ORIGINAL", "localizer"}),
    ("siemens_ve11_scout_aahead.dcm", {"SIEMENS", "ORIGINAL", "localizer"}),
    ("siemens_ve11_fieldmap.dcm", {"SIEMENS", "ORIGINAL", "fieldmap"}),
    ("siemens_xa60_enhanced_bold_1.dcm", {"SIEMENS", "ORIGINAL", "BOLD"}),
    ("siemens_xa60_enhanced_bold_2.dcm", {"SIEMENS", "ORIGINAL", "BOLD"}),
    ("siemens_ve11_phoenixzip_sr.dcm", {"SIEMENS", "ORIGINAL", "SR"}),
    ("siemens_xa30_enhanced_mpr.dcm", {"SIEMENS", "DERIVED", "localizer"}),
    ("siemens_vb17_axial.dcm", {"SIEMENS", "ORIGINAL", "mosaic", "BOLD"}),
])
def test_shared_siemens_files(rules: RuleSet, name: str, expected: set[str]) -> None:
    types = classify(rules, read(shared_dicom(name)))
    assert set(types) == expected, types


@pytest.mark.parametrize(("name", "expected"), [
    ("siemens_dwi_1000.dcm.gz", {"SIEMENS", "ORIGINAL", "mosaic", "diffusion"}),
    ("siemens_dwi_0.dcm.gz", {"SIEMENS", "ORIGINAL", "mosaic", "diffusion"}),
    ("philips_mprage.dcm.gz", {"PHILIPS", "ORIGINAL", "T1w"}),
    ("csa_slice_norm.dcm", {"SIEMENS", "ORIGINAL", "mosaic", "BOLD"}),
])
def test_nibabel_files(rules: RuleSet, name: str, expected: set[str], tmp_path: Path) -> None:
    types = classify(rules, read(nibabel_data(name, tmp_path)))
    assert set(types) == expected, types


def test_pydicom_ct_is_ge(rules: RuleSet) -> None:
    ds = read(pydicom_data("CT_small.dcm"))
    assert classify(rules, ds) == ["GE", "ORIGINAL"]


def test_pydicom_sr_without_image_type(rules: RuleSet) -> None:
    ds = read(pydicom_data("test-SR.dcm"))
    assert classify(rules, ds) == ["SR"]


def test_a_siemens_diffusion_series_image_by_image(rules: RuleSet, tmp_path: Path) -> None:
    """b0 then b1000 of one series: the types accumulate, each once, in order."""
    first = classify(rules, read(nibabel_data("siemens_dwi_0.dcm.gz", tmp_path)))
    second = classify(rules, read(nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path)), first)
    assert second == first == ["SIEMENS", "ORIGINAL", "mosaic", "diffusion"]


def test_no_file_gets_conflicting_kinds(rules: RuleSet) -> None:
    names = ("siemens_ve11_dwi_b0.dcm", "siemens_ve11_fieldmap.dcm", "siemens_ve11_localizer.dcm",
             "siemens_xa60_enhanced_bold_1.dcm")
    for path in map(shared_dicom, names):
        kinds = set(classify(rules, read(path))) & ALL_KINDS
        assert len(kinds) == 1, (path.name, kinds)


@pytest.mark.parametrize(("description", "expected"), [
    ("ABCD_fMRI_DistortionMap_AP", ["fieldmap"]),
    ("ABCD_dMRI_DistortionMap_PA", ["fieldmap"]),
    ("ABCD_fMRI_rest", ["BOLD"]),
    ("rfMRI_REST_AP_SBRef", []),
    ("ABCD_dMRI", ["diffusion"]),
    ("T1_MPRAGE", ["T1w"]),
    ("T1_scout", ["localizer"]),
    ("t2_flair_sag", ["FLAIR"]),
    ("T2_SPACE", ["T2w"]),
    ("t2_star_axial", []),
])
def test_default_rules_on_series_descriptions(rules: RuleSet, description: str,
                                              expected: list[str]) -> None:
    assert rules.classify({"SeriesDescription": description}, {}, [], []).types == expected
