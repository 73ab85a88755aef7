"""Generate the benchmark corpus: real vendor DICOM files re-stamped into a realistic mix.

Sources are real files: pydicom's bundled test files, nibabel's Siemens files (with CSA
headers) and, when present, the scanner files in ``../shared/dicom``. Each source is written
once with pydicom, with fixed-length placeholder values for the identifying elements
(Study/Series/SOP UIDs, PatientID, InstanceNumber, SeriesNumber, StudyDate, StudyTime);
every generated file is then the template's bytes with those placeholders replaced
(``os.writev`` of the unchanged segments and the new values), so writing thousands of files
costs little more than copying them.

Usage as a script: ``python bench/corpus.py --files 5000 --seed 1 OUT_DATADIR`` writes the
files under ``OUT_DATADIR/site/archive/`` plus ``corpus.json`` (manifest) and ``lines.txt``
(one pipe line per file, in arrival order) under ``OUT_DATADIR/bench/``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

UID_LEN = 26  # "2.25." + 21 digits: even, so never padded
PH_STUDY = "2.25.135791357913579135791"
PH_SERIES = "2.25.246802468024680246802"
PH_SOP = "2.25.975319753197531975319"
PH_PATIENT = "PHPATIENTQZX"  # 12 characters
PH_INSTANCE = "-3141592"  # IS, 8 characters
PH_SERIES_NO = "-2718281"  # IS, 8 characters
PH_DATE = "19011231"  # DA
PH_TIME = "235917.123457"  # TM, 13 characters (padded to 14 by the writer)

# Slot name -> placeholder value; each occurs once in a template (the SOP UID twice with file meta).
PLACEHOLDERS: dict[str, str] = {
    "study": PH_STUDY,
    "series": PH_SERIES,
    "sop": PH_SOP,
    "patient": PH_PATIENT,
    "instance": PH_INSTANCE,
    "series_no": PH_SERIES_NO,
    "date": PH_DATE,
    "time": PH_TIME,
}

LONG_SERIES_SHARE = 0.42
"""Share of the corpus in the one long series (2 100 images at the default 5 000 files)."""


# ---------------------------------------------------------------------------- sources


def nibabel_data() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def default_shared_dir() -> Path:
    env = os.environ.get("DCMSORTD_SHARED_DICOM")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "dicom"


def _pydicom_file(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    return Path(str(found)) if found else None


# template key -> (where, file name); where: "pydicom", "nibabel" or "shared"
SOURCES: dict[str, tuple[str, str]] = {
    "mr_small": ("pydicom", "MR_small.dcm"),
    "ct_small": ("pydicom", "CT_small.dcm"),
    "test_sr": ("pydicom", "test-SR.dcm"),
    "rtplan": ("pydicom", "rtplan.dcm"),
    "nm_j2k": ("pydicom", "JPEG2000.dcm"),
    "ecg": ("pydicom", "waveform_ecg.dcm"),
    "nib_dti_0": ("nibabel", "0.dcm"),
    "nib_dti_1": ("nibabel", "1.dcm"),
    "nib_dwi_b0": ("nibabel", "siemens_dwi_0.dcm.gz"),
    "nib_dwi_b1000": ("nibabel", "siemens_dwi_1000.dcm.gz"),
    "philips_mprage": ("nibabel", "philips_mprage.dcm.gz"),
    "vb17_bold": ("shared", "siemens_vb17_axial.dcm"),
    "ve11_localizer": ("shared", "siemens_ve11_localizer.dcm"),
    "ve11_scout": ("shared", "siemens_ve11_scout_aahead.dcm"),
    "ve11_phantom": ("shared", "siemens_ve11_phantom.dcm"),
    "ve11_fieldmap": ("shared", "siemens_ve11_fieldmap.dcm"),
    "ve11_dwi_b0": ("shared", "siemens_ve11_dwi_b0.dcm"),
    "ve11_sr": ("shared", "siemens_ve11_phoenixzip_sr.dcm"),
    "xa30_mpr": ("shared", "siemens_xa30_enhanced_mpr.dcm"),
    "xa60_bold_1": ("shared", "siemens_xa60_enhanced_bold_1.dcm"),
    "xa60_bold_2": ("shared", "siemens_xa60_enhanced_bold_2.dcm"),
}


def source_path(key: str, shared: Path) -> Path | None:
    where, name = SOURCES[key]
    if where == "pydicom":
        return _pydicom_file(name)
    path = (nibabel_data() if where == "nibabel" else shared) / name
    return path if path.is_file() else None


def _ge_like(ds: Dataset) -> None:
    """A GE-like MR: vendor fields and the GE private elements the series record reads."""
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "DISCOVERY MR750"
    ds.SoftwareVersions = ["27", "LX", "MR Software release:DV26.0_R03_1831.b"]
    ds.SeriesDescription = "Ax fMRI GE-like"
    acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    acq.add_new(0x5A, "FL", 1.0)
    acq.add_new(0x9C, "LO", "epiRT")
    acq.add_new(0xB3, "DS", "2")
    acq.add_new(0xBB, "DS", "0")
    rela = ds.private_block(0x0021, "GEMS_RELA_01", create=True)
    rela.add_new(0x4F, "SS", 36)
    parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    parm.add_new(0x39, "IS", ["1000", "8", "0", "0"])


def _philips_like(ds: Dataset) -> None:
    """A Philips-like MR: vendor fields and the Philips private SequenceType (2001,1020)."""
    ds.Manufacturer = "Philips Medical Systems"
    ds.ManufacturerModelName = "Ingenia"
    ds.SoftwareVersions = ["5.7.1", "5.7.1.2"]
    ds.SeriesDescription = "T2W_TSE Philips-like"
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x20, "LO", "TSE")


# template name -> (source key, customization)
TEMPLATES: dict[str, tuple[str, Callable[[Dataset], None] | None]] = {
    **{key: (key, None) for key in SOURCES},
    "mr_ge_like": ("mr_small", _ge_like),
    "mr_philips_like": ("mr_small", _philips_like),
}


# ---------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A source file written once with placeholders; ``segments`` are the bytes between them."""

    name: str
    segments: tuple[bytes, ...]
    slots: tuple[str, ...]  # placeholder name between segments[i] and segments[i + 1]
    modality: str
    size: int

    def render(self, values: dict[str, str]) -> list[bytes]:
        out: list[bytes] = [self.segments[0]]
        for slot, seg in zip(self.slots, self.segments[1:], strict=True):
            out.append(values[slot].encode("ascii"))
            out.append(seg)
        return out


