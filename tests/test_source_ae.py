"""The calling AE title from a file's meta header, (0002,0016), where storescp records it:
both readers (lean and pydicom's) give it, and the sorter uses it for the record and the
arrival marker when the line says ``<caller-from-file>``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import pytest

from dcmsortd.dicom.dicomfile import read_dataset
from dcmsortd.dicom.header import read_instance
from dcmsortd.dicom.leanread import read_lean
from dcmsortd.model.notice import CALLER_IN_FILE, Arrival
from dcmsortd.rules.engine import default_rules
from dcmsortd.sorting.processor import Examined, Sorter
from dcmsortd.sorting.store import Store
from realfiles import pydicom_data, restamp

LEAN, NOT_LEAN = "MR_small.dcm", "MR_small_bigendian.dcm"  # read lean / left to pydicom


def _lean(path: Path) -> bool:
    with open(path, "rb") as fp:
        return read_lean(fp, path.stat().st_size) is not None


def _with_source_ae(name: str, value: str | None, out: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom_data(name))
        if value is None:
            del ds.file_meta.SourceApplicationEntityTitle
        else:
            ds.file_meta.SourceApplicationEntityTitle = value
        ds.save_as(out)
    return out


@pytest.mark.parametrize("name", [LEAN, NOT_LEAN])
def test_both_readers_give_the_source_ae_of_real_files(name: str) -> None:
    path = pydicom_data(name)
    assert _lean(path) == (name == LEAN)
    assert read_dataset(str(path)).source_ae == "CLUNIE1"
    assert read_instance(str(path)).source_ae == "CLUNIE1"


@pytest.mark.parametrize("name", [LEAN, NOT_LEAN])
@pytest.mark.parametrize(
    ("value", "read"),
    [("X'$(touch P)'", "X'$(touch P)'"), ("A\\B", "A\\B"), (" SCAN ", "SCAN"),
     ("", ""), (None, None)],
)
def test_the_value_is_read_alike_by_both_readers(
        tmp_path: Path, name: str, value: str | None, read: str | None) -> None:
    path = _with_source_ae(name, value, tmp_path / "f.dcm")
    assert _lean(path) == (name == LEAN)
    assert read_instance(str(path)).source_ae == read


def _sort(tmp_path: Path, arrival_caller: str,
          source_ae: str | None) -> tuple[dict[str, str], list[str]]:
    src = _with_source_ae(LEAN, source_ae, tmp_path / "src.dcm")
    in_dir = tmp_path / "data" / "in"
    in_dir.mkdir(parents=True)
    path = restamp(src, in_dir / "1.dcm", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    rules = default_rules()
    store = Store(str(tmp_path / "data" / "site"), rules)
    store.prepare()
    arrival = Arrival(arrival_caller, "FIONA", "10.0.0.5", str(path))
    inst = read_instance(str(path), rules.tag_keys())
    assert Sorter(store).handle(Examined(arrival, inst, None)) == "sorted"
    store.flush(everything=True)
    site = tmp_path / "data" / "site"
    record = json.loads((site / "raw" / "1.2.3" / "1.2.3.4.json").read_text())
    return record["IncomingConnection"], sorted(p.name for p in (site / ".arrived").iterdir())


@pytest.mark.parametrize(
    ("caller", "source_ae", "expected"),
    [(CALLER_IN_FILE, "X'$(touch P)'", "X$(touchP)"),  # cleaned as the pipe's are
     (CALLER_IN_FILE, None, "unknown"),
     ("SCANNER", "OTHER", "SCANNER")],  # a line that names its caller keeps it
)
def test_the_record_and_the_marker_carry_the_caller_the_line_or_the_file_names(
        tmp_path: Path, caller: str, source_ae: str | None, expected: str) -> None:
    conn, markers = _sort(tmp_path, caller, source_ae)
    assert conn == {"AETitleCaller": expected, "AETitleCalled": "FIONA", "CallerIP": "10.0.0.5"}
    assert markers == [f"{expected} FIONA 10.0.0.5 1.2.3 1.2.3.4"]
