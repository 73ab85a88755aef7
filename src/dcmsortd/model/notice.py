"""Parse one pipe line (the storescp ``--exec-on-reception`` notification) into an Arrival."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dcmsortd.model.errors import NotificationError

MAX_LINE_BYTES = 4096
_STRIP_FROM_AE = "'\" \\\t"
UNKNOWN = "unknown"  # an AE title or address that is not known


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

    def as_line(self) -> str:
        directory, name = os.path.split(self.path)
        return f"{self.caller},{self.called},{self.ip},{directory},{name}"


def _clean_ae(text: str) -> str:
    return "".join(ch for ch in text if ch not in _STRIP_FROM_AE) or "unknown"


def parse_line(raw: str | bytes) -> Arrival:
    """Turn ``caller,called,ip,dir,file`` or a single path into an Arrival.

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
    return Arrival(_clean_ae(caller), _clean_ae(called), ip, path)
