"""scripts/docker-engine.sh repairs a local base whose / uid 1000 cannot enter (what a mode-700 mktemp folder made).

The image runs as uid 1000, so with such a base every RUN after USER fails ("stat /bin/sh: permission denied").
Needs a Docker engine with the local base (scripts/docker-engine.sh, as .ci/run does); skips without one. The
broken copy gets its own tag, so the real base is never touched; the repair re-imports its files (seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.container]
REPO = Path(__file__).resolve().parents[2]
BASE = "local/base:bookworm"
BROKEN = "local/base-broken-root:test"


def _docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, **kwargs)


def _uid_1000_runs_a_shell(image: str) -> bool:
    run = _docker("run", "--rm", "--network", "none", "--user", "1000:1000", image, "/bin/sh", "-c", "true")
    return run.returncode == 0


def test_the_engine_script_repairs_a_base_that_uid_1000_cannot_enter():
    try:
        if _docker("image", "inspect", BASE).returncode != 0:
            pytest.skip(f"no Docker engine with {BASE} here; run scripts/docker-engine.sh first")
    except FileNotFoundError:
        pytest.skip("no docker client here")
    # the base's files with a mode-700 root entry first, as the old script's `tar -C "$root" -c .` made them
    restrict = (
        "import sys, tarfile\n"
        "src = tarfile.open(fileobj=sys.stdin.buffer, mode='r|')\n"
        "dst = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')\n"
        "root = tarfile.TarInfo('./'); root.type, root.mode = tarfile.DIRTYPE, 0o700; dst.addfile(root)\n"
        "for m in src: dst.addfile(m, src.extractfile(m) if m.isfile() else None)\n"
        "dst.close()\n"
    )
    made = subprocess.run(
        [
            "bash",
            "-c",
            f'set -eo pipefail; c=$(docker create {BASE} true); docker export "$c" | '
            f'{sys.executable} -c "$RESTRICT" | docker import - {BROKEN}; docker rm "$c" >/dev/null',
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RESTRICT": restrict},
    )
    assert made.returncode == 0, made.stderr[-2000:]
    broken_id = _docker("image", "inspect", "--format", "{{.Id}}", BROKEN).stdout.strip()
    try:
        assert not _uid_1000_runs_a_shell(BROKEN), "the broken copy reproduces the fresh-machine failure"
        env = {**os.environ, "WILDFIRE_KD_BASE_IMAGE": BROKEN}
        r = subprocess.run(
            [str(REPO / "scripts" / "docker-engine.sh")], env=env, capture_output=True, text=True, timeout=1200
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"{BROKEN} is not usable by uid 1000" in r.stdout and "ready" in r.stdout
        assert _uid_1000_runs_a_shell(BROKEN), "after the repair uid 1000 runs /bin/sh in the base"
        dangling = _docker("images", "-q", "--filter", "dangling=true").stdout.split()
        assert broken_id.split(":")[-1][:12] not in dangling, "the broken image is removed, not left dangling"
        root_mode = _docker("run", "--rm", "--network", "none", BROKEN, "stat", "-c", "%a", "/").stdout.strip()
        assert root_mode == "755"
    finally:
        _docker("image", "rm", "-f", BROKEN)