def _read_source(path: Path) -> Dataset:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return pydicom.dcmread(io.BytesIO(raw), force=True)


def _stamp_placeholders(ds: Dataset) -> None:
    ds.StudyInstanceUID = PH_STUDY
    ds.SeriesInstanceUID = PH_SERIES
    ds.SOPInstanceUID = PH_SOP
    ds.PatientID = PH_PATIENT
    ds.InstanceNumber = PH_INSTANCE
    ds.SeriesNumber = PH_SERIES_NO
    ds.StudyDate = PH_DATE
    ds.StudyTime = PH_TIME
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = PH_SOP


def _split(data: bytes, name: str) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    hits: list[tuple[int, str]] = []
    for slot, marker in PLACEHOLDERS.items():
        raw = marker.encode("ascii")
        start, found = 0, 0
        while (at := data.find(raw, start)) >= 0:
            hits.append((at, slot))
            start, found = at + len(raw), found + 1
        limit = 2 if slot == "sop" else 1
        if not 1 <= found <= limit:
            raise ValueError(f"template {name}: placeholder {slot} found {found} times")
    hits.sort()
    segments, slots, pos = [], [], 0
    for at, slot in hits:
        segments.append(data[pos:at])
        slots.append(slot)
        pos = at + len(PLACEHOLDERS[slot])
    segments.append(data[pos:])
    return tuple(segments), tuple(slots)


LEAN_MATRIX = 4


