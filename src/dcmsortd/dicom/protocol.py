"""A tolerant reader of the ASCCONV block of a Siemens protocol (``MrPhoenixProtocol``).

The block sits between ``### ASCCONV BEGIN ... ###`` and ``### ASCCONV END ###`` and holds
one ``name = value`` assignment per line. Real protocols vary:

* VB17 aligns the ``=`` with spaces (``lSequenceID                    = 18``), VE11 and
  later separate with tabs (``lSequenceID\\t = \\t18``); any whitespace is accepted;
* VE11 adds ``...__attribute__.size = 5`` lines: they are ordinary names here;
* a ``#`` starts a comment (whole lines, and trailing ``# 'V'`` notes), except inside a
  quoted string;
* strings are quoted. In a CSA header the block lives inside an XProtocol string literal,
  so its quotes arrive doubled: ``""N4_VE11C_LATEST_20160120""``. A value in doubled
  quotes, or in plain quotes, is returned without them (``N4_VE11C_LATEST_20160120``); an
  unterminated quote is dropped and the rest of the line kept. Other values are returned
  as written (``0x1``, ``2.89362``, ``48``), without converting them.

Lines that are not assignments are skipped; nothing here raises on any input (``nibabel``'s
``ascconv`` module evaluates the names as Python and raises on the ``__attribute__`` lines).
Every block in the text is read; a name assigned twice keeps its last value.
"""

from __future__ import annotations

import re

_BEGIN = "### ASCCONV BEGIN"
_END = "### ASCCONV END"
# a name (no whitespace, quote, '#' or '='), '=', the rest of the line
_ASSIGNMENT = re.compile(r"\s*([^\s\"#=]+)\s*=(.*)")


def parse(text: str) -> dict[str, str]:
    """Return {name: value} for every assignment in the ASCCONV blocks of ``text``.

    Text without an ``ASCCONV BEGIN`` marker gives an empty dict; a block without an end
    marker runs to the end of the text.
    """
    out: dict[str, str] = {}
    for block in blocks(text):
        for line in block.splitlines():
            item = parse_line(line)
            if item is not None:
                out[item[0]] = item[1]
    return out


def blocks(text: str) -> list[str]:
    """The bodies of the ASCCONV blocks of ``text`` (marker lines excluded)."""
    found = []
    pos = text.find(_BEGIN)
    while pos != -1:
        body_start = text.find("\n", pos)
        if body_start == -1:
            break
        end = text.find(_END, body_start)
        found.append(text[body_start + 1 : len(text) if end == -1 else end])
        if end == -1:
            break
        pos = text.find(_BEGIN, end)
    return found


def parse_line(line: str) -> tuple[str, str] | None:
    """Parse one ``name = value`` line; None for comments, blank or malformed lines."""
    match = _ASSIGNMENT.match(line)
    if match is None:
        return None
    return match[1], value_text(match[2].strip())


def value_text(raw: str) -> str:
    """The value of an assignment: quotes removed from strings, a trailing comment cut."""
    if raw.startswith('""'):
        end = raw.find('""', 2)
        if end != -1:
            return raw[2:end]
        if raw == '""' or raw[2:].lstrip().startswith("#"):
            return ""  # a plain (undoubled) empty string
        return raw.lstrip('"').rstrip('"')
    if raw.startswith('"'):
        end = raw.find('"', 1)
        return raw[1:end] if end != -1 else raw[1:]
    return raw.partition("#")[0].strip()
