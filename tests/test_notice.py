from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.model.errors import NotificationError
from dcmsortd.model.notice import (
    CALLER_IN_FILE,
    MAX_LINE_BYTES,
    UNKNOWN,
    Arrival,
    clean_ae,
    parse_line,
)


def test_five_fields() -> None:
    a = parse_line("SCANNER,FIONA,10.0.0.5,/data/site/archive/scp_1.2.3,MR.1.2.3.4")
    assert a == Arrival("SCANNER", "FIONA", "10.0.0.5", "/data/site/archive/scp_1.2.3/MR.1.2.3.4")


def test_ae_titles_lose_quotes_spaces_backslashes_and_empty_ip_becomes_zero() -> None:
    a = parse_line('"MY SCANNER",\'FI\\ONA \',,/d,f\n')
    assert (a.caller, a.called, a.ip, a.path) == ("MYSCANNER", "FIONA", "0.0.0.0", "/d/f")


def test_single_path_is_unknown_unknown_unknown() -> None:
    a = parse_line(b"/data/site/archive/x.dcm\r\n")
    assert a == Arrival("unknown", "unknown", "unknown", "/data/site/archive/x.dcm")


@pytest.mark.parametrize(
    "line",
    [b"", b"   ", b"a,b,c", b"a,b,c,d,e,f", b"\xff\xfe,x", b"a,b,c,relative/dir,f",
     b"relative.dcm", b"a,b,c,/d,", b"x" * (MAX_LINE_BYTES + 1)],
)
def test_bad_shapes_raise_naming_the_problem(line: bytes) -> None:
    with pytest.raises(NotificationError):
        parse_line(line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_any_bytes_give_an_arrival_or_a_notification_error(raw: bytes) -> None:
    try:
        a = parse_line(raw)
    except NotificationError:
        return
    assert a.path.startswith("/")
    assert "\x00" not in a.path


def test_as_line_round_trips() -> None:
    a = Arrival("A", "B", "1.2.3.4", "/x/y/z.dcm")
    assert parse_line(a.as_line()) == a


def test_the_printed_lines_shape_says_take_the_caller_from_the_file() -> None:
    a = parse_line('<caller-from-file>,FIONA,"10.0.0.5",/data/site/archive/scp__1.2,MR.1.2.3\n')
    assert a == Arrival(CALLER_IN_FILE, "FIONA", "10.0.0.5", "/data/site/archive/scp__1.2/MR.1.2.3")
    assert a.caller_in_file and not a.unannounced
    assert parse_line(a.as_line()) == a  # through the spool and back


def test_with_caller_takes_the_files_ae_cleaned_as_the_pipe_cleans_it() -> None:
    a = parse_line("<caller-from-file>,FIONA,10.0.0.5,/d,f")
    assert a.with_caller("SCANNER7") == Arrival("SCANNER7", "FIONA", "10.0.0.5", "/d/f")
    assert a.with_caller("X'$(touch P)'").caller == "X$(touchP)"
    assert a.with_caller("X'$(touch P)'").caller == parse_line("X'$(touch P)',c,i,/d,f").caller
    assert a.with_caller(None).caller == UNKNOWN
    assert a.with_caller(" ' ").caller == UNKNOWN


def test_with_caller_leaves_an_arrival_that_names_its_caller_alone() -> None:
    for line in ('"SCANNER","FIONA","10.0.0.5",/d,f', "/d/f"):
        a = parse_line(line)
        assert a.with_caller("OTHER") is a


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_characters=",\r\n\x00", blacklist_categories=("Cs",)),
               max_size=16))
def test_no_ae_title_reads_as_the_take_it_from_the_file_value(ae: str) -> None:
    """An association carries at most 16 characters of AE title: none, bare or in the
    double quotes storescp adds, is taken for the 18-character value."""
    for caller in (ae, f'"{ae}"'):
        a = parse_line(f"{caller},FIONA,10.0.0.5,/d,f")
        assert not a.caller_in_file and a.caller == clean_ae(caller)
    assert len(CALLER_IN_FILE) > 16
