"""Teachers from the wild: custom blocks pickled under __main__, other class lists, finetuning inside the pipeline,
and the real published teacher in ../shared/teachers end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO, invoke_cli, make_teacher, run_cli, sets, smoke_args
from wildfire_kd.config import DistillSettings
from wildfire_kd.data import teacher_classes
from wildfire_kd.errors import InputError
from wildfire_kd.weights import sha256_file

BLOCK = textwrap.dedent(
    """
    import torch.nn as nn

    class Wrapped(nn.Module):
        '''A custom block, as a training script defines one: it wraps a layer and keeps ultralytics' routing.'''

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.f, self.i, self.type, self.np = inner.f, inner.i, "Wrapped", inner.np

        def forward(self, x):
            return self.inner(x)
    """
)


@pytest.fixture(scope="module")
def custom_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """(a teacher checkpoint whose block class the pickle names under __main__, the file that defines the class)."""
    root = tmp_path_factory.mktemp("custom")
    (root / "blocks.py").write_text(BLOCK)
    script = BLOCK + textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(REPO / "tests")!r})
        from conftest import make_teacher
        make_teacher({str(root / "plain.pt")!r}, ["smoke", "fire"], cfg="yolov8n.yaml")
        ckpt = torch.load({str(root / "plain.pt")!r}, weights_only=False)
        ckpt["model"].model[2] = Wrapped(ckpt["model"].model[2])  # run as a script: the class lives in __main__
        torch.save(ckpt, {str(root / "teacher.pt")!r})
        """
    )
    (root / "train_script.py").write_text(script)
    subprocess.run([sys.executable, str(root / "train_script.py")], check=True, capture_output=True, timeout=300)
    return root / "teacher.pt", root / "blocks.py"


def test_a_checkpoint_with_main_classes_loads_with_its_modules_and_is_refused_without(
    custom_teacher, fire_smoke_data, tmp_path
):
    teacher, blocks = custom_teacher
    pin = f"train.teacher_sha256={sha256_file(teacher)}"
    base = smoke_args("train", fire_smoke_data, teacher, tmp_path / "runs")
    r = invoke_cli(*base, "--set", pin)
    assert r.returncode == 2, r.stderr[-2000:]
    message = r.stderr.strip().splitlines()[-1]
    assert "need the class or module 'Wrapped'" in message and "train.teacher_modules" in message, message
    r = invoke_cli(
        *base, "--teacher-modules", str(blocks)
    )  # modules given, but the file is neither pinned nor opted in
    assert r.returncode == 2 and "refused" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists(), "nothing trained"
    r = run_cli(*base, "--teacher-modules", str(blocks), "--set", pin)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "runs" / "student" / "train.json").read_text())["epochs_completed"] == 2


def test_the_teacher_answers_for_the_datasets_classes_by_name():
    mapped = teacher_classes(["smoke", "fire"], ["smoke"], {}, "t.pt", "d.yaml")
    assert mapped.keep == [0] and not mapped.identical and "not distilled: ['fire']" in mapped.describe()
    assert teacher_classes(["fire", "smoke"], ["smoke", "fire"], {}, "t", "d").keep == [1, 0], "ordered by name"
    assert teacher_classes(["Smoke", "flame"], ["smoke"], {"smoke": "Smoke"}, "t", "d").keep == [0], "class_map"
    assert teacher_classes(["smoke", "fire"], ["smoke", "fire"], {}, "t", "d").identical
    with pytest.raises(InputError, match=r"teacher t has \['person'\], dataset d has \['smoke'\].*distill.class_map"):
        teacher_classes(["person"], ["smoke"], {}, "t", "d")
    with pytest.raises(InputError, match="are not classes of the dataset"):
        teacher_classes(["smoke"], ["smoke"], {"fire": "smoke"}, "t", "d")


def test_the_kd_class_term_sees_only_the_mapped_column():
    """A 2-class teacher narrowed to the dataset's one class: its class logits are exactly the mapped column, its
    boxes unchanged, and the dense class term on a batch equals the term against that column alone."""
    from ultralytics.nn.tasks import DetectionModel

    from wildfire_kd.distill.loss import DenseKDLoss, quality_focal_kd
    from wildfire_kd.seam import narrow_classes

    torch.manual_seed(0)
    teacher = DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval()
    teacher.names = {0: "smoke", 1: "fire"}
    from ultralytics.cfg import get_cfg

    student = DetectionModel("yolov8n.yaml", nc=1, verbose=False).train()
    student.args = get_cfg()  # the loss reads its hyperparameters from here
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, full = teacher(images)
    for column, data_name in ((0, "smoke"), (1, "fire")):  # class_map can send "smoke" to the teacher's "fire"
        import copy

        narrowed = narrow_classes(copy.deepcopy(teacher), [column], [data_name]).eval()
        with torch.no_grad():
            _, raw = narrowed(images)
        assert torch.equal(raw["scores"], full["scores"][:, [column]]) and torch.equal(raw["boxes"], full["boxes"])
        criterion = DenseKDLoss(student, narrowed, DistillSettings())
        preds = student(images)
        criterion.cls_normaliser = 1.0
        terms = criterion.terms(preds, *criterion.run_teacher(images))
        expected = quality_focal_kd(preds["scores"].permute(0, 2, 1), full["scores"][:, [column]].permute(0, 2, 1), 2.0)
        assert torch.allclose(terms["kd_cls"], expected.sum())


