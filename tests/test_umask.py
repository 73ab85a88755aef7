"""The umask setting: folders 777 and files 666 minus it, applied to everything we create."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from daemonproc import Site
from realfiles import pydicom_data, restamp


@pytest.mark.parametrize(("umask", "dirs", "files"), [
    ("002", 0o775, 0o664),  # the default
    ("0", 0o777, 0o666),  # FIONA's world-writable trees
    ("077", 0o700, 0o600),
])
def test_umask_applies_to_folders_and_json(tmp_path: Path, umask: str, dirs: int,
                                           files: int) -> None:
    site = Site(tmp_path)
    restamp(pydicom_data("MR_small.dcm"), site.archive / "mr.dcm", PatientID="U1")
    out = site.cli("import", "--umask", umask, str(site.archive))
    assert out.returncode == 0, out.stderr
    made = [p for p in site.site.rglob("*")
            if not p.is_symlink() and "archive" not in p.parts and "locks" not in p.parts
            and "processed.sqlite" not in p.name]
    folders = [p for p in made if p.is_dir()]
    jsons = [p for p in made if p.suffix == ".json"]
    assert folders and jsons
    for p in folders:
        assert stat.S_IMODE(os.stat(p).st_mode) == dirs, p
    for p in jsons:
        assert stat.S_IMODE(os.stat(p).st_mode) == files, p
