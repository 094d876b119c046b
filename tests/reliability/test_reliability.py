"""Issue 6: crash-safe writes, honest resume, SIGTERM, pinned weights, untouched data, offline, non-finite."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import SMOKE_CONFIG, opts, run_cli, sets, smoke_args, smoke_config

pytestmark = pytest.mark.slow


def _epochs(run: Path) -> list[int]:
    with open(run / "results.csv", newline="") as f:
        return [int(float(row["epoch"].strip() if "epoch" in row else row[" epoch"])) for row in csv.DictReader(f)]


def _loads(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return isinstance(ckpt, dict) and (ckpt.get("model") or ckpt.get("ema")) is not None
    except Exception:
        return False


def _train_cmd(data: Path, teacher: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wildfire_kd.cli",
        "train",
        "--config",
        str(SMOKE_CONFIG),
        "--data",
        str(data),
        "--teacher",
        str(teacher),
        "--out",
        str(out),
        *extra,
    ]


def _start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.02)


# --- crash-safe writes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("torn", "nth", "whole_epoch"),
    [("last.pt", 2, 0), ("epoch1.pt", 1, 1)],  # the kill lands in epoch 2's rename of that file
)
def test_a_crash_during_a_checkpoint_write_leaves_the_previous_checkpoint(
    torn, nth, whole_epoch, fire_smoke_data, teacher_pt, tmp_path, monkeypatch
):
    from wildfire_kd import seam
    from wildfire_kd.config import load_config
    from wildfire_kd.distill import train

    real_replace, calls = os.replace, {"n": 0}

    def crash_on_rename(src, dst):
        if Path(dst).name == torn and ".strip" not in str(src):
            calls["n"] += 1
            if calls["n"] == nth:  # between writing the file's bytes and renaming them over it
                raise SystemExit("killed mid-write")
        return real_replace(src, dst)

    monkeypatch.setattr(seam.os, "replace", crash_on_rename)
    overrides = [f"train.data={fire_smoke_data}", f"train.teacher={teacher_pt}", f"train.out={tmp_path}"]
    config = load_config(SMOKE_CONFIG, [*overrides, "train.epochs=3", "train.save_period=1"])
    with pytest.raises(SystemExit):
        train(config)
    weights = tmp_path / "student" / "weights"
    ckpt = torch.load(weights / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == whole_epoch, "last.pt holds the last complete checkpoint"
    assert torch.load(weights / "epoch0.pt", map_location="cpu", weights_only=False)["epoch"] == 0
    assert (weights / f".{torn}.tmp").exists(), "the torn write stayed in its temp file"
    if torn == "epoch1.pt":
        assert not (weights / "epoch1.pt").exists(), "save_period's file appears whole or not at all"


def test_reports_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import wildfire_kd.reports as reports

    target = tmp_path / "report.json"
    reports.write_json(target, {"v": 1})

    def crash(*args):
        raise OSError("disk vanished")

    monkeypatch.setattr(reports.os, "replace", crash)
    with pytest.raises(OSError):
        reports.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1} and list(tmp_path.iterdir()) == [target]


# --- resume -------------------------------------------------------------------------------------------------


@pytest.fixture
def killed_run(fire_smoke_data, teacher_pt, tmp_path) -> Path:
    """A 3-epoch run killed with SIGKILL in its second epoch."""
    proc = _start(_train_cmd(fire_smoke_data, teacher_pt, tmp_path, "--epochs", "3"))
    run = tmp_path / "student"
    _wait_for(run / "weights" / "last.pt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return run


def test_resume_after_sigkill_finishes_with_continuous_results(killed_run):
    from wildfire_kd.weights import check_weights

    assert _loads(killed_run / "weights" / "last.pt")
    # a mid-run checkpoint with its optimizer state loads weights-only: resuming needs no full unpickling
    assert check_weights(killed_run / "weights" / "last.pt", None, "resume checkpoint").full_unpickling is False
    # as if the kill landed after ultralytics wrote an epoch's results row but before it saved last.pt
    saved_epoch = torch.load(killed_run / "weights" / "last.pt", map_location="cpu", weights_only=False)["epoch"]
    rows = (killed_run / "results.csv").read_text().splitlines()
    ghost = rows[-1].split(",")
    ghost[0] = str(saved_epoch + 2)
    (killed_run / "results.csv").write_text("\n".join([*rows, ",".join(ghost)]) + "\n")
    r = run_cli("train", "--resume", str(killed_run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _epochs(killed_run) == [1, 2, 3], "no gap, no duplicate epoch"
    log_epochs = [json.loads(line)["epoch"] for line in (killed_run / "batch_log.jsonl").read_text().splitlines()]
    assert [log_epochs.count(e) for e in (1, 2, 3)] == [4, 4, 4], "the batch log holds each epoch once"
    assert json.loads((killed_run / "train.json").read_text())["epochs_completed"] == 3


def test_resume_refuses_settings_it_would_ignore_unless_forced(killed_run, teacher_pt, tmp_path):
    other_teacher = tmp_path / "other.pt"
    shutil.copyfile(teacher_pt, other_teacher)
    r = run_cli(
        "train",
        *opts(resume=str(killed_run)),
        *sets("train.lr0=0.1", "distill.temperature=4"),
        *opts(teacher=str(other_teacher), epochs="9"),
    )
    assert r.returncode == 2
    for key in ("train.lr0", "distill.temperature", "train.teacher", "train.epochs"):
        assert key in r.stderr
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--resume", str(killed_run), "--set", "train.lr0=0.1", "--force")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ignored: train.lr0" in r.stderr
    assert _epochs(killed_run) == [1, 2, 3]
    r = run_cli("train", "--resume", str(killed_run))
    assert r.returncode == 0 and "already finished" in r.stderr


# --- SIGTERM ------------------------------------------------------------------------------------------------


def test_sigterm_finishes_the_step_exits_143_and_the_run_resumes(fire_smoke_data, teacher_pt, tmp_path):
    proc = _start(_train_cmd(fire_smoke_data, teacher_pt, tmp_path, "--epochs", "3"))
    run = tmp_path / "student"
    _wait_for(run / "weights" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "resume: wildfire-kd train --resume" in stderr
    assert _loads(run / "weights" / "last.pt")
    r = run_cli("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _epochs(run) == [1, 2, 3]


# --- pinned weights -----------------------------------------------------------------------------------------


class _Plant:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling this object creates the marker file
        return (Path.touch, (self.marker,))


def test_a_pinned_teacher_is_never_unpickled_when_its_hash_differs(fire_smoke_data, teacher_pt, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    evil.write_bytes(pickle.dumps({"model": _Plant(marker)}))
    pin = hashlib.sha256(teacher_pt.read_bytes()).hexdigest()  # the teacher the user meant to use
    r = run_cli(
        "train",
        *opts(config=str(SMOKE_CONFIG), data=str(fire_smoke_data), teacher=str(evil)),
        *sets(f"train.teacher_sha256={pin}"),
        *opts(out=str(tmp_path / "runs")),
    )
    assert r.returncode == 2 and "config pins" in r.stderr
    assert not marker.exists(), "nothing was unpickled"
    for command in ("validate", "export"):  # every command that loads weights checks the pin first
        args = (
            ["--student", str(evil), "--teacher", str(teacher_pt), "--data", str(fire_smoke_data)]
            if command == "validate"
            else ["--weights", str(evil)]
        )
        r = run_cli(command, *args, "--set", f"train.student_sha256={pin}", "--out", str(tmp_path / command))
        assert r.returncode == 2 and "config pins" in r.stderr, (command, r.stderr[-1000:])
    assert not marker.exists()


def test_without_a_pin_the_sha256_is_printed_for_pinning(fire_smoke_data, teacher_pt, tmp_path):
    r = run_cli(
        *smoke_args("train", fire_smoke_data, teacher_pt, tmp_path),
        *opts(epochs="1"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        f"sha256 {hashlib.sha256(teacher_pt.read_bytes()).hexdigest()} (pin it with train.teacher_sha256)" in r.stderr
    )


# --- the dataset is never modified --------------------------------------------------------------------------


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_on_a_read_only_dataset_leaves_every_byte(fire_smoke_data, teacher_pt, tmp_path):
    data = tmp_path / "ro"
    shutil.copytree(fire_smoke_data.parent, data)
    jpeg = data / "images" / "train" / "train_00003.jpg"
    jpeg.write_bytes(jpeg.read_bytes() + b"\x00\x00")  # no end marker at the end: ultralytics re-saves it in place
    for p in data.rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    data.chmod(0o555)
    before = _tree_digest(data)
    r = run_cli(
        *smoke_args("build", data / "data.yaml", teacher_pt, tmp_path / "build"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tree_digest(data) == before, "no file of the dataset changed, none was added (no .cache)"
    report = json.loads((tmp_path / "build" / "train" / "preflight.json").read_text())
    assert any("train_00003.jpg" in p for p in report["problems"]["truncated_jpeg"])


# --- offline ------------------------------------------------------------------------------------------------

_AUDIT = """
import socket, sys
_log = {log!r}
def _hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
        family = getattr(args[0], "family", None) if event == "socket.connect" else None
        if family == socket.AF_UNIX:
            return
        with open(_log, "a") as f:
            f.write(f"{{event}} {{args[1:] if event == 'socket.connect' else args}}\\n")
