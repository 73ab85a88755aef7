"""End to end: dcmtk storescp -> exec-on-reception -> real named pipe -> dcmsortd run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pydicom
import pytest

from daemonproc import Receiver, Site, stop, wait_for
from realfiles import nibabel_data, pydicom_data, restamp, shared_dicom

pytestmark = pytest.mark.e2e

STUDY = "1.2.826.0.1.3680043.8.498.100"
MR_SERIES = STUDY + ".1"
DWI_SERIES = STUDY + ".2"
WHEN = {"StudyDate": "20240102", "StudyTime": "101010"}


def _corpus(folder: Path) -> dict[str, list[Path]]:
    """A few series from real files: Siemens VB17 MR (5 images), Siemens DWI (2 images),
    a Siemens PhoenixZIPReport SR, pydicom's SR without manufacturer, a GE CT."""
    folder.mkdir()
    mr = [
        restamp(shared_dicom("siemens_vb17_axial.dcm"), folder / f"mr{i}.dcm", STUDY, MR_SERIES,
                f"{MR_SERIES}.{i}", InstanceNumber=i, PatientID="SUBJ01",
                SliceLocation=str(10 - i), **WHEN)
        for i in range(1, 6)
    ]
    dwi = [
        restamp(nibabel_data(name, folder), folder / f"dwi{i}.dcm", STUDY, DWI_SERIES,
                f"{DWI_SERIES}.{i}", InstanceNumber=i, PatientID="SUBJ01", **WHEN)
        for i, name in enumerate(("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"), 1)
    ]
    sr = [shared_dicom("siemens_ve11_phoenixzip_sr.dcm"), pydicom_data("test-SR.dcm")]
    ct = [pydicom_data("CT_small.dcm")]
    return {"mr": mr, "dwi": dwi, "sr": sr, "ct": ct}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def _expected_counts(site: Site, counts: dict[str, int]) -> bool:
    recs = site.records()
    got = {Path(k).stem: v.get("NumFiles") for k, v in recs.items()}
    return all(got.get(uid) == str(n) for uid, n in counts.items())


def test_storescp_to_sorted_trees_and_resend_is_identical(site: Site, tmp_path: Path) -> None:
    files = _corpus(tmp_path / "send")
    daemon = site.start_run("--no-catch-up")
    receiver = Receiver(site.archive, f"echo '#a,#c,#r,#p,#f' > {site.pipe}")
    try:
        receiver.send([*files["mr"], *files["dwi"], *files["sr"], *files["ct"]])
        wait_for(lambda: _expected_counts(site, {MR_SERIES: 5, DWI_SERIES: 2}), 30,
                 "the MR and DWI records")
        wait_for(lambda: len(site.records()) == 5, 30, "five series records")
        raw = site.site / "raw"

        # every raw link points at the received file in storescp's archive
        links = sorted(p for p in raw.rglob("*") if p.is_symlink())
        assert len(links) == 5 + 2 + 2 + 1
        for link in links:
            target = Path(os.readlink(link))
            assert target.is_absolute() and target.parent == site.archive
            assert target.exists()

        mr = json.loads((raw / STUDY / f"{MR_SERIES}.json").read_text())
        assert mr["NumFiles"] == "5"
        conn = mr["IncomingConnection"]
        assert (conn["AETitleCaller"], conn["AETitleCalled"]) == ("SCANNER", "FIONA")
        ip = conn["CallerIP"]  # storescp's #r: the peer address or its host name
        assert ip in ("127.0.0.1", "localhost")
        assert mr["Manufacturer"] == "SIEMENS" and mr["PatientID"] == "SUBJ01"
        assert mr["NumSlices"] == "35"  # sGroupArray.asGroup[0].nSize of the VB17 protocol
        assert mr["SliceLocation"] == "5"  # the smallest seen
        assert mr["InstanceNumber"] == "1"  # the first image's value stays
        assert "SIEMENS" in mr["ClassifyType"]
        assert mr["PhaseEncodingDirectionPositive"] in ("0", "1")

        dwi = json.loads((raw / STUDY / f"{DWI_SERIES}.json").read_text())
        info = dwi["siemensDiffusionInformation"]
        assert [e["B_value"] for e in info] == ["0", "1000"]
        assert all(len(e["DiffusionGradientDirection"]) == 3 for e in info
                   if "DiffusionGradientDirection" in e)

        # participants: PatientID -> StudyDate_StudyTime -> raw/<study>
        plink = site.site / "participants" / "SUBJ01"
        (entry,) = list(plink.iterdir())
        assert entry.name == "20240102_101010"
        assert os.readlink(entry) == str(raw / STUDY)

        # structured reports are linked a second time, with a listing per study
        siemens_srs = site.site / "srs" / "SIEMENS"
        listing = json.loads(next(siemens_srs.glob("*.json")).read_text())
        assert listing[0]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.22"
        assert (site.site / "srs" / "unknown").is_dir()  # SR without Manufacturer
        assert len(list((site.site / "srs").rglob("*"))) >= 6

        # arrival markers: one per series, named caller called ip study series
        markers = sorted(p.name for p in (site.site / ".arrived").iterdir())
        assert f"SCANNER FIONA {ip} {STUDY} {MR_SERIES}" in markers
        assert len(markers) == 5

        before = site.snapshot()
        # re-send everything: outputs stay byte-identical (arrival mtimes aside)
        ct_marker = next(p for p in (site.site / ".arrived").iterdir() if "5962.1.2.1" in p.name)
        ct_mtime = ct_marker.stat().st_mtime_ns
        receiver.send([*files["mr"], *files["dwi"], *files["sr"], *files["ct"]])
        # the CT line is the last one through the pipe: once it is seen, all were
        wait_for(lambda: ct_marker.stat().st_mtime_ns > ct_mtime, 30, "the re-sent arrivals")
    finally:
        receiver.close()
        code, out = stop(daemon)
    assert code == 0, out
    assert site.snapshot() == before
    assert not site.pipe.exists() and not site.pid_file.exists()
    assert "Traceback" not in site.log_text()


