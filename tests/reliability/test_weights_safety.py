"""Weights never run code: every command that loads a .pt refuses a planted pickle before it runs, without a pin
(weights-only loading is the default) and with a wrong pin, and still loads real checkpoints that way.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SMOKE_CONFIG, invoke_cli, opts, run_cli, sets  # noqa: E402

pytestmark = pytest.mark.slow
WRONG_PIN = "ab" * 32


class _Plant:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling this creates the marker file: proof that code from the file ran
        return (Path.touch, (Path(self.marker),))


def _plant(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"model": _Plant(str(marker)), "train_args": {"imgsz": 64}}, path)
    return path


def _commands(data: Path, good: Path, planted: Path, out: Path, run: Path) -> dict[str, tuple[list[str], str]]:
    """command -> (argv, the role whose pin applies to the planted file)."""
    cfg = ["--config", str(SMOKE_CONFIG)]
    return {
        "train_teacher": (
            ["train", *cfg, "--data", str(data), "--teacher", str(planted), "--out", str(out)],
            "teacher",
        ),
        "train_student": (
            ["train", *cfg, "--data", str(data), "--teacher", str(good), "--student", str(planted), "--out", str(out)],
            "student",
        ),
        "validate": (
            [
                "validate",
                *cfg,
                "--student",
                str(planted),
                "--teacher",
                str(good),
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            "student",
        ),
        "export": (["export", *cfg, "--weights", str(planted), "--out", str(out)], "student"),
        "parity": (
            ["parity", *cfg, "--weights", str(planted), "--onnx", str(out / "x.onnx"), "--out", str(out)],
            "student",
        ),
        "build": (["build", *cfg, "--data", str(data), "--teacher", str(planted), "--out", str(out)], "teacher"),
        "resume": (["train", "--resume", str(run)], "teacher"),
    }


# resume has no wrong-pin case: no pin applies to a run's own last.pt, so it is always loaded weights-only
CASES = [
    (c, p)
    for c in ("train_teacher", "train_student", "validate", "export", "parity", "build")
    for p in ("no_pin", "wrong_pin")
] + [("resume", "no_pin")]


@pytest.mark.parametrize(("command", "pin"), CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_a_planted_pickle_never_runs(command, pin, fire_smoke_data, teacher_pt, tmp_path):
    marker = tmp_path / "PLANTED_CODE_RAN"
    planted = _plant(tmp_path / "planted.pt", marker)
    # a run folder whose last.pt is the planted file, resumed as if it were ours
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    shutil.copyfile(planted, run / "weights" / "last.pt")
    saved = yaml.safe_load(SMOKE_CONFIG.read_text())
    saved["train"].update(data=str(fire_smoke_data), teacher=str(teacher_pt))
    (run / "wildfire_kd_config.yaml").write_text(yaml.safe_dump(saved))
    argv, role = _commands(fire_smoke_data, teacher_pt, planted, tmp_path / "out", run)[command]
    if pin == "wrong_pin":
        argv = [*argv, "--set", f"train.{role}_sha256={WRONG_PIN}"]
    r = invoke_cli(*argv, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert not marker.exists(), f"{command}: code in the weights file ran"
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    if pin == "wrong_pin":
        assert f"but the config pins {WRONG_PIN}" in last, last
    else:
        assert "refused" in last and "train.allow_unsafe_weights" in last, last


def test_a_pinned_or_opted_in_file_that_needs_full_unpickling_is_loaded(teacher_pt, tmp_path, caplog):
    # a legitimate file outside the allow-list: the teacher plus one extra plain-Python object
    import torch

    from wildfire_kd.errors import InputError
    from wildfire_kd.weights import check_weights, load_detection_model, sha256_file

    ckpt = torch.load(teacher_pt, map_location="cpu", weights_only=False)
    ckpt["extra"] = os.path.join  # a function: only full unpickling can rebuild it
    trusted = tmp_path / "trusted.pt"
    torch.save(ckpt, trusted)
    with pytest.raises(InputError, match="refused"):
        check_weights(trusted, None, "teacher")
    assert check_weights(trusted, sha256_file(trusted), "teacher").full_unpickling is True  # the pin matches: allowed
    assert check_weights(trusted, None, "teacher", allow_unsafe=True).full_unpickling is True  # opted in: allowed
    model = load_detection_model(trusted, sha256_file(trusted), "teacher")
    assert model.names == {0: "smoke", 1: "fire"}
    assert "need full unpickling; loading them because their sha256 pin matches" in caplog.text


def test_real_checkpoints_load_weights_only(fire_smoke_data, tmp_path):
    from ultralytics import YOLO

    from wildfire_kd.weights import check_weights

    assert os.environ.get("ULTRALYTICS_SAFE_LOAD") == "1", "weights-only loading is the process default"
    # ours: a finished run's best.pt and last.pt
    r = run_cli(
        "train",
        *opts(config=str(SMOKE_CONFIG), data=str(fire_smoke_data), out=str(tmp_path), epochs="1"),
        *sets("distill.response=false"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("best.pt", "last.pt"):
        assert check_weights(tmp_path / "student" / "weights" / name, None, "student").full_unpickling is False, name
    # plain ultralytics, trained by ultralytics itself with its optimizer state still in last.pt (save_period); its
    # own tracker callbacks off, as in our trainer (with mlflow installed they would log into ./mlflow.db)
    from wildfire_kd.seam import switch_off_ultralytics_trackers

    switch_off_ultralytics_trackers()
    YOLO("yolov8n.yaml").train(
        data=str(fire_smoke_data),
        epochs=1,
        imgsz=64,
        batch=4,
        device="cpu",
        workers=0,
        plots=False,
        val=False,
        project=str(tmp_path),
        name="plain",
        save_period=1,
        verbose=False,
    )
    plain = tmp_path / "plain" / "weights"
    for path in sorted(plain.glob("*.pt")):
        assert check_weights(path, None, "student").full_unpickling is False, path
    assert (plain / "epoch0.pt").is_file() or (plain / "epoch1.pt").is_file(), sorted(plain.iterdir())


def test_a_ddp_worker_loads_checkpoints_as_the_parent_allowed(monkeypatch):
    # a worker is a new interpreter: the parent's ultralytics_loading(full) does not reach it, KDRun does
    import ultralytics.nn.tasks as tasks

    from wildfire_kd import seam

    def worker_safe_load(full: bool, rank: int) -> bool:
        monkeypatch.setattr(tasks, "SAFE_LOAD", True)
        monkeypatch.setattr(seam, "RANK", rank)
        kd = seam.KDRun(teacher=None, teacher_sha256=None, distill={}, full_unpickling=full)
        monkeypatch.setenv(seam.RUN_ENV, kd.to_env())
        seam.KDRun.from_env().enter_worker()  # as DistillationTrainer.__init__ does in each worker
        return tasks.SAFE_LOAD

    assert worker_safe_load(full=True, rank=1) is False, "a pinned or opted-in file loads in the worker too"
    assert worker_safe_load(full=False, rank=1) is True, "anything else stays weights-only"
    assert worker_safe_load(full=True, rank=-1) is True, "outside DDP the parent's context decides, not this"
