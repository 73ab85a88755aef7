"""The ASCCONV protocol parser: VB17 and VE11 layouts, quoting, comments, and junk."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.dicom import protocol
from realfiles import nibabel_data

VB17 = "\n".join(
    [
        "<XProtocol>",
        "{",
        '  <ParamString."Protocol0">  { "<ignored> = 1" }',
        "}",
        "### ASCCONV BEGIN ###",
        "ulVersion                                = 0x14b44b6",
        'tSequenceFileName                        = ""%SiemensSeq%\\ep2d_bold""',
        'sProtConsistencyInfo.tBaselineString     = ""N4_VB17A_LATEST_20090307""',
        "sProtConsistencyInfo.flNominalB0         = 2.89362",
        "sGroupArray.asGroup[0].nSize             = 35",
        'sWiPMemBlock.tFree                       = """"',
        '### ASCCONV END ###" ',
        "    }",
    ]
)

VE11 = (
    "### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 "
    "converter=%MEASCONST%/ConverterList/Prot_Converter.txt ###\n"
    "ulVersion\t = \t51130001\n"
    "lSequenceID\t = \t18\n"
    'sProtConsistencyInfo.tMeasuredBaselineString\t = \t""N4_VE11C_LATEST_20160120""\n'
    "sGRADSPEC.asGPAData.__attribute__.size\t = \t1\n"
    "sDiffusion.sFreeDiffusionData.sComment.9\t\t = 0x56    # 'V'\n"
    "### ASCCONV END ###"
)


def test_vb17_space_aligned_lines() -> None:
    prot = protocol.parse(VB17)
    assert prot == {
        "ulVersion": "0x14b44b6",
        "tSequenceFileName": "%SiemensSeq%\\ep2d_bold",
        "sProtConsistencyInfo.tBaselineString": "N4_VB17A_LATEST_20090307",
        "sProtConsistencyInfo.flNominalB0": "2.89362",
        "sGroupArray.asGroup[0].nSize": "35",
        "sWiPMemBlock.tFree": "",
    }


def test_ve11_tab_separated_lines_attribute_lines_and_trailing_comments() -> None:
    prot = protocol.parse(VE11)
    assert prot["lSequenceID"] == "18"
    assert prot["sProtConsistencyInfo.tMeasuredBaselineString"] == "N4_VE11C_LATEST_20160120"
    assert prot["sGRADSPEC.asGPAData.__attribute__.size"] == "1"
    assert prot["sDiffusion.sFreeDiffusionData.sComment.9"] == "0x56"
    assert "ulVersion" in prot and len(prot) == 5


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('""abc""', "abc"),
        ('"abc"', "abc"),
        ('""""', ""),
        ('""', ""),
        ('"" # empty', ""),
        ('""a # b""  # comment', "a # b"),
        ('"a#b"', "a#b"),
        ('""unterminated', "unterminated"),
        ('"unterminated', "unterminated"),
        ("0x1  # one", "0x1"),
        ("-0.5", "-0.5"),
        ("", ""),
    ],
)
def test_value_text(raw: str, value: str) -> None:
    assert protocol.value_text(raw) == value


@pytest.mark.parametrize(
    "line",
    ["", "   ", "# a comment", "### ASCCONV END ###", "no assignment here", "= 5", "a b = 1"],
)
def test_lines_that_are_not_assignments_are_skipped(line: str) -> None:
    assert protocol.parse_line(line) is None


def test_no_block_gives_nothing_and_an_open_block_runs_to_the_end() -> None:
    assert protocol.parse("a = 1\nb = 2\n") == {}
    assert protocol.parse("### ASCCONV BEGIN ###\r\na = 1\r\nb = 2") == {"a": "1", "b": "2"}


def test_every_block_is_read_and_the_last_assignment_wins() -> None:
    text = (
        "### ASCCONV BEGIN ###\na = 1\nb = 1\n### ASCCONV END ###\n"
        "between = ignored\n"
        "### ASCCONV BEGIN ###\nb = 2\n### ASCCONV END ###\n"
    )
    assert protocol.parse(text) == {"a": "1", "b": "2"}


def test_nibabel_ascconv_sample() -> None:
    text = nibabel_data("ascconv_sample.txt").read_text(encoding="latin-1")
    prot = protocol.parse(text)
    assert prot["tProtocolName"] == "CBU+AF8-DTI+AF8-64D+AF8-1A"
    assert prot["sGroupArray.asGroup[0].nSize"] == "48"
    assert len(prot) > 500


_NAME = st.text(alphabet=string.ascii_letters + string.digits + "._[]", min_size=1, max_size=30)
_WORD = st.text(alphabet=string.ascii_letters + string.digits + ".-+%\\/ :;|", max_size=40)
_NUMBER = st.text(alphabet=string.digits + ".-x", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_NAME, st.tuples(st.booleans(), st.one_of(_WORD, _NUMBER)), max_size=20),
    st.sampled_from(["{name:<40} = {value}", "{name}\t = \t{value}", "{name}={value}   # note"]),
)
def test_written_protocols_read_back(entries: dict[str, tuple[bool, str]], layout: str) -> None:
    lines = []
    for name, (quoted, value) in entries.items():
        text = f'""{value}""' if quoted else value.strip() or "0"
        lines.append(layout.format(name=name, value=text))
    block = "### ASCCONV BEGIN ###\n" + "\n".join(lines) + "\n### ASCCONV END ###\n"
    expected = {
        name: value if quoted else value.strip().partition("#")[0].strip() or "0"
        for name, (quoted, value) in entries.items()
    }
    assert protocol.parse(block) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500), st.text(max_size=200))
def test_parse_never_raises_on_junk(before: str, body: str) -> None:
    for text in (before, f"{before}### ASCCONV BEGIN ###\n{body}", before + body):
        result = protocol.parse(text)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())
