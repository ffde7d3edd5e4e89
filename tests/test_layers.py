"""The house rule as a test: no module imports from a higher layer, and inference never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dsita"
# Lowest first. A module may import its own package and the layers below it, never one above.
LAYERS = (
    ("errors", "fileio", "progress"),
    ("system",),
    ("audio",),
    ("text",),
    ("model",),
    ("data",),
    ("lm",),
    ("decoding",),
    ("inference",),
    ("training",),
    ("convert",),
    ("evaluation",),
    ("export",),
    ("settings",),
    ("pipeline",),
    ("serve",),
    ("commands",),
    ("cli", "__init__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TORCH_FREE = ("system", "audio", "text", "lm", "decoding", "inference", "settings", "progress")


def unit(module: Path) -> str:
    """The layer a source file belongs to: its top-level package or module name under dsita/."""
    relative = module.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(module: Path) -> list[tuple[int, str, str]]:
    """(line, dsita unit, full name) of every dsita import in a file, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dsita" and len(parts) > 1:
                found.append((node.lineno, parts[1], name))
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit(path) for path in PACKAGE.rglob("*.py")}
    assert units - set(RANK) == set(), "give each new package a place in LAYERS"


def test_no_module_imports_from_a_higher_layer() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = unit(path)
        for line, target, name in imported_units(path):
            if target != own and RANK[target] >= RANK[own]:
                violations.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert violations == []


def test_the_torch_free_layers_never_import_torch() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if unit(path) not in TORCH_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            offenders += [where for name in names if name.split(".")[0] == "torch"]
    assert offenders == []