sys.addaudithook(_hook)
"""


def test_a_whole_build_opens_no_network_connection(fire_smoke_data, teacher_pt, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    site = tmp_path / "site"
    site.mkdir()
    log = tmp_path / "network_attempts.log"
    (site / "sitecustomize.py").write_text(_AUDIT.format(log=str(log)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "YOLO_CONFIG_DIR": str(tmp_path / "yolo"),
    }  # a fresh config dir: no font or settings cached yet
    control = (
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError:\n    pass"
    )
    subprocess.run(["unshare", "-n", sys.executable, "-c", control], env=env, check=True)
    assert "socket.connect" in log.read_text(), "the audit hook sees connection attempts"
    log.unlink()
    r = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "wildfire_kd.cli",
            "build",
            "--config",
            str(SMOKE_CONFIG),
            "--data",
            str(fire_smoke_data),
            "--teacher",
            str(teacher_pt),
            "--out",
            str(tmp_path / "build"),
            "--set",
            "export.half=true",
            "--set",
            "train.loggers=[tensorboard, mlflow]",
        ],  # trackers stay offline too
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"network attempts during build:\n{attempts}"


def test_the_amp_check_on_cuda_never_downloads_offline(tmp_path, monkeypatch):
    # ultralytics' check_amp downloads yolo26n.pt on CUDA; offline without that file we keep AMP on, no network
    import torch

    from wildfire_kd import seam
    from wildfire_kd.distill import trainer as kd_trainer

    class OnCuda(torch.nn.Module):  # a model whose parameters report a CUDA device, on a machine without one
        def parameters(self, recurse=True):
            yield type("P", (), {"device": torch.device("cuda")})()

    calls = []
    monkeypatch.setattr(seam, "_upstream_check_amp", lambda model: calls.append(model) or False)
    monkeypatch.setattr(seam, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    assert seam.offline_check_amp(OnCuda()) is True and calls == []
    (tmp_path / seam.AMP_CHECK_WEIGHTS).write_bytes(b"local copy")  # a local copy: upstream's check runs
    assert seam.offline_check_amp(OnCuda()) is False and len(calls) == 1
    cpu_model = torch.nn.Linear(1, 1)  # CPU: upstream's own early answer (no AMP, no download)
    assert seam.offline_check_amp(cpu_model) is False and calls[-1] is cpu_model
    # and it is the check the trainer's set-up really calls
    import ultralytics.engine.trainer as upstream

    seen = []
    monkeypatch.setattr(seam.DetectionTrainer, "_setup_train", lambda self: seen.append(upstream.check_amp) or None)
    monkeypatch.setattr(kd_trainer.DistillationTrainer, "_check_no_image_dropped", lambda self: None)
    trainer = object.__new__(kd_trainer.DistillationTrainer)
    trainer.kd = seam.KDRun(teacher=None, teacher_sha256=None, distill={"response": False})
    trainer._setup_train()
    assert seen == [seam.offline_check_amp] and upstream.check_amp is not seam.offline_check_amp


# --- non-finite ---------------------------------------------------------------------------------------------


def test_no_checkpoint_ever_holds_a_non_finite_tensor(fire_smoke_data, teacher_pt, tmp_path, monkeypatch):
    from wildfire_kd.distill import train
    from wildfire_kd.distill.loss import ResponseKDLoss

    original, calls = ResponseKDLoss.__call__, {"n": 0}

    def nan_every_third(self, preds, batch):
        loss, items = original(self, preds, batch)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] % 3 == 0:
                loss = loss * float("nan")
        return loss, items

    monkeypatch.setattr(ResponseKDLoss, "__call__", nan_every_third)
    config = smoke_config(fire_smoke_data, teacher_pt, tmp_path, "train.epochs=3")
    result = train(config)
    assert result.skipped_steps == 4  # 12 steps, every third poisoned
    for name in ("last.pt", "best.pt"):
        model = torch.load(Path(result.run_dir) / "weights" / name, map_location="cpu", weights_only=False)["model"]
        tensors = list(model.state_dict().values())
        assert tensors and all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()), name


def test_a_run_killed_after_its_last_epoch_is_finalised_in_its_own_folder(fire_smoke_data, teacher_pt, tmp_path):
    r = run_cli(*_train_cmd(fire_smoke_data, teacher_pt, tmp_path, "--epochs", "2")[3:])
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "student"
    (run / "train.json").unlink()  # as if killed during finalisation, after every epoch was saved
    r = run_cli("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finalising the run" in r.stderr
    assert (run / "train.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    assert _epochs(run) == [1, 2]
