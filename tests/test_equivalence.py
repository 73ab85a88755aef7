"""One corpus, four ways: ``import`` with 1 and 2 workers, the daemon with 1 and 2 workers.

The outputs must be identical (issue 5), and a 5 000-image series sent image by image
through the pipe must give exactly the record ``import`` gives it in bulk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bulkcorpus import snapshot
from daemonproc import Site, stop, wait_for
from feeder import feed, wait_listening
from manyfiles import Corpus, clone_bytes, template, uid, write_series
from realfiles import nibabel_data, pydicom_data, shared_dicom

pytestmark = pytest.mark.slow

LONG = 5000
TAGS = {"PatientID": "EQ1", "StudyDate": "20240105", "StudyTime": "090909"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("equivalence")
    scratch = root / "scratch"
    scratch.mkdir()
    c = Corpus(root / "archive")
    study = uid(50)
    write_series(c, nibabel_data("siemens_dwi_0.dcm.gz", scratch), study, uid(50, 1), 15, TAGS)
    write_series(c, nibabel_data("siemens_dwi_1000.dcm.gz", scratch), study, uid(50, 1), 15,
                 TAGS, first=16)
    write_series(c, shared_dicom("siemens_vb17_axial.dcm"), study, uid(50, 2), 20, TAGS)
    write_series(c, pydicom_data("CT_small.dcm"), uid(51), uid(51, 1), 30, TAGS)
    write_series(c, pydicom_data("test-SR.dcm"), uid(51), uid(51, 2), 4, TAGS)
    long_series = uid(50, 3)
    data = template(pydicom_data("MR_small.dcm"), scratch / "long.dcm", study, long_series, TAGS)
    folder = c.root / long_series
    folder.mkdir()
    for n in range(1, LONG + 1):
        path = folder / f"im{n:05d}.dcm"
        path.write_bytes(clone_bytes(data, long_series, n))
        c.files.append(path)
    c.series[long_series] = LONG
    c.files.sort(key=lambda p: p.parts)  # the order ``import`` walks the archive in
    return c


def _expected(site: Site, corpus: Corpus) -> bool:
    records = site.records()
    got = {Path(k).stem: r.get("NumFiles") for k, r in records.items()}
    return all(got.get(s) == str(n) for s, n in corpus.series.items())


def _by_import(tmp: Path, corpus: Corpus, workers: int) -> dict[str, Any]:
    site = Site(tmp)
    out = site.cli("import", "--input-root", str(corpus.root), "--workers", str(workers),
                   str(corpus.root), timeout=300)
    assert out.returncode == 0, out.stderr
    assert _expected(site, corpus)
    return snapshot(site.datadir)


def _by_daemon(tmp: Path, corpus: Corpus, workers: int) -> dict[str, Any]:
    site = Site(tmp)
    daemon = site.start_run("--no-catch-up", "--input-root", str(corpus.root),
                            "--workers", str(workers))
    try:
        # one absolute path per line: caller, called and ip are "unknown", as for import
        wait_listening(site.pipe)
        sent = feed(site.pipe, [f"{p}\n".encode() for p in corpus.files])
        assert sent == len(corpus.files)
        wait_for(lambda: _expected(site, corpus), 240, "every series' final NumFiles")
    finally:
        code, out = stop(daemon, timeout=30)
    assert code == 0, out
    return snapshot(site.datadir)


def test_import_and_daemon_with_one_and_two_workers_write_the_same(
    tmp_path: Path, corpus: Corpus
) -> None:
    reference = _by_import(tmp_path / "import1", corpus, 1)
    records = [k for k in reference if k.endswith(".json") and "/raw/" in k]
    assert len(records) == len(corpus.series)
    assert any(k.startswith("site/srs/") for k in reference)
    for name, result in (
        ("import --workers 2", _by_import(tmp_path / "import2", corpus, 2)),
        ("daemon --workers 1", _by_daemon(tmp_path / "daemon1", corpus, 1)),
        ("daemon --workers 2", _by_daemon(tmp_path / "daemon2", corpus, 2)),
    ):
        differing = sorted(k for k in set(reference) | set(result)
                           if reference.get(k) != result.get(k)
                           # the daemon's own: its heartbeat, pending completions, events,
                           # its (empty) journal folder
                           and not k.startswith(("site/.dcmsortd/daemon",
                                                 "site/.dcmsortd/completions",
                                                 "site/.dcmsortd/events",
                                                 "site/.dcmsortd/journal")))
        assert not differing, f"{name} differs from import --workers 1 in {differing[:5]}"
