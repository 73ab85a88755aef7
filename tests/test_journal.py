"""The journal's pure parts: line framing, the saved positions, where to resume."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcmsortd.intake.journal import JournalState, Position, frame_lines, resume_offset


def test_complete_lines_are_taken_with_the_offset_past_each() -> None:
    lines, used = frame_lines(b"a,b\nccc\n", 100)
    assert lines == [(b"a,b", 104), (b"ccc", 108)]
    assert used == 8


def test_an_unterminated_tail_is_left_for_later() -> None:
    lines, used = frame_lines(b"one\ntw", 0)
    assert lines == [(b"one", 4)]
    assert used == 4
    assert frame_lines(b"no newline yet", 7) == ([], 0)


def test_empty_lines_are_dropped_but_their_bytes_count() -> None:
    lines, used = frame_lines(b"\n\nx\n\n", 0)
    assert lines == [(b"x", 4)]
    assert used == 5


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=20),
       st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=40))
def test_reading_in_any_pieces_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    taken: list[tuple[bytes, int]] = []
    read_to = 0
    available = 0
    for cut in [*cuts, len(data)]:  # the file grows by ``cut`` bytes, the reader looks
        available = min(len(data), available + cut)
        got, used = frame_lines(data[read_to:available], read_to)
        taken += got
        read_to += used
    assert [line for line, _ in taken] == [line for line in lines if line]
    assert read_to == len(data)
    assert all(data[end - 1:end] == b"\n" for _, end in taken)


def test_state_round_trips() -> None:
    for state in (JournalState(), JournalState(Position(5, 10)),
                  JournalState(Position(5, 10), Position(7, 0))):
        assert JournalState.from_bytes(state.to_bytes()) == state


@pytest.mark.parametrize("data", [b"", b"[]", b"{\"active\": {\"ino\": -1, \"offset\": 0}}",
                                  b"{\"active\": {\"ino\": true, \"offset\": 0}}",
                                  b"{\"old\": 3}", b"\xff"])
def test_a_damaged_state_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="journal position"):
        JournalState.from_bytes(data)


def test_the_live_file_resumes_where_it_was() -> None:
    saved = JournalState(Position(11, 300))
    assert resume_offset(saved, "active", 11, 500) == (300, None)


def test_another_file_is_read_from_its_start_and_said() -> None:
    saved = JournalState(Position(11, 300))
    offset, reason = resume_offset(saved, "active", 12, 500)
    assert offset == 0 and reason is not None and "not the file last followed" in reason
    assert resume_offset(JournalState(), "active", 12, 500) == (0, None)  # first start
    assert resume_offset(JournalState(None, Position(3, 9)), "active", 12, 50) == (0, None)


def test_a_truncated_file_is_read_from_its_start_and_said() -> None:
    offset, reason = resume_offset(JournalState(Position(11, 300)), "active", 11, 100)
    assert offset == 0 and reason is not None and "truncated" in reason


def test_the_rotated_file_may_carry_the_live_files_position() -> None:
    """Stopped between the rename and saving the state: the old file has the live position."""
    saved = JournalState(Position(11, 300))
    assert resume_offset(saved, "old", 11, 300) == (300, None)
    assert resume_offset(JournalState(Position(12, 5), Position(11, 80)), "old", 11, 90) == (
        80, None)
