"""The one JSON rendering of every file dcmsortd writes, and splicing in parts rendered before.

Files are rendered as ``json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`` plus a
newline. With an indent, the standard library encodes in Python, not in C: a diffusion
series' record, one entry per image, costs ~50 ms to render at 5 000 images, and it is
written again every ``flush_interval`` while images come in. So a part that does not change
between writes (each image's diffusion entry) can be rendered once, wrapped in
:class:`Raw`, and :func:`render` splices it in: the text is byte for byte what rendering the
plain value would give (tested).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

INDENT = 2


def plain(data: Any) -> str:
    """``data`` (no :class:`Raw` inside) as JSON text, without the final newline."""
    return json.dumps(data, indent=INDENT, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Raw:
    """A value already rendered by :func:`plain` (at depth 0), to be spliced in as is."""

    text: str

    @classmethod
    def list_of(cls, item_texts: list[str]) -> Raw:
        """A list of items each rendered by :func:`nested` (one level down)."""
        if not item_texts:
            return cls("[]")
        return cls("[\n" + ",\n".join(item_texts) + "\n]")


def nested(data: Any) -> str:
    """``data`` rendered as an item of a list at depth 0 (for :meth:`Raw.list_of`)."""
    pad = " " * INDENT
    return pad + plain(data).replace("\n", "\n" + pad)


def render(data: Any) -> str:
    """``data`` as JSON text with its :class:`Raw` parts spliced in; no final newline."""
    token = f"\x00{uuid.uuid4().hex}-"
    raws: list[Raw] = []
    text = plain(_lift(data, token, raws))
    for number, raw in enumerate(raws):
        placeholder = json.dumps(f"{token}{number}\x00", ensure_ascii=False)
        at = text.find(placeholder)
        if at < 0 or text.find(placeholder, at + 1) >= 0:  # never: the token is random
            return plain(_lower(data))
        line = text[text.rfind("\n", 0, at) + 1 : at]
        pad = line[: len(line) - len(line.lstrip(" "))]
        text = text[:at] + raw.text.replace("\n", "\n" + pad) + text[at + len(placeholder) :]
    return text


def _lift(data: Any, token: str, raws: list[Raw]) -> Any:
    """``data`` with each Raw replaced by a placeholder string (collected in ``raws``)."""
    if isinstance(data, Raw):
        raws.append(data)
        return f"{token}{len(raws) - 1}\x00"
    if isinstance(data, dict):
        return {k: _lift(v, token, raws) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_lift(v, token, raws) for v in data]
    return data


def _lower(data: Any) -> Any:
    """``data`` with each Raw parsed back into the value it renders."""
    if isinstance(data, Raw):
        return json.loads(data.text)
    if isinstance(data, dict):
        return {k: _lower(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_lower(v) for v in data]
    return data
