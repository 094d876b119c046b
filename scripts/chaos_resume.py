"""Chaos test: SIGKILL training at random moments (some during checkpoint writes), then resume each time.

    .venv/bin/python scripts/chaos_resume.py --trials 10

Each trial starts a 3-epoch CPU run on synthetic data, kills it with SIGKILL (every third trial the moment a
checkpoint's temporary file appears, i.e. mid-write; the others at a random time), checks that every
checkpoint on disk loads, then resumes with `wildfire-kd train --resume` until the run finishes and checks
results.csv holds each epoch exactly once. Prints how many checkpoints loaded and how many runs finished.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "smoke.yaml"
ENV = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "wildfire_kd.cli", *args]


def _loads(path: Path) -> bool:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return (ckpt.get("model") or ckpt.get("ema")) is not None
    except Exception:
        return False


def _epochs(run: Path) -> list[int]:
    if not (run / "results.csv").exists():
        return []
    with open(run / "results.csv", newline="") as f:
        return [int(float(row[0])) for row in list(csv.reader(f))[1:] if row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_teacher  # the tests' untrained teacher: chaos needs a teacher, not a good one
    from wildfire_kd.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="wildfire-kd-chaos-") as tmp:
        tmp = Path(tmp)
        data = synthesize(tmp / "data", train_images=16, val_images=8, imgsz=96, seed=1)
        teacher = make_teacher(tmp / "teacher.pt", ["smoke", "fire"])

        def train_cmd(out: Path) -> list[str]:
            given = ["--data", str(data), "--teacher", str(teacher), "--out", str(out), "--epochs", str(args.epochs)]
            return _cli("train", "--config", str(CONFIG), *given)

        t0 = time.time()
        subprocess.run(
            train_cmd(tmp / "timing"),
            env=ENV,
            check=True,
            capture_output=True,
        )
        duration = time.time() - t0
        print(f"one uninterrupted {args.epochs}-epoch run: {duration:.1f}s\n")
        print("| trial | kill | at s | ckpt temp file present | checkpoints loaded | resumes | finished | epochs |")
        print("|---:|---|---:|---|---:|---:|---|---|")
        loaded = present = finished = 0
        for trial in range(args.trials):
            out = tmp / f"trial{trial}"
            run, weights = out / "student", out / "student" / "weights"
            cmd = train_cmd(out)
            proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start, mid_write = time.time(), trial % 3 == 0
            kill_at = rng.uniform(1.0, duration)
            while proc.poll() is None:
                temps = list(weights.glob(".*.tmp")) if weights.exists() else []
                if (mid_write and temps) or (not mid_write and time.time() - start >= kill_at):
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.0005)
            killed_after = time.time() - start
            proc.wait()
            in_write = bool(list(weights.glob(".*.tmp"))) if weights.exists() else False
            checkpoints = [p for p in (weights / "last.pt", weights / "best.pt") if p.exists()]
            ok = sum(_loads(p) for p in checkpoints)
            loaded, present = loaded + ok, present + len(checkpoints)
            resumes = 0
            for _ in range(3):  # resume until the run reports itself finished
                if (run / "train.json").exists():
                    break
                # no checkpoint yet: start again in the same folder (ultralytics would otherwise open student2)
                fresh = [*cmd, "--set", "train.exist_ok=true"]
                again = _cli("train", "--resume", str(run)) if (weights / "last.pt").exists() else fresh
                resumes += 1
                subprocess.run(again, env=ENV, capture_output=True)
            epochs = _epochs(run)
            done = (run / "train.json").exists() and epochs == list(range(1, args.epochs + 1))
            finished += done
            kind = "mid-write" if mid_write else "random"
            print(
                f"| {trial + 1} | {kind} | {killed_after:.2f} | {'yes' if in_write else 'no'} | "
                f"{ok}/{len(checkpoints)} | {resumes} | {'yes' if done else 'NO'} | {epochs} |"
            )
        print(f"\ncheckpoints loaded: {loaded}/{present}; runs finished: {finished}/{args.trials}")
        sys.exit(0 if loaded == present and finished == args.trials else 1)


if __name__ == "__main__":
    main()
