"""The package's import graph, read from the source (AST), not by importing it: every import statement, function-local
ones included, resolved to the modules of wildfire_kd it names."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SOURCE_ROOT = REPO / "build"
PACKAGE = SOURCE_ROOT / "wildfire_kd"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every dotted name an import statement in ``path`` names (relative imports made absolute); for
    ``from a import b`` both ``a`` and ``a.b`` (b may be a module or a name in a)."""
    name = module_name(path)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            if node.module:
                found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def internal_dependencies(path: Path, known: dict[str, Path]) -> set[str]:
    """The wildfire_kd modules ``path`` imports (each name resolved to the longest module it starts with)."""
    own = module_name(path)
    deps = set()
    for name in imported_names(path):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            candidate = ".".join(parts[:cut])
            if candidate in known:
                if candidate != own:
                    deps.add(candidate)
                break
    return deps


def external_roots(path: Path) -> set[str]:
    """The top-level names of the packages outside wildfire_kd that ``path`` imports."""
    return {name.split(".")[0] for name in imported_names(path)} - {"wildfire_kd", ""}
