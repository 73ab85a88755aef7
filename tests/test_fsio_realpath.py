"""fsio.realpath (one C call) answers exactly what os.path.realpath answers, for any path.

The examiner resolves every announced path with it before checking that the file lies
inside the input roots, so a difference would let a file through, or keep one out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmsortd.sorting import fsio

NAMES = ["a", "b", "file", "up", "loop", "self", "missing", "..", ".", "", "dirlink",
         "filelink", "abs", "dangling", "caf\udce9"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders, files and every kind of symlink: relative, absolute, to a folder, to a
    file, up the tree, dangling, a loop, one to itself, a name that is not UTF-8."""
    root = tmp_path_factory.mktemp("rp")
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "file").write_bytes(b"x")
    (root / "a" / "file").write_bytes(b"y")
    os.symlink("b", root / "a" / "dirlink")
    os.symlink("b/file", root / "a" / "filelink")
    os.symlink("..", root / "a" / "b" / "up")
    os.symlink(str(root / "a" / "b"), root / "a" / "abs")
    os.symlink("nowhere/at/all", root / "a" / "dangling")
    os.symlink("loop2", root / "a" / "loop")
    os.symlink("loop", root / "a" / "loop2")
    os.symlink("self", root / "a" / "b" / "self")
    os.mkdir(os.path.join(os.fsencode(root / "a"), b"caf\xe9"))
    return root


def outcome(resolve: Callable[[str], str], path: str) -> tuple[str, str]:
    """The answer, or the type of the exception raised (both must agree)."""
    try:
        return "resolved", resolve(path)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return "raised", type(exc).__name__


def same(path: str) -> bool:
    return outcome(fsio.realpath, path) == outcome(os.path.realpath, path)


def test_the_c_library_is_used_on_this_machine() -> None:
    assert fsio._c_realpath(), "no realpath(3) found: the fast path is never taken here"


@pytest.mark.parametrize("rel", [
    "a/b/file", "a/filelink", "a/dirlink/file", "a/b/up/file", "a/abs/file", "a/abs/up/b",
    "a/dangling", "a/dangling/x", "a/loop", "a/loop/x", "a/b/self", "a/b/missing",
    "a/missing/file", "a/b/file/", "a/b/file/x", "a/./b//file", "a/b/../file", "a/../..",
    "a/caf\udce9", "a/caf\udce9/x", "a/b/\x00file",
])
def test_named_cases(tree: Path, rel: str) -> None:
    path = f"{tree}/{rel}"
    assert same(path)


def test_relative_and_overlong_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "a" / "b")
    for rel in ("file", "up/dirlink/file", "../filelink", ".", ""):
        assert same(rel)
    overlong = str(tree / "a") + "/b/.." * 2000 + "/file"  # longer than PATH_MAX
    assert same(overlong)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8), st.booleans())
def test_any_walk_through_the_tree(tree: Path, parts: list[str], absolute: bool) -> None:
    rel = "/".join(parts)
    path = f"{tree}/a/{rel}" if absolute else f"a/{rel}"
    old = os.getcwd()
    os.chdir(tree)
    try:
        assert same(path)
    finally:
        os.chdir(old)
