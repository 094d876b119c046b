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


# The layers of the package, lowest first: a module may import its own layer and those below, never one above.
LAYERS = [
    ["wildfire_kd", "wildfire_kd.errors", "wildfire_kd.layout", "wildfire_kd.guard"],  # pure helpers: stdlib only
    ["wildfire_kd.edge", "wildfire_kd.textfiles", "wildfire_kd.reports", "wildfire_kd.ultralytics_env"],
    ["wildfire_kd.config"],
    ["wildfire_kd.data", "wildfire_kd.pool", "wildfire_kd.weights", "wildfire_kd.synth", "wildfire_kd.synth_sequences"],
    ["wildfire_kd.tracking", "wildfire_kd.container"],
    ["wildfire_kd.seam", "wildfire_kd.onnx_files", "wildfire_kd.formats"],  # ultralytics' internals and exporters
    ["wildfire_kd.distill", "wildfire_kd.validate", "wildfire_kd.export", "wildfire_kd.parity"],  # the stages
    ["wildfire_kd.finetune"],  # a stage that runs train's
    ["wildfire_kd.model_card", "wildfire_kd.pipeline", "wildfire_kd.demo"],
    ["wildfire_kd.cli"],
]


def _layer(module: str) -> int:
    """The layer of a module: that of the longest listed name it is, or lies under."""
    best = max((name for layer in LAYERS for name in layer if module == name or module.startswith(name + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_no_module_imports_a_higher_layer_and_there_are_no_cycles():
    from import_graph import internal_dependencies, modules

    known = modules()
    listed = {name for layer in LAYERS for name in layer}
    unlisted = [
        m for m in known if m not in listed and not any(m.startswith(n + ".") for n in listed - {"wildfire_kd"})
    ]
    assert unlisted == [], f"give these modules their layer in LAYERS: {unlisted}"
    graph = {name: internal_dependencies(path, known) for name, path in known.items()}
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)]
    assert upward == [], "upward imports: " + "; ".join(sorted(upward))

    # a cycle is a path back to where it started; the package __init__ files re-export their own children
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph[start] - seen:
            seen.add(dep)
            if dep == goal or reaches(dep, goal, seen):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert cycles == [], "import cycles through: " + ", ".join(sorted(cycles))


def test_no_module_imports_another_modules_private_names():
    """A leading underscore means "this module's own": another module that needs it needs a public name."""
    from import_graph import PACKAGE

    borrowed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("wildfire_kd")):
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                borrowed += [f"{path.relative_to(PACKAGE)}: {node.module or '.'}.{name}" for name in names]
    assert borrowed == [], "make these public or keep them home: " + "; ".join(borrowed)
