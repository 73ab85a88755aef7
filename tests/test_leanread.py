"""The lean header reader gives the dataset pydicom gives, or hands the file to pydicom.

Every real file we have (pydicom's bundled files, nibabel's Siemens files, the shared
scanner files) is read both ways: each top-level element renders the same text, the
encodings agree, and the Instance extracted from either is equal.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import os
import struct
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement

from dcmsortd.dicom.dicomfile import read_dataset
from dcmsortd.dicom.elements import element_text
from dcmsortd.dicom.header import SeriesCache, instance_from_dataset, read_instance
from dcmsortd.dicom.leanread import FIRST_READ, kept, read_lean
from realfiles import nibabel_data, shared_dir


def _lean(path: Path) -> pydicom.Dataset | None:
    with open(path, "rb") as fp:
        found = read_lean(fp, path.stat().st_size)
    return None if found is None else found[0]


def _real_files(tmp: Path) -> list[Path]:
    # pydicom's bundled files, found in place: get_testdata_files would try to download
    files = sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm"))
    import nibabel.nicom.tests as nicom_tests

    for name in glob.glob(os.path.join(os.path.dirname(nicom_tests.__file__), "data", "*")):
        if name.endswith(".dcm"):
            files.append(Path(name))
        elif name.endswith(".dcm.gz"):
            out = tmp / Path(name).name.removesuffix(".gz")
            out.write_bytes(gzip.decompress(Path(name).read_bytes()))
            files.append(out)
    files += sorted(shared_dir().glob("*.dcm"))
    return files


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _real_files(tmp_path_factory.mktemp("gunzipped"))


def test_every_file_read_lean_equals_pydicom(real_files: list[Path]) -> None:
    lean_count = 0
    for path in real_files:
        ds = _lean(path)
        if ds is None:
            continue
        lean_count += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = pydicom.dcmread(path, stop_before_pixels=True)
        tags = [int(t) for t in ref.keys()]  # noqa: SIM118 (a Dataset iterates its elements)
        assert [int(t) for t in ds.keys()] == tags, path  # noqa: SIM118
        for tag in tags:
            assert element_text(ds, tag) == element_text(ref, tag), (path, hex(tag))
        assert ds.original_encoding == ref.original_encoding, path
        assert ds.original_character_set == ref.original_character_set, path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = instance_from_dataset(ref, str(path), full=True)
            except Exception as exc:  # noqa: BLE001 - the lean dataset must fail alike
                with pytest.raises(type(exc)):
                    instance_from_dataset(ds, str(path), full=True)
                continue
            assert instance_from_dataset(ds, str(path), full=True) == expected, path
    # most of them are explicit/implicit little endian with a preamble: the lean path
    assert lean_count >= 60


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MR_small_bigendian.dcm", "big endian"),
        ("image_dfl.dcm", "deflated"),
        ("no_meta.dcm", "no preamble"),
        ("UN_sequence.dcm", "undefined-length UN"),
        ("SC_rgb_jpeg.dcm", "data set encoded otherwise than its transfer syntax says"),
        ("rtplan_truncated.dcm", "a value runs past the end"),
        ("meta_missing_tsyntax.dcm", "no transfer syntax"),
    ],
)
def test_what_the_lean_reader_leaves_to_pydicom(name: str, why: str) -> None:
    path = Path(get_testdata_file(name))
    assert _lean(path) is None, why


def test_a_command_set_element_in_front_of_the_data_set_is_left_to_pydicom() -> None:
    """pydicom reads group 0x0000 elements at the start of a data set as implicit VR
    (PS3.7): a damaged meta element that became (0000,0013) is not read lean."""
    data = bytearray(_seed_bytes("MR_small.dcm"))
    at = data.index(b"\x02\x00\x13\x00SH")  # Implementation Version Name, the last but one
    data[at:at + 2] = b"\x00\x00"
    assert read_lean(io.BytesIO(bytes(data)), len(data), None) is None


def test_a_header_longer_than_the_first_read_is_read_whole(tmp_path: Path) -> None:
    """A header past FIRST_READ bytes (a long private element) is read on demand."""
    src = Path(get_testdata_file("MR_small.dcm"))
    ds = pydicom.dcmread(src)
    ds.add_new(0x00291010, "OB", b"\x01" * (FIRST_READ * 2 + 4))
    ds.add_new(0x00321060, "LO", "after the long element")
    out = tmp_path / "long.dcm"
    ds.save_as(out)
    lean = _lean(out)
    assert lean is not None
    assert lean[0x00291010].value == b"\x01" * (FIRST_READ * 2 + 4)
    assert element_text(lean, 0x00321060) == "after the long element"
    assert element_text(lean, 0x00100020) == ds.PatientID


def test_undefined_length_sequences_are_kept_and_convert_like_pydicom(tmp_path: Path) -> None:
    """An undefined-length sequence with undefined-length items is skipped, not parsed,
    yet its items read back as pydicom reads them."""
    src = Path(get_testdata_file("MR_small.dcm"))
    ds = pydicom.dcmread(src)
    inner = pydicom.Dataset()
    inner.CodeMeaning = "nested"
    item = pydicom.Dataset()
    item.ConceptNameCodeSequence = pydicom.Sequence([inner])
    item.TextValue = "x" * 9
    ds.ContentSequence = pydicom.Sequence([item, item])
    ds.ContentSequence.is_undefined_length = True
    for it in ds.ContentSequence:
        it.is_undefined_length_sequence_item = True
    ds["ContentSequence"].is_undefined_length = True
    out = tmp_path / "sq.dcm"
    ds.save_as(out)
    lean = _lean(out)
    assert lean is not None
    ref = pydicom.dcmread(out, stop_before_pixels=True)
    assert len(lean.ContentSequence) == 2
    assert lean.ContentSequence[1].ConceptNameCodeSequence[0].CodeMeaning == "nested"
    assert str(lean.ContentSequence) == str(ref.ContentSequence)
    assert element_text(lean, 0x00100010) == element_text(ref, 0x00100010)


def test_truncated_pixel_data_is_still_caught(tmp_path: Path) -> None:
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-1000])  # into the pixel data (the last bytes are padding)
    from dcmsortd.model.errors import HeaderError

    with pytest.raises(HeaderError, match="truncated: pixel data declares"):
        read_dataset(str(cut))


def test_later_images_of_a_non_diffusion_series_skip_the_csa_image_header(
    tmp_path: Path,
) -> None:
    """The first image of a series gets its CSA image fields; a later one of a series
    without diffusion information does not need them (the record keeps the first's);
    every image of a diffusion series keeps its diffusion entry."""
    cache = SeriesCache()
    vb17 = shared_dir() / "siemens_vb17_axial.dcm"
    if not vb17.is_file():
        pytest.skip(f"real DICOM siemens_vb17_axial.dcm not found in {vb17.parent}")
    first = read_instance(str(vb17), cache=cache)
    later = read_instance(str(vb17), cache=cache)
    assert first.complete and "PhaseEncodingDirectionPositive" in first.fields
    assert not later.complete and "PhaseEncodingDirectionPositive" not in later.fields
    assert later.fields["NumSlices"] == first.fields["NumSlices"] == "35"  # protocol still read
    dwi = nibabel_data("siemens_dwi_1000.dcm.gz", tmp_path)
    assert read_instance(str(dwi), cache=cache).diffusion is not None
    again = read_instance(str(dwi), cache=cache)
    assert not again.complete
    assert again.diffusion is not None and again.diffusion.b_value == "1000"


def test_reading_only_the_wanted_tags_gives_the_same_instance(real_files: list[Path]) -> None:
    """read_instance keeps only the elements the record and the rules read: the Instance
    (rule values included, for the packaged rules and a rule on a private tag) equals the
    one extracted from pydicom's complete dataset."""
    from dcmsortd.model.errors import HeaderError
    from dcmsortd.rules.engine import default_rules

    keys = default_rules().tag_keys() | {(0x0019, 0x100C), (0x0029, 0x1008), "Rows"}
    compared = with_ae = 0
    for path in real_files:
        try:
            inst = read_instance(str(path), keys)
        except HeaderError:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            # a dataset read without its pixels cannot tell whether the file had them:
            # that flag is the reader's (tests/test_headeronly.py)
            expected = instance_from_dataset(ref, str(path), keys,
                                             source_ae=_pydicom_source_ae(ref))
            assert dataclasses.replace(expected, pixel_data=inst.pixel_data) == inst, path
        compared += 1
        with_ae += inst.source_ae is not None
    assert compared >= 60
    assert with_ae >= 20  # (0002,0016) read from the file meta, lean or not, as pydicom does


def _pydicom_source_ae(ds: pydicom.Dataset) -> str | None:
    """The file meta's SourceApplicationEntityTitle as pydicom renders it, unpadded."""
    value = getattr(ds, "file_meta", pydicom.Dataset()).get("SourceApplicationEntityTitle")
    return None if value is None else str(value).strip("\x00 ")


def test_implicit_vr_file_with_skipped_undefined_length_sequences(tmp_path: Path) -> None:
    """Implicit VR little endian: undefined-length sequences (a public one and a private
    one, recognised by its first item) before the wanted elements are stepped over, and
    the elements after them are read as pydicom reads them."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ref_item = pydicom.Dataset()
    ref_item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = pydicom.Sequence([ref_item, ref_item])
    ds["ReferencedImageSequence"].is_undefined_length = True
    block = ds.private_block(0x0009, "DCMSORTD TEST", create=True)
    block.add_new(0x10, "SQ", pydicom.Sequence([ref_item]))
    ds[0x00091010].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    out = tmp_path / "implicit.dcm"
    ds.save_as(out, enforce_file_format=True)
    ref = pydicom.dcmread(out, stop_before_pixels=True)
    for wanted in (None, frozenset({0x00100020, 0x0020000D})):
        with open(out, "rb") as fp:
            found = read_lean(fp, out.stat().st_size, wanted)
        assert found is not None
        lean, implicit = found.dataset, found.implicit
        assert implicit
        for tag in (0x00100020, 0x0020000D, 0x00280010):
            assert element_text(lean, tag) == element_text(ref, tag)
        if wanted is None:
            assert lean.ReferencedImageSequence[1].ReferencedSOPInstanceUID == "1.2.3.4"
            assert str(lean[0x00091010].value) == str(ref[0x00091010].value)
        else:
            assert 0x00081140 not in lean and 0x00091010 not in lean
            assert 0x00090010 in lean  # private creators are always kept


def test_a_filtered_read_keeps_exactly_what_kept_names(real_files: list[Path]) -> None:
    """The reader's inline test of each element agrees with kept(), on every real file."""
    wanted = frozenset({0x00100020, 0x0020000D, 0x0020000E, 0x00080060, 0x00191010})
    compared = 0
    for path in real_files:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            whole = read_lean(fp, size, None)
        if whole is None:
            continue
        with open(path, "rb") as fp:
            filtered = read_lean(fp, size, wanted)
        assert filtered is not None, path
        expected = {int(t) for t in whole[0].keys() if kept(int(t), wanted)}  # noqa: SIM118
        assert {int(t) for t in filtered[0].keys()} == expected, path  # noqa: SIM118
        assert filtered[1:] == whole[1:], path
        compared += 1
    assert compared >= 60


# explicit VR; explicit with many elements; implicit VR; undefined-length sequences
_SEEDS = ["MR_small.dcm", "CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm"]
_SEED_CACHE: dict[str, bytes] = {}


def _seed_bytes(name: str) -> bytes:
    if name not in _SEED_CACHE:
        # found in place: get_testdata_file would try to download a missing one
        folder = Path(pydicom.__file__).parent / "data" / "test_files"
        _SEED_CACHE[name] = (folder / name).read_bytes()
    return _SEED_CACHE[name]


def _converted(ds: pydicom.Dataset, tag: int) -> tuple[str, str]:
    """The VR and text pydicom converts element ``tag`` to, or the error it raises."""
    try:
        elem = ds[tag]
        return str(elem.VR), str(elem.value)
    except Exception as exc:  # noqa: BLE001 - damaged bytes: both readers must fail alike
        return "error", type(exc).__name__


_EDIT = st.tuples(st.sampled_from(["byte", "length", "cut"]), st.integers(132, 3999),
                  st.integers(0, 255), st.sampled_from([0, 1, 2, 0xFFFF]), st.integers(1, 24))


def _damaged(name: str, edits: list[tuple[str, int, int, int, int]]) -> bytes:
    """A real file with a few bytes of its header changed, a length rewritten or a
    stretch cut out."""
    data = bytearray(_seed_bytes(name))
    for kind, at, byte, length, cut in edits:
        pos = 132 + (at - 132) % (min(len(data), 4000) - 132)
        if kind == "byte":
            data[pos] = byte
        elif kind == "length":
            data[pos:pos + 2] = struct.pack("<H", length)
        else:
            del data[pos:pos + cut]
    return bytes(data)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=st.sampled_from(_SEEDS), edits=st.lists(_EDIT, min_size=1, max_size=4),
       filtered=st.booleans())