def test_modalities_setting_leaves_other_files_untouched(tmp_path: Path) -> None:
    site = Site(tmp_path, config={"dcmsortd": {"modalities": ["MR", "SR"]}})
    files = _corpus(tmp_path / "send")
    daemon = site.start_run("--no-catch-up")
    receiver = Receiver(site.archive, f"echo '#a,#c,#r,#p,#f' > {site.pipe}")
    try:
        receiver.send([*files["ct"], *files["mr"]])
        received_at = time.time()
        wait_for(lambda: _expected_counts(site, {MR_SERIES: 5}), 30, "the MR record")
        wait_for(lambda: "is not sorted here" in site.log_text(), 30, "the CT log line")
    finally:
        receiver.close()
        code, out = stop(daemon)
    assert code == 0, out
    (ct,) = [p for p in site.archive.iterdir() if p.name.startswith("CT.")]
    # untouched: the data set storescp stored is the one sent, not modified since receipt
    assert ct.stat().st_mtime <= received_at
    stored, sent = pydicom.dcmread(ct), pydicom.dcmread(files["ct"][0])
    sent.pop(0xFFFCFFFC, None)  # storescp drops the trailing padding of pydicom's file
    assert stored.to_json_dict() == sent.to_json_dict()
    linked = {os.readlink(p) for p in (site.site / "raw").rglob("*") if p.is_symlink()}
    assert str(ct) not in linked
    assert len(site.records()) == 1


def test_notify_line_spools_while_the_daemon_is_down(site: Site, tmp_path: Path) -> None:
    """storescp with the notify line never stalls; a daemon started later sorts it all."""
    files = _corpus(tmp_path / "send")
    cli = f"{os.sys.executable} -c 'from dcmsortd.cli.entry import main_entry; main_entry()'"
    notify = (f"{cli} notify --config {site.config_file} --datadir {site.datadir} "
              f"--pipe {site.pipe} '#a,#c,#r,#p,#f'")
    receiver = Receiver(site.archive, notify)
    try:
        receiver.send([*files["mr"], *files["dwi"]], timeout=60)
        spool = site.site / ".dcmsortd" / "spool"
        wait_for(lambda: spool.is_dir() and len(list(spool.glob("*.line"))) == 7, 30,
                 "seven spooled notifications")
        assert not (site.site / "raw").exists() or not list((site.site / "raw").iterdir())
        daemon = site.start_run("--no-catch-up")
        try:
            wait_for(lambda: _expected_counts(site, {MR_SERIES: 5, DWI_SERIES: 2}), 30,
                     "both series sorted from the spool")
            wait_for(lambda: not list(spool.glob("*.line")), 10, "the spool to empty")
        finally:
            code, out = stop(daemon)
        assert code == 0, out
    finally:
        receiver.close()
