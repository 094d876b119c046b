"""The package stays readable: no function in build/ longer than 60 lines (issue 15)."""

from __future__ import annotations

import ast

from conftest import REPO

MAX_FUNCTION_LINES = 60


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = []
    for path in sorted((REPO / "build" / "wildfire_kd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these: " + "; ".join(long)
