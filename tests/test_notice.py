from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.model.errors import NotificationError
from dcmsortd.model.notice import MAX_LINE_BYTES, Arrival, parse_line


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