def _shrink_pixels(ds: Dataset) -> None:
    """Make the image LEAN_MATRIX x LEAN_MATRIX (native pixel data only; header otherwise kept)."""
    if "PixelData" not in ds or ds["PixelData"].is_undefined_length:
        return  # no image, or compressed (encapsulated) pixel data: small already
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    ds.Rows = ds.Columns = LEAN_MATRIX
    length = LEAN_MATRIX * LEAN_MATRIX * frames * samples * max(1, bits // 8)
    ds.PixelData = bytes(length + length % 2)


def build_template(name: str, shared: Path, lean: bool = False) -> Template | None:
    """The template ``name`` or None when its source file is not available here.

    ``lean`` shrinks native pixel data to a 4x4 matrix: the header, which is all a sorter
    reads, keeps its size and content (Rows and Columns aside), and a 50 000-file corpus
    fits in the page cache.
    """
    key, customize = TEMPLATES[name]
    path = source_path(key, shared)
    if path is None:
        return None
    ds = _read_source(path)
    if customize is not None:
        customize(ds)
    if lean:
        _shrink_pixels(ds)
    _stamp_placeholders(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    data = buf.getvalue()
    segments, slots = _split(data, name)
    return Template(name, segments, slots, str(ds.get("Modality", "OT")) or "OT", len(data))


# ---------------------------------------------------------------------------- the mix


@dataclass(frozen=True)
class SeriesKind:
    """A series: its images cycle through ``cycle`` (``fallback`` when a source is missing)."""

    name: str
    cycle: tuple[str, ...]
    count: int  # images at the nominal size, jittered by the seed
    fallback: tuple[str, ...] = ()


def _kind(name: str, cycle: tuple[str, ...], count: int,
          fallback: tuple[str, ...] = ()) -> SeriesKind:
    return SeriesKind(name, cycle, count, fallback)


# Sessions: what one patient visit sends, series after series. Sources in ../shared/dicom
# have a fallback from nibabel or pydicom, so the corpus can be made without them.
SESSIONS: dict[str, tuple[SeriesKind, ...]] = {
    "siemens_vb17": (
        _kind("bold_run2", ("vb17_bold",), 120, ("nib_dti_0",)),
        _kind("dwi_b1000", ("nib_dwi_b0",) + ("nib_dwi_b1000",) * 9, 280),
        _kind("dti_64dir", ("nib_dti_0", "nib_dti_1"), 64),
        _kind("resting_state", ("vb17_bold",), 150, ("nib_dti_1",)),
    ),
    "ge": (
        _kind("ge_fmri", ("mr_ge_like",), 150),
        _kind("ge_ct", ("ct_small",), 100),
        _kind("dose_sr", ("test_sr",), 2),
        _kind("rtplan", ("rtplan",), 1),
    ),
    "siemens_ve11": (
        _kind("localizer", ("ve11_localizer",), 3, ("nib_dti_0",)),
        _kind("aahead_scout", ("ve11_scout",), 5, ("nib_dti_0",)),
        _kind("phantom_scout", ("ve11_phantom",), 3, ("nib_dti_1",)),
        _kind("fieldmap", ("ve11_fieldmap",), 64, ("nib_dti_0",)),
        _kind("dwi_mb3_b0", ("ve11_dwi_b0",), 6, ("nib_dwi_b0",)),
        _kind("phoenix_zip", ("ve11_sr",), 1, ("test_sr",)),
    ),
    "philips": (
        _kind("philips_t2", ("mr_philips_like",), 200),
        _kind("philips_mprage", ("philips_mprage",), 1),
        _kind("nm", ("nm_j2k",), 4),
        _kind("ecg", ("ecg",), 1),
    ),
    "siemens_xa": (
        _kind("xa60_bold", ("xa60_bold_1", "xa60_bold_2"), 200, ("mr_small",)),
        _kind("xa30_mpr", ("xa30_mpr",), 10, ("mr_small",)),
        _kind("sr", ("test_sr",), 1),
    ),
    "toshiba": (
        _kind("toshiba_mr", ("mr_small",), 80),
        _kind("ct", ("ct_small",), 20),
    ),
}
LONG_SERIES = _kind("fmri_long", ("vb17_bold",), 0, ("nib_dti_0",))
SINGLE_SERIES = _kind("dwi_single", ("nib_dti_0", "nib_dti_1"), 0)


@dataclass(frozen=True)
class PlannedSeries:
    session: int  # index of the study (one study per session)
    patient: int
    kind: SeriesKind
    count: int


def plan_mix(n_files: int, rng: random.Random) -> list[PlannedSeries]:
    """The series of a mixed corpus of ``n_files`` images, in arrival order."""
    long_count = max(1, round(LONG_SERIES_SHARE * n_files))
    budget = n_files - long_count
    order = list(SESSIONS)
    shift = rng.randrange(len(order))
    order = order[shift:] + order[:shift]
    planned: list[PlannedSeries] = []
    session, patient, turn = 1, 0, 0
    while budget > 0:
        if turn % 3 != 2:  # every third visit is a second study of the previous patient
            patient += 1
        for kind in SESSIONS[order[turn % len(order)]]:
            count = min(budget, max(1, round(kind.count * rng.uniform(0.85, 1.15))))
            if count <= 0:
                break
            planned.append(PlannedSeries(session, patient, kind, count))
            budget -= count
        session, turn = session + 1, turn + 1
        if turn == 1:  # the long series arrives after the first visit, from its own patient
            planned.append(PlannedSeries(0, 0, LONG_SERIES, long_count))
    if not any(p.kind is LONG_SERIES for p in planned):
        planned.append(PlannedSeries(0, 0, LONG_SERIES, long_count))
    return planned


def plan_single(n_files: int) -> list[PlannedSeries]:
    """One Siemens diffusion series of ``n_files`` images (its record grows with each)."""
    return [PlannedSeries(0, 0, SINGLE_SERIES, n_files)]


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class CorpusFile:
    path: str
    line: str
    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass
class Corpus:
    """The generated files (in arrival order) and what a correct sort must produce."""

    datadir: str
    archive: str
    files: list[CorpusFile] = field(default_factory=list)
    expected: dict[tuple[str, str], int] = field(default_factory=dict)
    patients: int = 0
    total_bytes: int = 0
    seconds: float = 0.0
    templates: dict[str, int] = field(default_factory=dict)  # template -> files made from it

    @property
    def studies(self) -> int:
        return len({study for study, _ in self.expected})

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "bytes": self.total_bytes,
            "studies": self.studies,
            "patients": self.patients,
            "series": len(self.expected),
            "largest_series": max(self.expected.values(), default=0),
            "generate_seconds": round(self.seconds, 3),
            "templates": dict(sorted(self.templates.items())),
        }

    def record_paths(self, site: str) -> dict[str, int]:
        """Series record path -> expected NumFiles."""
        return {
            os.path.join(site, "raw", study, series + ".json"): count
            for (study, series), count in self.expected.items()
        }

    def lines(self) -> list[str]:
        return [f.line for f in self.files]


class Uids:
    """Fixed-length UIDs under 2.25: a per-seed prefix, a kind digit and a counter."""

    def __init__(self, rng: random.Random) -> None:
        self.prefix = rng.randrange(10**9, 10**10)
        self._next = {1: 0, 2: 0, 3: 0}

    def new(self, kind: int) -> str:
        self._next[kind] += 1
        uid = f"2.25.{self.prefix}{kind}{self._next[kind]:010d}"
        assert len(uid) == UID_LEN
        return uid


@dataclass(frozen=True)
class Source:
    """Where the lines say the files come from (one modality/scanner per session)."""

    caller: str
    called: str
    ip: str


def _writer(templates: dict[str, Template | None]) -> Callable[[str, dict[str, str], str], int]:
    def write(path: str, values: dict[str, str], name: str) -> int:
        tpl = templates[name]
        assert tpl is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            parts = tpl.render(values)
            return os.writev(fd, parts) if len(parts) > 1 else os.write(fd, parts[0])
        finally:
            os.close(fd)

    return write


def _cycle(kind: SeriesKind, templates: dict[str, Template | None]) -> tuple[str, ...]:
    for cycle in (kind.cycle, kind.fallback):
        if cycle and all(templates.get(t) is not None for t in cycle):
            return cycle
    raise RuntimeError(f"no source file available for series kind {kind.name}")


def generate(datadir: str, planned: Sequence[PlannedSeries], seed: int,
             shared: Path | None = None, lean: bool = False) -> Corpus:
    """Write the planned series under ``<datadir>/site/archive``; return the manifest."""
    started = time.perf_counter()
    shared = shared or default_shared_dir()
    rng = random.Random(seed)
    uids = Uids(rng)
    names = {t for p in planned for t in p.kind.cycle + p.kind.fallback}
    templates = {name: build_template(name, shared, lean) for name in sorted(names)}
    write = _writer(templates)
    archive = os.path.join(os.path.abspath(datadir), "site", "archive")
    corpus = Corpus(os.path.abspath(datadir), archive)
    studies: dict[int, str] = {}
    patients: dict[int, str] = {}
    for series_no, series in enumerate(planned, start=1):
        study_uid = studies.setdefault(series.session, uids.new(1))
        patient_id = patients.setdefault(series.patient, f"BP{seed % 100:02d}-{series.patient:07d}")
        source = Source(f"SCANNER{series.session % 7}", "FIONA", f"10.0.{series.session % 250}.7")
        folder = os.path.join(archive, f"{source.caller}_{study_uid}")
        os.makedirs(folder, exist_ok=True)
        series_uid = uids.new(2)
        cycle = _cycle(series.kind, templates)
        base = {
            "study": study_uid, "series": series_uid, "patient": patient_id,
            "series_no": f"{series_no:<8d}",
            "date": f"2024{1 + series.session % 12:02d}{1 + series.session % 28:02d}",
            "time": f"{8 + series.session % 10:02d}{series.session % 60:02d}00.000000",
        }
        for i in range(series.count):
            name = cycle[i % len(cycle)]
            tpl = templates[name]
            assert tpl is not None
            sop_uid = uids.new(3)
            filename = f"{tpl.modality}.{sop_uid}"
            path = os.path.join(folder, filename)
            values = dict(base, sop=sop_uid, instance=f"{i + 1:<8d}")
            corpus.total_bytes += write(path, values, name)
            corpus.templates[name] = corpus.templates.get(name, 0) + 1
            line = f"{source.caller},{source.called},{source.ip},{folder},{filename}"
            corpus.files.append(CorpusFile(path, line, study_uid, series_uid, sop_uid))
        key = (study_uid, series_uid)
        corpus.expected[key] = corpus.expected.get(key, 0) + series.count
    corpus.patients = len(patients)
    corpus.seconds = time.perf_counter() - started
    return corpus


def write_warmup(datadir: str, seed: int) -> CorpusFile:
    """One small image outside the archive (``<datadir>/warmup``) to warm up a daemon."""
    tpl = build_template("mr_small", default_shared_dir())
    assert tpl is not None
    uids = Uids(random.Random(seed + 7919))
    folder = os.path.join(os.path.abspath(datadir), "warmup")
    os.makedirs(folder, exist_ok=True)
    study, series, sop = uids.new(1), uids.new(2), uids.new(3)
    values = {"study": study, "series": series, "sop": sop, "patient": "WARMUP000000",
              "instance": f"{1:<8d}", "series_no": f"{1:<8d}", "date": "20240101",
              "time": "000000.000000"}
    path = os.path.join(folder, "warmup.dcm")
    _writer({"mr_small": tpl})(path, values, "mr_small")
    return CorpusFile(path, f"WARMUP,FIONA,127.0.0.1,{folder},warmup.dcm", study, series, sop)


def iter_manifest(corpus: Corpus) -> Iterator[dict[str, str]]:
    for f in corpus.files:
        yield {"path": f.path, "study": f.study_uid, "series": f.series_uid, "sop": f.sop_uid}


def save_manifest(corpus: Corpus, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "lines.txt"), "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in corpus.lines())
    data = {"summary": corpus.summary(), "archive": corpus.archive,
            "files": list(iter_manifest(corpus))}
    with open(os.path.join(folder, "corpus.json"), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datadir", help="data folder to create (files go to site/archive)")
    parser.add_argument("--files", type=int, default=5000, help="number of files (5000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--single-series", action="store_true",
                        help="one diffusion series of --files images instead of the mix")
    parser.add_argument("--lean", action="store_true",
                        help="4x4 pixel matrices (headers otherwise unchanged): much smaller")
    parser.add_argument("--shared-dicom", type=Path, default=None,
                        help="folder of real scanner files (default ../shared/dicom)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    planned = plan_single(args.files) if args.single_series else plan_mix(args.files, rng)
    corpus = generate(args.datadir, planned, args.seed, args.shared_dicom, args.lean)
    save_manifest(corpus, os.path.join(os.path.abspath(args.datadir), "bench"))
    json.dump(corpus.summary(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
