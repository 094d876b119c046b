"""`wildfire-kd image run` against a real engine without the NVIDIA runtime (this machine): exit 2, nothing left.

Needs a Docker engine with the local base (scripts/docker-engine.sh); skips without one. No image is built.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import run_cli  # noqa: E402

pytestmark = [pytest.mark.container]
BASE = "local/base:bookworm"


def _containers() -> set[str]:
    return set(subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split())


def test_image_run_without_a_gpu_runtime_or_image_exits_2_and_leaves_no_container(tmp_path):
    try:
        if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
            pytest.skip(f"no Docker engine with {BASE} here; run scripts/docker-engine.sh first")
    except FileNotFoundError:
        pytest.skip("no docker client here")
    info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    if "nvidia" in info.stdout:
        pytest.skip("this engine has the NVIDIA runtime: the GPU request would succeed")
    before = _containers()
    r = run_cli("image", "run", "--image", BASE, "--out", str(tmp_path / "out"), "--", "true")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "NVIDIA Container Toolkit" in r.stderr and "--no-gpus" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "image", "run", "--image", "wildfire-kd:no-such-tag", "--no-gpus", "--out", str(tmp_path / "out"), "--", "true"
    )
    assert r.returncode == 2 and "wildfire-kd image build" in r.stderr
    assert _containers() == before, "no container is left behind in state Created"
