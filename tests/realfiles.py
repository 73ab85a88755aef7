"""Where the real DICOM files for tests live, and a helper to re-stamp copies of them.

Three sources, read in place (never copied into the repository):

* ``shared_dicom(name)``: real scanner files in ``../shared/dicom`` next to the checkout
  (see its PROVENANCE.md), or in the folder named by ``DCMSORTD_SHARED_DICOM``;
* ``nibabel_data(name)``: nibabel's ``nicom/tests/data`` (Siemens files with CSA headers);
  a ``.gz`` file is decompressed into the folder given as ``into``;
* ``pydicom_data(name)``: pydicom's bundled test files (never downloaded).

Each skips the calling test with the reason when the file is not there.
``restamp(src, dst, ...)`` writes a copy with new UIDs (and other keywords changed), to
build multi-image series and studies from single files.
"""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID

SHARED_DICOM_ENV = "DCMSORTD_SHARED_DICOM"
_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "dicom"


def shared_dir() -> Path:
    """The folder of shared real scanner files (it may not exist)."""
    return Path(os.environ.get(SHARED_DICOM_ENV) or _DEFAULT_SHARED)


def shared_dicom(name: str) -> Path:
    """Path of a shared real scanner file; skip the test when it is absent."""
    path = shared_dir() / name
    if not path.is_file():
        pytest.skip(f"real DICOM {name} not found in {path.parent} (set {SHARED_DICOM_ENV})")
    return path


def nibabel_data(name: str, into: Path | None = None) -> Path:
    """Path of a file of nibabel's nicom test data; ``.gz`` files are gunzipped into ``into``."""
    try:
        import nibabel.nicom.tests as nicom_tests
    except ImportError:  # pragma: no cover - nibabel is a runtime dependency
        pytest.skip("nibabel's test data is not installed")
    path = Path(nicom_tests.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"nibabel test file {name} not found in {path.parent}")
    if not name.endswith(".gz"):
        return path
    if into is None:
        raise ValueError(f"{name} is gzipped: pass a folder to decompress it into")
    out = into / name.removesuffix(".gz")
    with gzip.open(path, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def pydicom_data(name: str) -> Path:
    """Path of one of pydicom's bundled test files; skip the test when it is absent."""
    found = get_testdata_file(name, download=False)
    if not isinstance(found, str):
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(found)


def restamp(
    src: Path | str,
    dst: Path | str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    **overrides: Any,
) -> Path:
    """Write a copy of ``src`` at ``dst`` with new UIDs and other elements changed.

    UIDs left as None keep their value. ``overrides`` are DICOM keywords; a value of None
    deletes the element (``restamp(a, b, PatientID=None)``). Pixel data and private
    elements are copied as they are; pydicom's warnings about odd values are silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        changes: dict[str, Any] = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": sop_uid,
        }
        for keyword, value in changes.items():
            if value is not None:
                setattr(ds, keyword, value)
        if sop_uid is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        for keyword, value in overrides.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(dst)
    return Path(dst)
