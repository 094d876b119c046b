from __future__ import annotations

import json
import subprocess
import sys

from conftest import make_teacher, run_cli, smoke_args
from wildfire_kd.layout import ERROR_LOG


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from wildfire_kd.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "for cmd in ('train', 'synth'):\n"
        "    try:\n        app([cmd, '--help'])\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "print('HEAVY', sorted(m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "--teacher" in out and "--resume" in out


def test_bad_config_value_exits_2_with_one_line(fire_smoke_data):
    r = run_cli("train", "--data", str(fire_smoke_data), "--set", "train.lr0=abc")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "'train.lr0': Input should be a valid number" in r.stderr


def test_missing_teacher_exits_2(fire_smoke_data, tmp_path):
    r = run_cli("train", "--data", str(fire_smoke_data), "--teacher", str(tmp_path / "none.pt"))
    assert r.returncode == 2 and "teacher weights not found" in r.stderr and "Traceback" not in r.stderr


def test_a_teacher_of_another_class_order_answers_by_name(fire_smoke_data, tmp_path):
    """Compared by index, a teacher trained on [fire, smoke] would teach the student to call smoke fire; by name it
    teaches each class its own (and says so); a teacher without the dataset's classes is exit 2 naming both lists."""
    teacher = make_teacher(tmp_path / "fire_smoke.pt", ["fire", "smoke"], cfg="yolov8n.yaml")
    r = run_cli(*smoke_args("train", fire_smoke_data, teacher, tmp_path / "runs"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "smoke <- teacher's 'smoke' (#1), fire <- teacher's 'fire' (#0)" in r.stderr
    train = json.loads((tmp_path / "runs" / "student" / "train.json").read_text())
    assert train["teacher_classes"]["teacher_index"] == [1, 0]
    other = make_teacher(tmp_path / "people.pt", ["person", "car"], cfg="yolov8n.yaml")
    r = run_cli("train", "--data", str(fire_smoke_data), "--teacher", str(other), "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "['person', 'car']" in r.stderr and "['smoke', 'fire']" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r2").exists(), "nothing trained or written"


def test_dense_refuses_a_teacher_with_other_strides_exit_2(fire_smoke_data, tmp_path):
    teacher = make_teacher(tmp_path / "p6.pt", ["smoke", "fire"], cfg="yolov8n-p6.yaml")  # strides 8..64
    r = run_cli("train", "--data", str(fire_smoke_data), "--teacher", str(teacher), "--out", str(tmp_path / "runs"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and str(teacher) in r.stderr
    assert "[8.0, 16.0, 32.0, 64.0]" in r.stderr and "[8.0, 16.0, 32.0]" in r.stderr  # both heads named
    assert "--set distill.method=pseudo" in r.stderr
    assert not (tmp_path / "runs").exists(), "nothing is trained or written before the check"


def test_synth_cli_writes_one_class_dataset(tmp_path):
    r = run_cli("synth", str(tmp_path / "s"), "--classes", "smoke", "--train-images", "3", "--val-images", "2")
    assert r.returncode == 0, r.stderr
    assert "names:\n  0: smoke\n" in (tmp_path / "s" / "data.yaml").read_text()
    assert len(list((tmp_path / "s" / "images" / "val").glob("*.jpg"))) == 2
    r = run_cli("synth", str(tmp_path / "t"), "--classes", "smoke,flames")
    assert r.returncode == 2 and "synth.classes" in r.stderr


def test_an_internal_error_exits_3_with_one_line_and_the_traceback_in_a_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import wildfire_kd.synth as synth
    from wildfire_kd import cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom inside synthesize")

    monkeypatch.setattr(synth, "synthesize", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    result = CliRunner().invoke(cli.app, ["synth", str(tmp_path / "s")])
    assert result.exit_code == 3, result.output
    log = tmp_path / "s" / ERROR_LOG
    assert result.output.strip() == (
        "wildfire-kd synth: internal error (a bug, not your input): ZeroDivisionError: boom inside synthesize; "
        f"traceback in {log}"
    )
    assert "Traceback" in log.read_text() and "boom inside synthesize" in log.read_text()
    result = CliRunner().invoke(cli.app, ["--debug", "synth", str(tmp_path / "t")])
    assert result.exit_code == 3 and "Traceback (most recent call last)" in result.output
    assert "traceback above" in result.output.strip().splitlines()[-1]
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
