"""The layout docs/architecture.md describes: imports flow one way, from the commands down to the errors."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Lowest first, as docs/architecture.md lists them: a module imports from its own layer or the layers above it here.
LAYERS = [
    ["house_price.errors"],
    ["house_price.files", "house_price.hardware"],
    ["house_price.datamodules"],
    ["house_price.models"],
    ["house_price.reports"],
    ["house_price.analysis"],
    ["house_price.prediction", "house_price.onnx", "house_price.ratio_study", "house_price.training"],
    ["house_price.serving"],
    ["house_price.commands"],
    ["house_price.cli", "house_price.__main__", "house_price"],
]
# The checkout's folders and the installed names they become (pyproject.toml's package-dir).
FOLDERS = {"house_price": "house_price", "datamodules": "house_price.datamodules", "models": "house_price.models",
           "analysis": "house_price.analysis"}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = path
    return found


def imported(path: Path) -> set[str]:
    """Every house_price module the file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("house_price"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("house_price"))
    return names


def layer(module: str) -> int:
    matches = [(len(prefix), rank) for rank, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    if not matches:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md")
    return max(matches)[1]


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_lower_layers():
    known = modules()
    assert "house_price.models.pricing" in known and "house_price.commands.train" in known
    upward = []
    for module, path in known.items():
        for name in imported(path) & set(known):
            if layer(name) > layer(module):
                upward.append(f"{module} imports {name}")
    assert not upward, upward


def test_imports_have_no_cycles():
    known = modules()
    graph = {module: sorted(imported(path) & set(known) - {module}) for module, path in known.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(module) :], module]))
        if module in done:
            return
        for name in graph[module]:
            visit(name, [*trail, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_the_architecture_page_names_every_folder_and_layer():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for prefixes in LAYERS[:-1]:
        for prefix in prefixes:
            assert f"`{prefix}`" in page or f"`{prefix.removeprefix('house_price.')}" in page, prefix
    paths = {
        path.relative_to(ROOT).as_posix() for folder in FOLDERS for path in (ROOT / folder).rglob("*") if path.is_file()
    }
    for name in set(re.findall(r"`([\w/]+\.(?:py|html))`", page)):  # a path, or a file of the folder named beside it
        assert (ROOT / name).is_file() or any(
            path.endswith("/" + name) for path in paths | {"house_price/serving/page.html"}
        ), f"docs/architecture.md names {name}"
