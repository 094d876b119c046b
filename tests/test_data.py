from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from wildfire_kd.data import class_names, label_path, mirror, preflight, teacher_classes
from wildfire_kd.errors import InputError
from wildfire_kd.synth import synthesize


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_synth_is_deterministic_and_seed_dependent(tmp_path):
    a = synthesize(tmp_path / "a", train_images=4, val_images=2, imgsz=64, seed=3).parent
    b = synthesize(tmp_path / "b", train_images=4, val_images=2, imgsz=64, seed=3).parent
    c = synthesize(tmp_path / "c", train_images=4, val_images=2, imgsz=64, seed=4).parent
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert len(list((a / "images" / "train").glob("*.jpg"))) == 4


def test_synth_labels_are_valid_yolo_rows(fire_smoke_data):
    info = preflight(fire_smoke_data)
    assert info.names == ["smoke", "fire"]
    assert info.splits["train"].images == 16 and info.splits["val"].images == 8
    assert all(n > 0 for n in info.splits["train"].instances), "both classes appear in training"
    for lbl in (fire_smoke_data.parent / "labels" / "train").glob("*.txt"):
        for row in lbl.read_text().splitlines():
            cls, *xywh = row.split()
            assert cls in {"0", "1"} and len(xywh) == 4 and all(0 < float(v) <= 1 for v in xywh)


def test_one_class_synth_has_only_smoke(smoke_only_data):
    assert class_names(smoke_only_data) == ["smoke"]
    rows = [r for f in (smoke_only_data.parent / "labels").rglob("*.txt") for r in f.read_text().splitlines()]
    assert rows and {r.split()[0] for r in rows} == {"0"}


def test_label_path_follows_ultralytics_rule():
    assert label_path(Path("/d/images/train/a.jpg")) == Path("/d/labels/train/a.txt")


@pytest.fixture
def dataset_copy(fire_smoke_data, tmp_path) -> Path:
    shutil.copytree(fire_smoke_data.parent, tmp_path / "ds")
    return tmp_path / "ds" / "data.yaml"


def test_missing_split_path_is_named(dataset_copy):
    shutil.rmtree(dataset_copy.parent / "images" / "val")
    with pytest.raises(InputError, match=r"val path does not exist: .*images/val"):
        preflight(dataset_copy)


def test_empty_split_is_reported(dataset_copy):
    for f in (dataset_copy.parent / "images" / "train").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="the train split is empty"):
        preflight(dataset_copy)


def test_class_id_out_of_range_names_the_file(dataset_copy):
    bad = dataset_copy.parent / "labels" / "train" / "train_00002.txt"
    bad.write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(
        InputError,
        match=r"1 of 24 images have problems.*class id out of range: .*train_00002\.txt:1 "
        r"\(class 5\) \(fix the labels or add the class to 'names:'\)",
    ):
        preflight(dataset_copy)


def test_malformed_label_line_names_the_file(dataset_copy):
    bad = dataset_copy.parent / "labels" / "val" / "val_00001.txt"
    bad.write_text("0 0.5 0.5\n")
    with pytest.raises(InputError, match=r"1 malformed label: .*val_00001\.txt:1 \(each line must be"):
        preflight(dataset_copy)


def test_preflight_never_writes_into_the_dataset(fire_smoke_data):
    before = _digest(fire_smoke_data.parent)
    preflight(fire_smoke_data)
    assert _digest(fire_smoke_data.parent) == before


def test_a_teacher_without_the_datasets_classes_names_both_lists():
    with pytest.raises(InputError) as e:
        teacher_classes(["fire", "flame"], ["smoke", "fire"], {}, "t.pt", "d.yaml")
    assert "['fire', 'flame']" in str(e.value) and "['smoke', 'fire']" in str(e.value)
    assert "knows no class 'smoke'" in str(e.value)
    assert teacher_classes(["smoke", "fire"], ["smoke", "fire"], {}, "t.pt", "d.yaml").identical


def _jpeg_without_end_marker(path: Path) -> None:
    """A JPEG that decodes whole but does not end in its end marker (bytes after it), which ultralytics re-saves."""
    data = path.read_bytes()
    assert data.endswith(b"\xff\xd9")
    path.write_bytes(data + b"\x00\x00")


