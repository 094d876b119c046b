"""Reliability round 4 (issue 30), the cases that need more than one command line: a disk that fills mid-run, two
runs into one folder, detect's own outputs inside the frames, frames.csv read the same by detect and validate, the
options both entry points document. The full-disk tests mount a small tmpfs (root, as in CI; skipped elsewhere)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, SMOKE_CONFIG, invoke_cli, make_onnx, make_teacher, run_cli  # noqa: E402

BOX = (8.0, 8.0, 40.0, 40.0)


def _frames(folder: Path, n: int, size: tuple[int, int] = (64, 64), noise: bool = False) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8) if noise else np.full((*size[::-1], 3), 100 + i)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"frame_{i:03d}.jpg", quality=95)
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path) -> Path:
    return make_onnx(tmp_path / "model.onnx", [(0, 0.9, BOX)])


# --- a full disk -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few megabytes (root only: CI runs as root), unmounted afterwards; ``fill(leave)`` fills it up to
    ``leave`` bytes free."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def fill(leave: int) -> None:
        free = shutil.disk_usage(disk).free
        with open(disk / "filler", "ab") as f:
            f.write(b"\0" * max(free - leave, 0))

    try:
        yield disk, fill
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _full_disk_message(r, path: Path) -> str:
    assert r.returncode == 4, f"exit {r.returncode}: {r.stderr[-2000:]}"
    line = r.stderr.strip().splitlines()[-1]
    assert "no space left on the device of" in line and str(path) in line and "MB free" in line, line
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return line


def test_detect_on_a_full_disk_exits_4_and_keeps_the_earlier_complete_output(small_disk, model, tmp_path):
    disk, fill = small_disk
    frames = _frames(tmp_path / "cam", 30, size=(640, 480), noise=True)  # annotated copies of ~150 KB each
    out = disk / "det"
    assert invoke_cli("detect", "--model", str(model), str(frames), "--out", str(out)).returncode == 0
    before = (out / "detections.jsonl").read_bytes()
    assert before.count(b"\n") == 30
    fill(leave=1_500_000)  # room for about ten copies
    r = invoke_cli("detect", "--model", str(model), str(frames), "--out", str(out), "--save-images")
    _full_disk_message(r, disk)
    assert (out / "detections.jsonl").read_bytes() == before, "the earlier complete detections.jsonl is kept"
    assert not [p for p in out.rglob(".*") if p.is_file()], "no temporary file left behind"


def test_synth_on_a_full_disk_keeps_its_earlier_output(small_disk):
    disk, fill = small_disk
    out = disk / "data"
    assert invoke_cli("synth", str(out), "--train-images", "4", "--val-images", "2", "--imgsz", "64").returncode == 0
    before = {p.name: _sha(p) for p in out.rglob("*.jpg")}
    fill(leave=30_000)
    r = invoke_cli("synth", str(out), "--force", "--train-images", "200", "--val-images", "2", "--imgsz", "256")
    _full_disk_message(r, disk)
    assert {p.name: _sha(p) for p in out.rglob("*.jpg")} == before, "the earlier dataset is whole"
    assert not [p for p in disk.iterdir() if p.name.startswith(".")], "the staging folder is gone"


@pytest.mark.slow
def test_train_validate_export_and_parity_on_a_full_disk_exit_4(small_disk, tmp_path, fire_smoke_data):
    disk, fill = small_disk
    teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    fill(leave=3_000_000)  # less than one checkpoint
    r = run_cli("train", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--teacher", str(teacher),
                "--out", str(disk / "runs"))  # fmt: skip
    _full_disk_message(r, disk)
    assert not list((disk / "runs").rglob("*.tmp")), "no half-written checkpoint"
    (disk / "filler").unlink()
    out = disk / "export"
    assert invoke_cli("export", "--weights", str(teacher), "--out", str(out)).returncode == 0
    onnx = (out / "student.onnx").read_bytes()
    fill(leave=200_000)
    r = invoke_cli("export", "--weights", str(teacher), "--out", str(out))
    _full_disk_message(r, disk)
    assert (out / "student.onnx").read_bytes() == onnx, "the earlier complete file is kept"
    fill(leave=0)
    r = invoke_cli("validate", "--student", str(teacher), "--teacher", str(teacher), "--data", str(fire_smoke_data),
                   "--out", str(disk / "val"), "--config", str(SMOKE_CONFIG))  # fmt: skip
    _full_disk_message(r, disk)
    r = invoke_cli("parity", "--weights", str(teacher), "--model", str(out / "student.onnx"), "--data",
                   str(fire_smoke_data), "--out", str(disk / "par"))  # fmt: skip
    _full_disk_message(r, disk)


@pytest.mark.slow
def test_build_on_a_full_disk_exits_4(small_disk, tmp_path, fire_smoke_data):
    disk, fill = small_disk
    teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    fill(leave=3_000_000)
    r = run_cli("build", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--teacher", str(teacher),
                "--out", str(disk / "build"))  # fmt: skip
    _full_disk_message(r, disk)


# --- two runs into one folder -------------------------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    return subprocess.Popen([sys.executable, "-m", "wildfire_kd.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _holds_lock(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    inode = folder.stat().st_ino
    return any(f":{inode} " in line and "FLOCK" in line for line in Path("/proc/locks").read_text().splitlines())


def test_two_detect_runs_into_one_folder_the_second_is_refused_naming_the_first(model, tmp_path):
    frames = _frames(tmp_path / "cam", 300, size=(320, 240))
    out = tmp_path / "out"
    first = _start("detect", "--model", str(model), str(frames), "--out", str(out), "--sequence", "--tiles", "3")
    try:
        _wait_until(lambda: _holds_lock(out))
        r = run_cli("detect", "--model", str(model), str(frames), "--out", str(out), "--sequence")
        assert r.returncode == 2, r.stderr
        assert f"--out {out} is in use by another wildfire-kd run (pid {first.pid})" in r.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
    rows = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and len({r["file"] for r in rows}) == 300, "one run's lines, whole"


def test_a_killed_run_leaves_no_stale_lock(model, tmp_path):
    frames = _frames(tmp_path / "cam", 300, size=(320, 240))
    out = tmp_path / "out"
    first = _start("detect", "--model", str(model), str(frames), "--out", str(out), "--tiles", "3")
    _wait_until(lambda: _holds_lock(out))
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    r = run_cli("detect", "--model", str(model), str(frames), "--out", str(out))
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_two_builds_into_one_folder_the_second_is_refused_and_the_first_finishes(tmp_path, fire_smoke_data):
    teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    out = tmp_path / "build"
    args = ("build", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--teacher", str(teacher), "--out",
            str(out), "--set", "finetune.epochs=1", "--finetune")  # fmt: skip
    first = _start(*args)
    try:
        _wait_until(lambda: _holds_lock(out))
        r = run_cli(*args)
        assert r.returncode == 2 and f"(pid {first.pid})" in r.stderr, r.stderr
        assert first.wait(timeout=600) in (0, 1), first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert (out / "build_report.json").is_file() and (out / "train" / "dataset").is_dir()


def test_two_trainings_into_one_run_folder(tmp_path, fire_smoke_data):
    """train locks its run folder once it knows it: out/name with exist_ok."""
    from wildfire_kd.guard import lock_folder, release_folders

    run = tmp_path / "runs" / "student"
    lock_folder(run)  # as a running train holds it
    try:
        teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
        r = run_cli("train", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--teacher", str(teacher),
                    "--out", str(tmp_path / "runs"), "--set", "train.exist_ok=true")  # fmt: skip
        assert r.returncode == 2 and f"{run} is in use by another wildfire-kd run (pid {os.getpid()})" in r.stderr
    finally:
        release_folders()


def test_a_library_call_that_raises_gives_its_run_folder_back(tmp_path):
    """pipeline.build / train / detect called from Python: an interrupted run must not keep its folder locked, or the
    rerun that resumes it is refused; a lock the caller held before stays held."""
    from wildfire_kd.guard import _held, lock_folder, release_folders, releases_its_locks

    outer, run = tmp_path / "outer", tmp_path / "run"

    @releases_its_locks
    def interrupted():
        lock_folder(outer)
        lock_folder(run)
        raise KeyboardInterrupt

    lock_folder(outer)
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted()
        assert set(_held) == {outer.resolve()}
        assert not _holds_lock(run) and _holds_lock(outer), "the OS lock itself (/proc/locks), not only our record"
    finally:
        release_folders()


# --- detect's own outputs, and the frames' order ---------------------------------------------------------------------


def test_detect_never_reads_back_any_earlier_runs_copies_inside_the_frames(model, tmp_path):
    frames = tmp_path / "FRAMES"
    _frames(frames / "s", 2)
    _frames(frames / "t", 2)
    for n in range(3):  # a new --out inside the frames each time: earlier runs' copies are there too
        r = invoke_cli("detect", "--model", str(model), str(frames), "--out", str(frames / "s" / f"out{n}"),
                       "--save-images", "--sequence")  # fmt: skip
        assert r.returncode == 0 and "4 image(s) from 2 camera(s)" in r.stdout, r.stdout + r.stderr


def test_detect_takes_a_frames_csv_with_a_byte_order_mark_in_its_time_order(model, tmp_path):
    cam = _frames(tmp_path / "cam", 3)
    names = sorted(p.name for p in cam.glob("*.jpg"))
    rows = [f"{names[2]},100,0", f"{names[0]},300,0", f"{names[1]},200,0"]  # time order: 2, 1, 0 by name
    (cam / "frames.csv").write_text("\ufefffile,time,smoke\n" + "\n".join(rows) + "\n", encoding="utf-8")
    r = invoke_cli("detect", "--model", str(model), str(cam), "--out", str(tmp_path / "out"), "--sequence")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert [Path(x["file"]).name for x in lines] == [names[2], names[1], names[0]]
    assert [x["time"] for x in lines] == [100.0, 200.0, 300.0], "the times validate reads"
    (cam / "frames.csv").write_text("file,time,smoke\n", encoding="utf-8")
    r = invoke_cli("detect", "--model", str(model), str(cam), "--out", str(tmp_path / "out2"), "--sequence")
    assert r.returncode == 0 and "a header and no frames" in r.stderr, "said, then name order a minute apart"


def test_every_detect_option_the_readme_names_exists_in_both_entry_points():
    import re

    from wildfire_kd.edge.options import DETECT_OPTIONS

    readme = (REPO / "README.md").read_text()
    named = set(
        re.findall(r"`(--(?:alarm-[a-z]+|tiles|threads|static-memory|learn-static|no-static|no-events))", readme)
    )
    assert {"--alarm-mode", "--alarm-release", "--tiles"} <= named
    flags = {f for o in DETECT_OPTIONS for f in o.flags}
    assert named <= flags, f"the README names options detect lacks: {named - flags}"


@pytest.mark.slow
def test_a_fraction_of_the_training_images_is_not_taken_for_images_ultralytics_dropped(tmp_path, fire_smoke_data):
    teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    r = run_cli("train", "--config", str(SMOKE_CONFIG), "--data", str(fire_smoke_data), "--teacher", str(teacher),
                "--out", str(tmp_path / "runs"), "--set", "train.ultralytics={fraction: 0.5}",
                "--set", "validation.after_train=false")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "runs" / "student" / "batch_log.jsonl").read_text().splitlines()]
    assert len([x for x in log if x["epoch"] == 1]) == 2, "8 of the 16 train images, 4 per batch"