@pytest.mark.slow
def test_a_two_class_teacher_distils_into_a_one_class_dataset(smoke_only_data, teacher_pt, tmp_path):
    r = run_cli(*smoke_args("train", smoke_only_data, teacher_pt, tmp_path), *sets("validation.after_train=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "teacher classes ['smoke', 'fire'] answer for the dataset's ['smoke']" in r.stderr
    report = json.loads((tmp_path / "student" / "train.json").read_text())
    assert report["teacher_classes"] == {"teacher": ["smoke", "fire"], "dataset": ["smoke"], "teacher_index": [0]}
    validation = json.loads((tmp_path / "student" / "validation" / "validation.json").read_text())
    assert validation["teacher_classes"]["teacher_index"] == [0] and set(validation["teacher"]["per_class"]) == {
        "smoke"
    }


@pytest.mark.slow
def test_class_map_maps_differing_names_and_unrelated_names_stay_exit_2(smoke_only_data, tmp_path):
    teacher = make_teacher(tmp_path / "t.pt", ["Smoke", "flame"], cfg="yolov8n.yaml")
    args = smoke_args("train", smoke_only_data, teacher, tmp_path / "a")
    r = invoke_cli(*args)
    assert r.returncode == 2 and "['Smoke', 'flame']" in r.stderr and "['smoke']" in r.stderr, r.stderr[-2000:]
    r = run_cli(*args, *sets("distill.class_map={smoke: Smoke}"))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "a" / "student" / "train.json").read_text())
    assert report["teacher_classes"]["teacher_index"] == [0]


@pytest.mark.slow
def test_the_finetune_stage_runs_is_skipped_when_unchanged_and_resumes(
    smoke_only_data, teacher_pt, tmp_path, monkeypatch
):
    from ultralytics.utils.callbacks import base as callbacks

    from conftest import smoke_config
    from wildfire_kd.pipeline import build

    class Killed(Exception):
        pass

    def kill_in_second_epoch(trainer):
        if trainer.epoch == 1 and trainer.kd.finetune:
            raise Killed

    config = smoke_config(smoke_only_data, teacher_pt, tmp_path, "finetune.enabled=true", "finetune.epochs=2")
    defaults = {k: list(v) for k, v in callbacks.default_callbacks.items()}
    defaults["on_train_epoch_start"].append(kill_in_second_epoch)
    monkeypatch.setattr(callbacks, "default_callbacks", defaults)
    with pytest.raises(Killed):
        build(config, tmp_path / "b")
    monkeypatch.undo()
    assert (tmp_path / "b" / "teacher" / "weights" / "last.pt").is_file()
    result = build(config, tmp_path / "b")
    assert [(s.name, s.status) for s in result.stages][:2] == [("finetune", "resumed"), ("train", "ran")]
    finetuned = json.loads((tmp_path / "b" / "teacher" / "finetune.json").read_text())
    assert finetuned["epochs_completed"] == 2 and set(finetuned["before"]) == {
        "precision",
        "recall",
        "map50",
        "map50_95",
    }
    assert finetuned["teacher_classes"]["teacher_index"] == [0], "the 2-class teacher finetuned on the smoke class"
    report = json.loads((tmp_path / "b" / "build_report.json").read_text())
    assert report["inputs"]["finetuned_teacher"]["sha256"] == sha256_file(
        tmp_path / "b" / "teacher" / "weights" / "best.pt"
    )
    again = build(config, tmp_path / "b")
    assert {s.status for s in again.stages} == {"skipped"}
    assert "finetuned on this dataset" in (tmp_path / "b" / "MODEL_CARD.md").read_text()


SHARED = REPO.parent / "shared"
REAL_TEACHER = SHARED / "teachers" / "light_yolov8_flame.pt"
REAL_PIN = "2185fb9bc19a1cb641f993fff4f4368ac2c90b645d7a17ba2af8ebdc95878354"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_TEACHER.is_file(), reason="the shared real teacher is not on this machine")
def test_the_real_published_teacher_builds_end_to_end_on_real_smoke_photos(tmp_path):
    """light_yolov8_flame.pt (FasterNet blocks pickled under __main__, classes smoke and fire), pinned, its modules
    given, finetuned on a smoke-only subset of fire8, then distilled, validated, exported and checked: CPU, tiny."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_compare import smoke_subset

    data = smoke_subset(SHARED / "datasets" / "fire8", tmp_path / "fire8_smoke", train=24, val=8)
    r = run_cli(
        "build", "--config", str(REPO / "configs" / "smoke.yaml"), "--data", str(data),
        "--teacher", str(REAL_TEACHER), "--teacher-modules", str(SHARED / "teachers" / "fire_detector_modules.py"),
        "--finetune", "--out", str(tmp_path / "b"),
        *sets(f"train.teacher_sha256={REAL_PIN}", "finetune.epochs=1"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert [line.split()[2] for line in r.stdout.splitlines() if line.startswith("build: ✓")] == [
        "finetune", "train", "validate", "export", "parity",
    ]  # fmt: skip
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "light_yolov8_flame.pt" in card and "['smoke', 'fire']" in card
