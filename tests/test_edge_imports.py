"""The camera side is one folder a camera team can take whole: nothing under wildfire_kd/edge imports torch,
ultralytics or anything of wildfire_kd outside edge/ but the pure helpers, and the edge image copies exactly that.
Read from the source (fast); the slow subprocess guard in test_camera.py runs it with torch blocked."""

from __future__ import annotations

import re
import sys

from conftest import REPO
from import_graph import PACKAGE, external_roots, internal_dependencies, module_name, modules

EDGE = PACKAGE / "edge"
# wildfire_kd modules outside edge/ that the edge may import: constants and exception classes, stdlib only
PURE_HELPERS = {
    "wildfire_kd": "__init__.py",
    "wildfire_kd.errors": "errors.py",
    "wildfire_kd.guard": "guard.py",
    "wildfire_kd.layout": "layout.py",
}
# what every edge image installs (edge/requirements.txt): the only third-party imports allowed under edge/, beside the
# inference runtimes, which edge/runtimes.py imports by name when a model needs one (requirements-<runtime>.txt)
RUNTIME_PACKAGES = {"numpy", "cv2", "yaml", "requests", "urllib3", "prometheus_client"}


def test_nothing_under_edge_imports_torch_ultralytics_or_the_pipeline():
    known = modules()
    problems = []
    for path in sorted(EDGE.rglob("*.py")):
        for dep in sorted(internal_dependencies(path, known)):
            if not dep.startswith("wildfire_kd.edge") and dep not in PURE_HELPERS:
                problems.append(f"{module_name(path)} imports {dep}")
        third_party = external_roots(path) - set(sys.stdlib_module_names)
        problems += [f"{module_name(path)} imports {name}" for name in sorted(third_party - RUNTIME_PACKAGES)]
    assert problems == [], "the camera runtime must stay torch-free and self-contained: " + "; ".join(problems)


def test_the_pure_helpers_import_only_the_standard_library():
    known = modules()
    for name, file in PURE_HELPERS.items():
        path = PACKAGE / file
        assert internal_dependencies(path, known) <= set(PURE_HELPERS), name
        assert external_roots(path) <= set(sys.stdlib_module_names), name


def _pinned(file: str) -> list[str]:
    return [line.split("==")[0] for line in (EDGE / file).read_text().splitlines() if "==" in line]


def test_the_edge_requirements_are_what_the_edge_imports():
    # cv2 is opencv-python-headless; the service's yaml is PyYAML; requests brings urllib3, idna, certifi and
    # charset-normalizer (installed with --no-deps: every one pinned)
    assert _pinned("requirements.txt") == [
        "numpy", "opencv-python-headless", "PyYAML", "requests", "urllib3", "idna", "certifi", "charset-normalizer",
        "prometheus-client",
    ]  # fmt: skip
    from wildfire_kd.edge.runtimes import RUNTIMES

    # one requirements file per runtime, pinning exactly that runtime's package and nothing else
    files = sorted(path.name for path in EDGE.glob("requirements-*.txt"))
    assert files == sorted(f"requirements-{runtime}.txt" for runtime in RUNTIMES)
    for runtime, package in RUNTIMES.items():
        assert _pinned(f"requirements-{runtime}.txt") == [package], runtime


def test_no_module_under_edge_imports_a_runtime_outside_runtimes_py():
    # a module-level import of onnxruntime (say) elsewhere would make every camera image need it
    runtimes = {"onnxruntime", "openvino", "ncnn"}
    offenders = [module_name(path) for path in sorted(EDGE.rglob("*.py")) if external_roots(path) & runtimes]
    assert offenders == []


def test_the_edge_image_copies_the_edge_folder_and_the_helpers_it_imports():
    dockerfile = (REPO / "Dockerfile").read_text()
    edge_stage = dockerfile[dockerfile.index("AS edge") :]
    copies = " ".join(re.findall(r"^COPY .*?(?<!\\)$", edge_stage.replace("\\\n", " "), flags=re.M | re.S))
    sources = set(re.findall(r"build/wildfire_kd/\S*", copies))
    assert sources == {
        "build/wildfire_kd/edge",
        "build/wildfire_kd/edge/requirements.txt",
        "build/wildfire_kd/edge/requirements-${EDGE_RUNTIME}.txt",
    } | {f"build/wildfire_kd/{file}" for file in PURE_HELPERS.values()}
    assert 'ENTRYPOINT ["python3", "-m", "wildfire_kd.edge"]' in edge_stage
