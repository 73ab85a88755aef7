"""Thousands of real DICOM files, made quickly, for the crash and load tests.

Each series is re-stamped from one real file (pydicom's and nibabel's bundled files, the
shared Siemens VB17 file): the source is read once and written once per image with new
UIDs and InstanceNumber (``write_series``). For tens of thousands of files ``clone_bytes``
copies one re-stamped file and patches its SOP Instance UID in the bytes (same length), so
no DICOM encoding is repeated.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from realfiles import nibabel_data, pydicom_data, restamp, shared_dicom

UID_ROOT = "1.2.826.0.1.3680043.9.7134"  # fixed test UIDs, so two runs compare
SOP_DIGITS = 10  # SOP UIDs of cloned files end in a counter of this many digits


def uid(*parts: int) -> str:
    return ".".join([UID_ROOT, *(str(p) for p in parts)])


@dataclass
class Corpus:
    """Files under ``root``, in the order they are announced, with the images per series."""

    root: Path
    files: list[Path] = field(default_factory=list)
    series: dict[str, int] = field(default_factory=dict)  # SeriesInstanceUID -> images

    def lines(self, caller: str = "SCANNER", called: str = "FIONA",
              ip: str = "127.0.0.1") -> list[bytes]:
        """One ``caller,called,ip,dir,file`` pipe line per file (newline included)."""
        return [f"{caller},{called},{ip},{p.parent},{p.name}\n".encode() for p in self.files]


def write_series(corpus: Corpus, src: Path, study: str, series: str, count: int,
                 tags: Mapping[str, str], first: int = 1) -> list[Path]:
    """``count`` images of ``series`` from ``src`` (read once), InstanceNumber from ``first``."""
    folder = corpus.root / series
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        made = []
        for number in range(first, first + count):
            sop = f"{series}.{number}"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = number
            path = folder / f"im{number:05d}.dcm"
            ds.save_as(path)
            made.append(path)
    corpus.files += made
    corpus.series[series] = corpus.series.get(series, 0) + count
    return made


def interleave(groups: Iterable[list[Path]]) -> list[Path]:
    """Round-robin over ``groups``: series stream in side by side, as from two scanners."""
    lists = [list(g) for g in groups]
    out: list[Path] = []
    for i in range(max(map(len, lists), default=0)):
        out += [g[i] for g in lists if i < len(g)]
    return out


def crash_corpus(root: Path, scratch: Path) -> Corpus:
    """2520 images in six series of two studies, interleaved in arrival order.

    A Siemens diffusion series alternating b=0 and b=1000 (nibabel's files with CSA
    headers: ``siemensDiffusionInformation``), a Siemens VB17 series (CSA protocol:
    NumSlices, MeasID), pydicom's MR, CT and SR files (SR: the ``srs`` listing), and a
    second MR series of the same study, plus one series of a second patient.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root)
    study_a, study_b = uid(1), uid(2)
    pa = {"PatientID": "CRASH1", "StudyDate": "20240102", "StudyTime": "101010"}
    pb = {"PatientID": "CRASH2", "StudyDate": "20240103", "StudyTime": "111111"}
    b0 = nibabel_data("siemens_dwi_0.dcm.gz", scratch)
    b1000 = nibabel_data("siemens_dwi_1000.dcm.gz", scratch)
    dwi0 = write_series(corpus, b0, study_a, uid(1, 1), 30, pa, first=1)  # 1.7 MB each
    dwi1 = write_series(corpus, b1000, study_a, uid(1, 1), 30, pa, first=31)
    groups = [
        interleave([dwi0, dwi1]),
        write_series(corpus, shared_dicom("siemens_vb17_axial.dcm"), study_a, uid(1, 2), 60,
                     pa),
        write_series(corpus, pydicom_data("MR_small.dcm"), study_a, uid(1, 3), 1100, pa),
        write_series(corpus, pydicom_data("CT_small.dcm"), study_b, uid(2, 1), 500, pb),
        write_series(corpus, pydicom_data("test-SR.dcm"), study_b, uid(2, 2), 40, pb),
        write_series(corpus, pydicom_data("MR_small.dcm"), study_b, uid(2, 3), 760, pb),
    ]
    corpus.files = interleave(groups)
    return corpus


def template(src: Path, dst: Path, study: str, series: str, tags: Mapping[str, str]) -> bytes:
    """The bytes of ``src`` re-stamped into ``series``, its SOP UID ``<series>.1<0...0>``."""
    restamp(src, dst, study, series, _cloned_sop(series, 0), **tags)
    return dst.read_bytes()


def _cloned_sop(series: str, number: int) -> str:
    return f"{series}.1{number:0{SOP_DIGITS}d}"  # no leading zero: a valid UID component


def clone_bytes(data: bytes, series: str, number: int) -> bytes:
    """``data`` (from ``template``) with the SOP UID (and its file-meta copy) ending in
    ``number``: a distinct image of the same series, same length, nothing re-encoded."""
    old, new = _cloned_sop(series, 0).encode(), _cloned_sop(series, number).encode()
    assert data.count(old) == 2, "expected the SOP UID in the file meta and the data set"
    return data.replace(old, new)
