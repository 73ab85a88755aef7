"""docs/ stays true: docs/architecture.md names every subpackage, its layer order and pure
core are tests/test_architecture.py's, every module and name it points to exists, and every
relative link in README.md and docs/ leads to a file."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from test_architecture import LAYERS, PURE

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dcmsortd"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
_MODULE = r"`((?:[a-z_]+/)+[a-z_]+\.py)`"  # `sorting/store.py`, `tests/test_cli.py`
_NAME = r"`([A-Za-z_][\w.]*)(?:\(\))?`"  # `plan()`, `Store.file()`, `RECORD_TAGS`
PATH = re.compile(_MODULE)
PATH_AND_NAME = re.compile(_MODULE + " " + _NAME)  # `sorting/layout.py` `plan()`
NAME_IN_PATH = re.compile(_NAME + r"\s+(?:in\s+|\()" + _MODULE)  # `RECORD_TAGS` in `...`


def subpackage_bullets() -> dict[str, str]:
    """``{subpackage: its bullet's text}`` from the section "The subpackages"."""
    section = ARCHITECTURE.split("\n## The subpackages\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^- \*\*([a-z_]+)/\*\*:(.*?)(?=^- |\Z)", section, re.M | re.S))


def source_file(mentioned: str) -> Path:
    """A path as the page writes it: ``tests/...`` from the checkout, else in the package."""
    return ROOT / mentioned if mentioned.startswith("tests/") else PACKAGE / mentioned


@cache
def defined_names(path: Path) -> set[str]:
    """Top-level names of a module, and ``Class.method`` for the methods of its classes."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_the_page_describes_every_subpackage_there_is() -> None:
    assert SUBPACKAGES, "no subpackages found: wrong PACKAGE?"
    assert sorted(subpackage_bullets()) == SUBPACKAGES


def test_the_layer_order_is_the_tests() -> None:
    (diagram,) = re.findall(r"```\n(model .*?)\n```", ARCHITECTURE)
    levels = [re.findall(r"[a-z]+", level) for level in diagram.split("<-")]
    assert sorted(name for level in levels for name in level) == sorted(LAYERS)
    below: set[str] = set()
    for level in levels:
        for name in level:
            assert LAYERS[name] <= below, f"{name} may import {LAYERS[name] - below}"
        below |= set(level)


def test_the_pure_core_is_the_tests() -> None:
    paragraph = ARCHITECTURE.split("The pure core", 1)[1].split("\n\n", 1)[0]
    named = {"dcmsortd." + p.removesuffix(".py").replace("/", ".")
             for p in PATH.findall(paragraph)}
    assert named == set(PURE)


def test_every_module_path_it_mentions_exists() -> None:
    mentioned = set(PATH.findall(ARCHITECTURE))
    assert len(mentioned) >= 20
    missing = sorted(p for p in mentioned if not source_file(p).is_file())
    assert missing == []


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_the_modules_a_subpackage_bullet_names_are_in_it(package: str) -> None:
    text = subpackage_bullets()[package]
    for module in re.findall(r"`([a-z_]+\.py)`", text):
        assert (PACKAGE / package / module).is_file(), f"{package}/{module}"


def test_every_name_given_with_its_module_is_in_it() -> None:
    pairs = PATH_AND_NAME.findall(ARCHITECTURE)
    pairs += [(module, name) for name, module in NAME_IN_PATH.findall(ARCHITECTURE)]
    assert len(pairs) >= 30
    wrong = [f"{module} {name}" for module, name in pairs
             if source_file(module).suffix == ".py" and source_file(module).is_file()
             and name not in defined_names(source_file(module))]
    assert wrong == []


def test_the_check_sees_a_wrong_name() -> None:
    """A check that cannot fail is no check."""
    assert "plan" in defined_names(PACKAGE / "sorting" / "layout.py")
    assert "Store.file" in defined_names(PACKAGE / "sorting" / "store.py")
    assert "no_such_function" not in defined_names(PACKAGE / "sorting" / "layout.py")
    assert not source_file("sorting/no_such_module.py").is_file()


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    titles = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("page", ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_lead_to_files_and_headings(page: str) -> None:
    source = ROOT / page
    links = re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", source.read_text(encoding="utf-8"))
    broken = []
    for target, anchor in links:
        if "://" in target:
            continue
        path = source.parent / target if target else source
        if not path.is_file() or (anchor and anchor not in anchors(path)):
            broken.append(f"{target}#{anchor}" if anchor else target)
    assert broken == []


def test_anchors_are_githubs() -> None:
    assert {"differences-from-processsinglefile3py", "what-it-writes-the-layout-the-contract",
            "security-model"} <= anchors(ROOT / "README.md")
