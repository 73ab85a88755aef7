"""Parts rendered beforehand and spliced in give byte for byte the plain rendering."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.model.jsontext import Raw, nested, plain, render
from dcmsortd.sorting import fsio
from dcmsortd.sorting.series import SeriesState

# header text can hold anything: NULs, quotes, backslashes, newlines, non-ASCII, surrogates
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\x00\"\\\n\u2028é"), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | TEXT | st.floats(allow_nan=False)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@st.composite
def with_raw_parts(draw: st.DrawFn) -> tuple[Any, Any]:
    """A value, and the same value with some of its parts pre-rendered as Raw."""
    value = draw(VALUES)

    def wrap(v: Any) -> Any:
        if draw(st.integers(0, 3)) == 0:
            if isinstance(v, list) and v and draw(st.booleans()):
                return Raw.list_of([nested(item) for item in v])
            return Raw(plain(v))
        if isinstance(v, dict):
            return {k: wrap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [wrap(x) for x in v]
        return v

    return value, wrap(value)


@settings(max_examples=400, deadline=None)
@given(with_raw_parts())
def test_spliced_text_is_the_plain_text(pair: tuple[Any, Any]) -> None:
    value, wrapped = pair
    assert render(wrapped) == plain(value)


def test_a_diffusion_record_renders_as_before_and_each_entry_only_once() -> None:
    def entry(i: int) -> dict[str, Any]:
        return {"SOPInstanceUID": f"1.2.3.{i}", "InstanceNumber": str(100 - i),
                "B_value": "1000", "DiffusionGradientDirection": ["0.1", "-0.2", "0.9"]}

    state = SeriesState(base={"SeriesDescription": "ep2d \"diff\"\n"}, classify=["dwi"],
                        diffusion={f"1.2.3.{i}": entry(i) for i in range(40)},
                        accounted={f"1.2.3.{i}" for i in range(40)})
    expected = plain(state.to_state())
    assert fsio.dumps(state.to_state(rendered=True)).decode() == expected + "\n"
    assert json.loads(expected)["record"]["siemensDiffusionInformation"][0]["InstanceNumber"] \
        == "61"  # sorted by InstanceNumber
    cached = {sop: text for sop, (_, text) in state._entry_texts.items()}
    state.diffusion["1.2.3.99"] = entry(99)
    state.accounted.add("1.2.3.99")
    assert fsio.dumps(state.record(7, rendered=True)) == fsio.dumps(state.record(7))
    assert all(state._entry_texts[sop][1] is text for sop, text in cached.items())
    # an entry replaced (a merge) is rendered again
    state.diffusion["1.2.3.5"] = dict(entry(5), B_value="0")
    assert fsio.dumps(state.record(rendered=True)) == fsio.dumps(state.record())
