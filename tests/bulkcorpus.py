"""Helpers for the import and catch-up tests: a corpus of real files, CLI runs, tree snapshots.

The corpus is made of real vendor files re-stamped into multi-image series (see
``realfiles``): a Siemens diffusion series with CSA headers (b=1000 and b=0 images), an MR
series, a CT series and two structured reports, plus files that must be reported, not
sorted (a text file, a truncated DICOM file) and a symbolic link that must not be followed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dcmsortd.cli.main import main
from realfiles import nibabel_data, pydicom_data, restamp

UID_ROOT = "1.2.826.0.1.3680043.9.7133"  # test UIDs, fixed so runs are comparable


def uid(*parts: int) -> str:
    return ".".join([UID_ROOT, *(str(p) for p in parts)])


@dataclass
class Corpus:
    root: Path
    sortable: list[Path] = field(default_factory=list)
    bad: list[Path] = field(default_factory=list)
    series: dict[tuple[str, str], int] = field(default_factory=dict)  # (study, series) -> n

    def add_series(self, src: Path, folder: Path, study: str, series: str, count: int,
                   first: int = 1, tags: Mapping[str, str] | None = None) -> list[Path]:
        """``count`` re-stamped copies of ``src`` in ``folder``, InstanceNumber from ``first``,
        with the elements in ``tags`` (keyword: value) set."""
        folder.mkdir(parents=True, exist_ok=True)
        made = []
        for number in range(first, first + count):
            sop = f"{series}.{number}"
            made.append(restamp(src, folder / f"im{number:04d}.dcm", study_uid=study,
                                series_uid=series, sop_uid=sop, InstanceNumber=number,
                                **(tags or {})))
        self.sortable += made
        self.series[(study, series)] = self.series.get((study, series), 0) + count
        return made


def build_corpus(root: Path, scratch: Path) -> Corpus:
    """The mixed corpus described in the module notes, under ``root``."""
    scratch.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root)
    study_a, study_b = uid(1), uid(2)
    patient_a = {"PatientID": "BULK1", "StudyDate": "20240102", "StudyTime": "101010"}
    patient_b = {"PatientID": "BULK2", "StudyDate": "20240103", "StudyTime": "111111"}
    dwi = uid(1, 1)
    corpus.add_series(nibabel_data("siemens_dwi_1000.dcm.gz", scratch), root / "a" / "dwi",
                      study_a, dwi, 12, tags=patient_a)
    corpus.add_series(nibabel_data("siemens_dwi_0.dcm.gz", scratch), root / "a" / "dwi0",
                      study_a, dwi, 3, first=13, tags=patient_a)
    corpus.add_series(pydicom_data("MR_small.dcm"), root / "a" / "mr", study_a, uid(1, 2), 15,
                      tags=patient_a)
    corpus.add_series(pydicom_data("CT_small.dcm"), root / "b" / "ct", study_b, uid(2, 1), 5,
                      tags=patient_b)
    corpus.add_series(pydicom_data("test-SR.dcm"), root / "b" / "sr", study_b, uid(2, 2), 2,
                      tags=patient_b)
    notes = root / "b" / "notes.txt"
    notes.write_text("not DICOM\n")
    truncated = root / "a" / "truncated.dcm"
    truncated.write_bytes(pydicom_data("MR_small.dcm").read_bytes()[:400])
    corpus.bad += [notes, truncated]
    (root / "b" / "link.dcm").symlink_to(corpus.sortable[0])
    return corpus


@dataclass
class Site:
    """Paths and flags for one data folder used by the CLI."""

    base: Path

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def site(self) -> Path:
        return self.datadir / "site"

    @property
    def log(self) -> Path:
        return self.base / "logs" / "processSingleFile.log"

    def flags(self, *extra: str) -> list[str]:
        config = self.base / "config.json"
        if not config.exists():
            self.base.mkdir(parents=True, exist_ok=True)
            config.write_text('{"dcmsortd": {"flush_interval": 0.2}}\n')
        return ["--datadir", str(self.datadir), "--config", str(config),
                "--pid-dir", str(self.base / "pids"), "--log-dir", str(self.base / "logs"),
                *extra]

    def run(self, command: str, *args: str) -> int:
        with kept_logging():
            return main([command, *self.flags(), *args])

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8") if self.log.exists() else ""


def snapshot(datadir: Path, mtimes: bool = False) -> dict[str, Any]:
    """Everything under ``datadir/site`` a reader sees: JSON bytes, link targets, names.

    Link targets inside ``datadir`` are shown relative to it, so two data folders compare.
    ``.arrived`` markers count by name only; the SQLite index and lock files are left out.
    """
    out: dict[str, Any] = {}
    for path in sorted((datadir / "site").rglob("*")):
        rel = str(path.relative_to(datadir))
        if "processed.sqlite" in rel or rel.startswith("site/.dcmsortd/locks/"):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path).replace(str(datadir), "<data>"))
        elif path.is_dir():
            out[rel] = ("dir",)
        elif rel.startswith("site/.arrived/"):
            out[rel] = ("marker",)
        else:
            st = path.stat()
            out[rel] = ("file", path.read_bytes(), st.st_mtime_ns if mtimes else None)
    return out


@contextmanager
def kept_logging() -> Iterator[None]:
    """``main()`` replaces the root logger's handlers; put the old ones back, close its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    with kept_logging():
        yield
