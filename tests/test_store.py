"""The store: records on disk, later images read partially, a lost record rebuilt in full."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dcmsortd.dicom.header import SeriesCache, read_instance
from dcmsortd.model.notice import Arrival
from dcmsortd.rules.engine import default_rules
from dcmsortd.sorting.processor import Examined, Sorter
from dcmsortd.sorting.store import Store
from realfiles import pydicom_data, restamp

SERIES = "1.2.826.0.1.3680043.8.498.9.1"


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    return [restamp(pydicom_data("MR_small.dcm"), folder / f"{i}.dcm", "1.2.3", SERIES,
                    f"{SERIES}.{i}", InstanceNumber=i) for i in range(1, n + 1)]


def test_later_images_are_read_partially_and_a_lost_record_is_rebuilt(tmp_path: Path) -> None:
    rules = default_rules()
    files = _files(tmp_path / "data" / "in", 4)
    cache = SeriesCache()
    instances = [read_instance(str(f), rules.tag_keys(), cache) for f in files]
    assert [i.complete for i in instances] == [True, False, False, False]
    assert "EchoTime" not in instances[1].fields and "EchoTime" in instances[0].fields

    store = Store(str(tmp_path / "data" / "site"), rules)
    store.prepare()
    sorter = Sorter(store)

    def handle(i: int) -> str:
        arrival = Arrival("A", "B", "c", str(files[i]))
        return sorter.handle(Examined(arrival, instances[i], None))

    assert [handle(i) for i in range(3)] == ["sorted"] * 3
    store.flush(everything=True)
    record_path = tmp_path / "data" / "site" / "raw" / "1.2.3" / f"{SERIES}.json"
    first = json.loads(record_path.read_text())
    assert first["NumFiles"] == "3" and first["EchoTime"] == "240.0000"

    # the record and the state vanish while this process still remembers the series
    record_path.unlink()
    shutil.rmtree(tmp_path / "data" / "site" / ".dcmsortd" / "series")
    store._series.clear()
    assert handle(3) == "sorted"  # partial Instance: the store asks for a full read
    store.flush(everything=True)
    rebuilt = json.loads(record_path.read_text())
    assert rebuilt["NumFiles"] == "4"  # the links on disk
    assert {k: v for k, v in rebuilt.items() if k not in ("NumFiles", "InstanceNumber")} == {
        k: v for k, v in first.items() if k not in ("NumFiles", "InstanceNumber")}


def test_many_open_series_are_evicted_without_losing_the_new_one(tmp_path: Path) -> None:
    """More series than ``max_open``: idle ones leave memory, every record is still written."""
    rules = default_rules()
    folder = tmp_path / "data" / "in"
    folder.mkdir(parents=True)
    store = Store(str(tmp_path / "data" / "site"), rules, max_open=3)
    store.prepare()
    sorter = Sorter(store)
    cache = SeriesCache()
    for n in range(1, 9):
        series = f"{SERIES}.{n}"
        path = restamp(pydicom_data("MR_small.dcm"), folder / f"{n}.dcm", "1.2.3", series,
                       f"{series}.1")
        inst = read_instance(str(path), rules.tag_keys(), cache)
        assert sorter.handle(Examined(Arrival("A", "B", "c", str(path)), inst, None)) == "sorted"
        store.flush(everything=True)
        assert store.open_series() <= 3
    records = sorted((tmp_path / "data" / "site" / "raw" / "1.2.3").glob("*.json"))
    assert len(records) == 8
    assert all(json.loads(r.read_text())["NumFiles"] == "1" for r in records)


def test_the_index_of_known_markers_stays_bounded_and_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Announced files keep the index of known-sender markers current up to its bound; past
    it the index is dropped and read again from .arrived when a file without a sender comes."""
    monkeypatch.setattr("dcmsortd.sorting.store.KNOWN_MARKERS", 3)
    rules = default_rules()
    store = Store(str(tmp_path / "data" / "site"), rules)
    store.prepare()
    sorter = Sorter(store)
    series = [f"{SERIES}.{n}" for n in range(6)]
    files = [restamp(pydicom_data("MR_small.dcm"), tmp_path / f"{n}.dcm", "1.2.3", s,
                     f"{s}.1", InstanceNumber=1) for n, s in enumerate(series)]

    def handle(n: int, arrival: Arrival) -> None:
        inst = read_instance(str(files[n]), rules.tag_keys())
        assert sorter.handle(Examined(arrival, inst, None)) == "sorted"

    arrived = tmp_path / "data" / "site" / ".arrived"
    handle(0, Arrival("MRC", "FIONA", "10.0.0.1", str(files[0])))
    handle(1, Arrival("unknown", "unknown", "unknown", str(files[1])))  # reads the index
    assert store._known_markers is not None
    for n in (2, 3, 4):
        handle(n, Arrival("MRC", "FIONA", "10.0.0.1", str(files[n])))
    assert store._known_markers is None  # past 3 entries: dropped
    # a file without a sender of series 4: found again in .arrived, no new marker
    restamp(pydicom_data("MR_small.dcm"), tmp_path / "4b.dcm", "1.2.3", series[4],
            f"{series[4]}.2", InstanceNumber=2)
    inst = read_instance(str(tmp_path / "4b.dcm"), rules.tag_keys())
    arrival = Arrival("unknown", "unknown", "unknown", str(tmp_path / "4b.dcm"))
    assert sorter.handle(Examined(arrival, inst, None)) == "sorted"
    names = sorted(p.name for p in arrived.iterdir())
    assert names == sorted(
        [f"MRC FIONA 10.0.0.1 1.2.3 {series[n]}" for n in (0, 2, 3, 4)]
        + [f"unknown unknown unknown 1.2.3 {series[1]}"]
    )