def _jpeg_cut_in_half(path: Path) -> None:
    """Half the file: PIL's header check passes, the decode fails, and ultralytics would drop it as corrupt."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_preflight_counts_every_problem_and_honours_the_tolerated_fraction(dataset_copy, tmp_path):
    root = dataset_copy.parent
    (root / "labels" / "train" / "train_00001.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # class id >= nc
    (root / "labels" / "train" / "train_00003.txt").write_text("0 0.5 1.5 0.1 0.1\n")  # y outside 0..1
    (root / "images" / "train" / "train_00004.jpg").write_bytes(b"not an image")
    shutil.copyfile(root / "images" / "train" / "train_00005.jpg", root / "images" / "val" / "copy.jpg")
    _jpeg_without_end_marker(root / "images" / "train" / "train_00006.jpg")
    _jpeg_cut_in_half(root / "images" / "train" / "train_00007.jpg")
    with pytest.raises(InputError, match=r"5 of 25 images have problems \(20\.0% > train\.max_bad_fraction 10\.0%\)"):
        preflight(dataset_copy, max_bad_fraction=0.10)
    info = preflight(dataset_copy, max_bad_fraction=0.2, report=tmp_path / "preflight.json")
    assert {k: len(v) for k, v in info.problems.items()} == {
        "class_id_out_of_range": 1,
        "coordinates_out_of_range": 1,
        "unreadable_image": 2,
        "duplicate_image": 1,
        "truncated_jpeg": 1,
    }
    assert info.bad_fraction == pytest.approx(5 / 25)
    assert any("train_00007.jpg (OSError: image file is truncated" in p for p in info.problems["unreadable_image"])
    assert [Path(p).name for p in info.bad_images if "train_0000" in p] == [f"train_0000{i}.jpg" for i in (1, 3, 4, 7)]
    report = json.loads((tmp_path / "preflight.json").read_text())
    assert "copy.jpg (same bytes as" in report["problems"]["duplicate_image"][0]


def test_mirror_takes_the_writes_and_the_dataset_keeps_its_bytes(dataset_copy, tmp_path):
    root = dataset_copy.parent
    _jpeg_without_end_marker(root / "images" / "train" / "train_00006.jpg")
    before = _digest(root)
    mirrored = mirror(dataset_copy, tmp_path / "mirror")
    m = mirrored.parent
    linked = m / "images" / "train" / "train_00000.jpg"
    assert linked.is_symlink() and linked.resolve() == (root / "images" / "train" / "train_00000.jpg").resolve()
    assert not (m / "images" / "train" / "train_00006.jpg").is_symlink(), "a truncated JPEG is copied, not linked"
    assert (m / "labels" / "train" / "train_00000.txt").read_text() == (
        root / "labels" / "train" / "train_00000.txt"
    ).read_text()
    assert preflight(mirrored).names == ["smoke", "fire"]
    assert _digest(root) == before


def test_synthetic_distractor_frames_are_smoke_free_and_small_plumes_are_small(tmp_path):
    only_distractors = synthesize(
        tmp_path / "d", train_images=6, val_images=2, imgsz=96, seed=1, distractor_frames=1.0, small_plumes=0
    ).parent
    assert all(not p.read_text().strip() for p in only_distractors.rglob("*.txt")), "smoke-free: no labels"
    plumes = synthesize(
        tmp_path / "p", train_images=6, val_images=2, imgsz=96, seed=1, distractor_frames=0, small_plumes=1.0
    ).parent
    for label in plumes.rglob("*.txt"):
        rows = [r.split() for r in label.read_text().splitlines() if r.startswith("0 ")]  # smoke
        areas = [float(r[3]) * float(r[4]) for r in rows]
        assert areas and min(areas) < 0.01, f"{label.name}: a small, distant plume"
    plain = synthesize(
        tmp_path / "n", train_images=6, val_images=2, imgsz=96, seed=1, distractor_frames=0, small_plumes=0
    ).parent
    same = [
        p.name
        for p in (plain / "images" / "train").iterdir()
        if p.read_bytes() == (plumes / "images" / "train" / p.name).read_bytes()
    ]
    assert same == [], "every frame got its plume"