def test_on_damaged_files_the_lean_reader_gives_pydicom_s_elements_or_none(
    name: str, edits: list[tuple[str, int, int, int, int]], filtered: bool
) -> None:
    """Whatever the damage, the lean reader either leaves the file to pydicom (None) or
    gives exactly the top-level elements pydicom reads before the pixel data: the same
    tags, the same raw elements (value, VR, length, offset) and the same text; with a tag
    filter, the kept ones."""
    data = _damaged(name, edits)
    wanted = frozenset({0x00100020, 0x0020000D, 0x0020000E, 0x00080060}) if filtered else None
    found = read_lean(io.BytesIO(data), len(data), wanted)
    if found is None:
        return
    lean, implicit = found.dataset, found.implicit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"the lean reader read a file pydicom cannot: {exc!r}")
    expected = [int(t) for t in ref.keys()  # noqa: SIM118
                if wanted is None or kept(int(t), wanted)]
    assert [int(t) for t in lean.keys()] == expected  # noqa: SIM118
    assert implicit == ref.is_implicit_VR
    for tag in expected:  # before any value is read (which converts some others too)
        theirs = ref.get_item(tag, keep_deferred=True)
        if isinstance(theirs, RawDataElement):  # pydicom converted a few (the charset)
            assert lean.get_item(tag, keep_deferred=True) == theirs, hex(tag)
    for tag in expected:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert element_text(lean, tag) == element_text(ref, tag), hex(tag)
            assert _converted(lean, tag) == _converted(ref, tag), hex(tag)
    assert lean.original_character_set == ref.original_character_set
