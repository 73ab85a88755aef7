"""Small file-system effects: atomic JSON writes, links, markers, cached folder creation."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import logging
import os
from typing import Any

from dcmsortd.model import jsontext

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
_counter = itertools.count()


def dumps(data: Any) -> bytes:
    """The one JSON rendering of every file we write: indent 2, keys sorted, UTF-8 (see
    :mod:`dcmsortd.model.jsontext`; parts already rendered, ``Raw``, are spliced in)."""
    return (jsontext.render(data) + "\n").encode()


def atomic_write(path: str, payload: bytes, temp_dir: str) -> None:
    """Write ``payload`` to ``path`` so readers see the old or the new file, never a part.

    The temporary file is created in ``temp_dir`` (same file system as ``path``) with mode
    0o666 minus the umask, fsync'ed, then renamed over ``path``.
    """
    tmp = _temp_path(temp_dir)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _temp_path(temp_dir: str) -> str:
    """A fresh temporary name in ``temp_dir``; ``clean_temp`` knows it by its pid."""
    return os.path.join(temp_dir, f"{os.getpid()}-{next(_counter)}{TEMP_SUFFIX}")


def write_json(path: str, data: Any, temp_dir: str) -> None:
    atomic_write(path, dumps(data), temp_dir)


def read_json(path: str) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable (logged)."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s: cannot read JSON, starting afresh: %s", path, exc)
        return None


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def clean_temp(temp_dir: str) -> int:
    """Remove temporary files left by processes that are gone. Returns how many."""
    removed = 0
    try:
        names = os.listdir(temp_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.endswith(TEMP_SUFFIX):
            continue
        pid_text = name.split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and alive(int(pid_text)):
            continue
        _unlink_quietly(os.path.join(temp_dir, name))
        removed += 1
    return removed


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a child of ours not waited for) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Folders:
    """Creates folders once; remembers which exist so the hot path makes no syscalls."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def ensure(self, path: str) -> None:
        if path in self._known:
            return
        os.makedirs(path, exist_ok=True)
        self._known.add(path)

    def forget(self) -> None:
        self._known.clear()


def link(target: str, path: str, temp_dir: str) -> bool:
    """Make ``path`` a symlink to ``target``. True when created now.

    An existing link is kept (the first received copy wins) unless it dangles, then it is
    replaced atomically: a temporary link made in ``temp_dir`` (same file system) is
    renamed over it, so a crash leaves nothing next to ``path`` (a series folder holds
    only its images) and ``clean_temp`` removes the temporary link at the next start.
    Anything else at ``path`` is left alone.
    """
    try:
        os.symlink(target, path)
        return True
    except FileExistsError:
        pass
    try:
        current = os.readlink(path)
    except OSError:
        return False  # not a link: leave it
    if current == target or os.path.exists(path):
        return False
    tmp = _temp_path(temp_dir)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    log.info("%s: replaced a dangling link to %s", path, current)
    return False


def touch(path: str) -> None:
    """Create ``path`` or update its modification time."""
    try:
        os.utime(path)
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        os.close(fd)


def count_entries(path: str) -> int:
    try:
        with os.scandir(path) as it:
            return sum(1 for _ in it)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return 0
        raise


_libc_realpath: Any = None  # the C library's realpath(3), looked up on first use


def _c_realpath() -> Any:
    global _libc_realpath
    if _libc_realpath is None:
        _libc_realpath = False
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn, free = libc.realpath, libc.free
        except (OSError, AttributeError):
            return False
        fn.argtypes, fn.restype = [ctypes.c_char_p, ctypes.c_char_p], ctypes.c_void_p
        free.argtypes, free.restype = [ctypes.c_void_p], None
        _libc_realpath = (fn, free)
    return _libc_realpath


def realpath(path: str) -> str:
    """``os.path.realpath(path)``, in one C call when the path exists.

    The Python version lstat()s and joins each component in Python: three times the time,
    and it runs for every received file. Whenever the C call fails (a missing component, a
    loop, no C library), or the path holds a NUL (which a C string would cut short), the
    answer is ``os.path.realpath``'s, so the result is the same in every case.
    """
    found = _c_realpath()
    if found and "\x00" not in path:
        fn, free = found
        try:
            encoded = os.fsencode(path)
        except UnicodeError:
            return os.path.realpath(path)
        pointer = fn(encoded, None)
        if pointer:
            try:
                return os.fsdecode(ctypes.string_at(pointer))
            finally:
                free(pointer)
    return os.path.realpath(path)
