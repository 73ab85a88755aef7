"""Parse one pipe line (the storescp ``--exec-on-reception`` notification) into an Arrival.

A line is ``caller,called,ip,dir,file`` or one absolute path. The caller field may instead
be ``CALLER_IN_FILE``, which no AE title can be (18 characters; an association carries at
most 16): the line storescp-command prints writes it, so that storescp puts no text the
sender chose into its shell, and the sorter takes the calling AE title from the file's
meta header, (0002,0016), where storescp records it (``Arrival.with_caller``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from dcmsortd.model.errors import NotificationError

MAX_LINE_BYTES = 4096
_STRIP_FROM_AE = "'\" \\\t"
UNKNOWN = "unknown"  # an AE title or address that is not known
CALLER_IN_FILE = "<caller-from-file>"  # the caller field of a line: "read it from the file"


@dataclass(frozen=True)
class Arrival:
    """One received file, as announced on the pipe."""

    caller: str
    called: str
    ip: str
    path: str

    @property
    def unannounced(self) -> bool:
        """No sender known: a file found on disk (import, catch-up) or a bare-path line."""
        return self.caller == self.called == self.ip == UNKNOWN

    @property
    def caller_in_file(self) -> bool:
        """The line said: take the calling AE title from the file's meta header."""
        return self.caller == CALLER_IN_FILE

    def with_caller(self, source_ae: str | None) -> Arrival:
        """This arrival, with the file's (0002,0016) as its caller when the line asked
        for it (cleaned as the pipe's AE titles are; ``unknown`` when absent)."""
        if not self.caller_in_file:
            return self
        return replace(self, caller=clean_ae(source_ae or ""))

    def as_line(self) -> str:
        directory, name = os.path.split(self.path)
        return f"{self.caller},{self.called},{self.ip},{directory},{name}"


def clean_ae(text: str) -> str:
    """An AE title as the records and markers carry it: without quotes, spaces, backslashes
    and tabs; ``unknown`` when nothing is left."""
    return "".join(ch for ch in text if ch not in _STRIP_FROM_AE) or UNKNOWN


def parse_line(raw: str | bytes) -> Arrival:
    """Turn ``caller,called,ip,dir,file`` or a single path into an Arrival (a caller field
    of ``CALLER_IN_FILE`` is kept as it is: see ``Arrival.with_caller``).

    Raises NotificationError (quoting the line) for any other shape.
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_LINE_BYTES:
            raise NotificationError(f"line of {len(raw)} bytes is longer than {MAX_LINE_BYTES}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotificationError(f"line is not UTF-8 ({exc.reason}): {raw[:200]!r}") from None
    else:
        text = raw
        if len(text.encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            raise NotificationError(f"line longer than {MAX_LINE_BYTES} bytes: {text[:200]!r}")
    line = text.rstrip("\r\n")
    if not line.strip():
        raise NotificationError("empty line")
    if "\x00" in line or "\n" in line or "\r" in line:
        raise NotificationError(f"line holds control characters: {line[:200]!r}")
    fields = line.split(",")
    if len(fields) == 1:
        path = line.strip()
        if not path.startswith("/"):
            raise NotificationError(f"a single-field line must be an absolute path: {line[:200]!r}")
        return Arrival("unknown", "unknown", "unknown", os.path.normpath(path))
    if len(fields) != 5:
        raise NotificationError(
            f"expected 5 comma-separated fields (caller,called,ip,dir,file) or one path, "
            f"got {len(fields)}: {line[:200]!r}"
        )
    caller, called, ip, directory, name = fields
    directory, name = directory.strip(), name.strip()
    if not directory or not name:
        raise NotificationError(f"empty directory or file name: {line[:200]!r}")
    if not directory.startswith("/"):
        raise NotificationError(f"directory is not an absolute path: {line[:200]!r}")
    ip = ip.strip().strip("'\"") or "0.0.0.0"
    path = os.path.normpath(os.path.join(directory, name))
    return Arrival(clean_ae(caller), clean_ae(called), ip, path)
