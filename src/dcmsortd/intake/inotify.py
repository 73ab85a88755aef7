"""A wake-up when a folder's files change: Linux inotify through ctypes, nothing more.

The journal follower only needs to know *that* something was appended or created in its
folder, not what: ``FolderWatch`` gives a descriptor that becomes readable on a change
(poll it beside the pipe) and ``clear()`` empties it. Where inotify is missing (not Linux,
no more watches allowed) ``FolderWatch.open`` returns None and the caller polls on a timer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCHED = IN_MODIFY | IN_CREATE | IN_MOVED_TO
_EVENT_BUFFER = 65536


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class FolderWatch:
    """An inotify descriptor watching one folder for modified, created or moved-in files."""

    def __init__(self, fd: int, folder: str) -> None:
        self._fd = fd
        self.folder = folder

    @classmethod
    def open(cls, folder: str) -> FolderWatch | None:
        """Watch ``folder`` (which must exist); None when inotify cannot be used here."""
        libc = _libc()
        if libc is None:
            log.info("%s: no inotify here; looking for new lines on a timer", folder)
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            _say_why(folder, ctypes.get_errno())
            return None
        if libc.inotify_add_watch(fd, os.fsencode(folder), WATCHED) < 0:
            _say_why(folder, ctypes.get_errno())
            os.close(fd)
            return None
        return cls(fd, folder)

    def fileno(self) -> int:
        return self._fd

    def clear(self) -> bool:
        """Read and drop the pending events; True when there were any."""
        seen = False
        while True:
            try:
                data = os.read(self._fd, _EVENT_BUFFER)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            seen = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _say_why(folder: str, errno_value: int) -> None:
    log.warning("%s: cannot watch with inotify (%s); looking for new lines on a timer",
                folder, os.strerror(errno_value))
