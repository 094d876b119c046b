"""Hostile inputs, as a new user or a broken CI job would give them: every one gets its exit code (2 for bad input),
one line naming the offending file or key and the fix, no traceback, and no input file changes by a byte.

Each case copies a small pristine dataset and teacher into its own folder, damages one thing, runs the real CLI
in a fresh interpreter, and hashes every input file before and after.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SMOKE_CONFIG, invoke_cli, make_onnx, make_teacher  # noqa: E402

pytestmark = pytest.mark.slow


@dataclass
class Case:
    id: str
    damage: Callable[[Path], None]  # gets the inputs folder (data/ with data.yaml, teacher.pt, config.yaml)
    args: list[str]  # {data} {teacher} {config} {inp} {out} are filled in
    code: int
    says: list[str]  # substrings of the one-line message; {inp} is filled in


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(inp: Path) -> None:
        path = inp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


def _truncate(rel: str, keep: float) -> Callable[[Path], None]:
    def damage(inp: Path) -> None:
        data = (inp / rel).read_bytes()
        (inp / rel).write_bytes(data[: int(len(data) * keep)])

    return damage


def _teacher(names: list[str], cfg: str = "yolov8s.yaml") -> Callable[[Path], None]:
    return lambda inp: make_teacher(inp / "teacher.pt", names, cfg=cfg) and None


def _planted_pickle(inp: Path) -> None:
    import torch

    torch.save({"model": _Plant(str(inp.parent / "PLANTED_CODE_RAN"))}, inp / "teacher.pt")


class _Plant:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls pathlib.Path.touch(marker): proof that code ran
        return (Path.touch, (Path(self.marker),))


def _tiny_image(inp: Path) -> None:
    from PIL import Image

    Image.new("RGB", (6, 6), (120, 120, 120)).save(inp / "data" / "images" / "train" / "tiny.jpg")


def _nothing(inp: Path) -> None:
    pass


def _frames_in(rel: str) -> Callable[[Path], None]:
    """A camera's folder of frames (copies of val images) at ``rel``."""

    def damage(inp: Path) -> None:
        (inp / rel).mkdir(parents=True)
        for image in sorted((inp / "data" / "images" / "val").glob("*.jpg"))[:3]:
            shutil.copyfile(image, inp / rel / image.name)

    return damage


def _onnx_metadata(key: str, text: str) -> Callable[[Path], None]:
    """tiny.onnx with its wildfire_kd.<key> metadata replaced by ``text`` as stored (not JSON-encoded)."""

    def damage(inp: Path) -> None:
        import onnx

        model = onnx.load(str(inp / "tiny.onnx"))
        next(p for p in model.metadata_props if p.key == f"wildfire_kd.{key}").value = text
        onnx.save(model, str(inp / "tiny.onnx"))

    return damage


def _users_dataset(inp: Path) -> None:
    """The pristine data as a user's own dataset: not marked as written by synth."""
    from wildfire_kd.layout import SYNTH_MARKER

    (inp / "data" / SYNTH_MARKER).unlink()
    (inp / "data" / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0: smoke, 1: fire}\n")


def _unlabel_val(inp: Path) -> None:
    for label in (inp / "data" / "labels" / "val").glob("*.txt"):
        label.write_text("")


def _teacher_into(rel: str) -> Callable[[Path], None]:
    def damage(inp: Path) -> None:
        (inp / rel).parent.mkdir(parents=True)
        shutil.move(inp / "teacher.pt", inp / rel)

    return damage


TRAIN = ["train", "--config", "{config}", "--data", "{data}", "--teacher", "{teacher}", "--out", "{out}"]
VALIDATE = ["validate", "--student", "{teacher}", "--teacher", "{teacher}", "--data", "{data}", "--out", "{out}"]
EXPORT_INT8 = ["export", "--weights", "{teacher}", "--out", "{out}", "--int8", "--data", "{data}"]
LBL0 = "data/labels/train/train_00000.txt"
IMG0 = "data/images/train/train_00000.jpg"
CASES = [
    Case(
        "missing_data_yaml",
        _nothing,
        ["train", "--data", "{inp}/nope.yaml", "--teacher", "{teacher}"],
        2,
        ["dataset file not found: {inp}/nope.yaml"],
    ),
    Case(
        "binary_data_yaml",
        _write("data/data.yaml", bytes(range(256)) * 4),
        TRAIN,
        2,
        ["{inp}/data/data.yaml: not UTF-8 text"],
    ),
    Case(
        "binary_config",
        _write("config.yaml", b"\xff\xfe\x00garbage\x80" * 20),
        TRAIN,
        2,
        ["{inp}/config.yaml: not UTF-8 text", "--config"],
    ),
    Case(
        "invalid_yaml_config",
        _write("config.yaml", "train: [unclosed\n"),
        TRAIN,
        2,
        ["{inp}/config.yaml: not valid YAML"],
    ),
    Case(
        "config_not_a_mapping",
        _write("config.yaml", "- train\n- distill\n"),
        TRAIN,
        2,
        ["{inp}/config.yaml: expected a mapping of sections"],
    ),
    Case(
        "typo_key_in_config",
        _write("config.yaml", "train:\n  lr00: 0.01\n"),
        TRAIN,
        2,
        ["{inp}/config.yaml: unknown key 'train.lr00'; did you mean 'train.lr0'?"],
    ),
    Case(
        "typo_key_in_set",
        _nothing,
        [*TRAIN, "--set", "train.lr00=0.01"],
        2,
        ["--set train.lr00=0.01: unknown key 'train.lr00'; did you mean 'train.lr0'?"],
    ),
    Case(
        "bad_value_in_set",
        _nothing,
        [*TRAIN, "--set", "train.lr0=abc"],
        2,
        ["--set train.lr0=abc: 'train.lr0': Input should be a valid number"],
    ),
    Case(
        "imgsz_not_a_stride_multiple",
        _nothing,
        [*TRAIN, "--imgsz", "100"],
        2,
        ["train.imgsz", "multiple of 32", "e.g. 96"],
    ),
    Case(
        "missing_teacher",
        lambda inp: (inp / "teacher.pt").unlink(),
        TRAIN,
        2,
        ["teacher weights not found: {inp}/teacher.pt"],
    ),
    Case(
        "truncated_teacher",
        _truncate("teacher.pt", 0.5),
        TRAIN,
        2,
        ["teacher weights {inp}/teacher.pt are not an ultralytics checkpoint"],
    ),
    Case(
        "text_file_as_teacher",
        _write("teacher.pt", "not a checkpoint\n"),
        TRAIN,
        2,
        ["teacher weights {inp}/teacher.pt are not an ultralytics checkpoint"],
    ),
    Case(
        "planted_pickle_teacher",
        _planted_pickle,
        TRAIN,
        2,
        ["teacher weights {inp}/teacher.pt refused", "train.teacher_sha256=", "train.allow_unsafe_weights"],
    ),
    Case(
        "teacher_pin_mismatch",
        _nothing,
        [*TRAIN, "--set", f"train.teacher_sha256={'0' * 64}"],
        2,
        ["teacher weights {inp}/teacher.pt have sha256", "but the config pins 000000"],
    ),
    Case(
        "teacher_classes_unrelated",
        _teacher(["person", "car"]),
        TRAIN,
        2,
        ["['person', 'car']", "['smoke', 'fire']", "{inp}/teacher.pt", "distill.class_map"],
    ),
    Case(
        "p6_teacher_for_dense",
        _teacher(["smoke", "fire"], "yolov8n-p6.yaml"),
        TRAIN,
        2,
        ["{inp}/teacher.pt", "[8.0, 16.0, 32.0, 64.0]", "distill.method=pseudo"],
    ),
    Case(
        "class_id_out_of_range",
        _write(LBL0, "7 0.5 0.5 0.2 0.2\n"),
        TRAIN,
        2,
        ["1 class id out of range: {inp}/data/labels/train/train_00000.txt:1 (class 7)"],
    ),
    Case(
        "malformed_label_line",
        _write(LBL0, "0 0.5 zero 0.2\n"),
        TRAIN,
        2,
        ["1 malformed label: {inp}/data/labels/train/train_00000.txt:1"],
    ),
    Case(
        "coordinates_out_of_range",
        _write(LBL0, "0 0.5 1.7 0.2 0.2\n"),
        TRAIN,
        2,
        ["1 coordinates out of range: {inp}/data/labels/train/train_00000.txt:1"],
    ),
    Case(
        "zero_byte_image", _write(IMG0, b""), TRAIN, 2, ["1 unreadable image: {inp}/data/images/train/train_00000.jpg"]
    ),
    Case(
        "jpeg_cut_in_half",
        _truncate(IMG0, 0.5),
        TRAIN,
        2,
        ["1 unreadable image: {inp}/data/images/train/train_00000.jpg", "image file is truncated"],
    ),
    Case(
        "image_ultralytics_drops",
        _tiny_image,
        TRAIN,
        2,
        ["ultralytics could not use 1 of the train images", "tiny.jpg", "remove or replace"],
    ),
    Case(
        "empty_val_split",
        lambda inp: shutil.rmtree(inp / "data" / "images" / "val") or (inp / "data" / "images" / "val").mkdir(),
        TRAIN,
        2,
        ["the val split is empty", "under {inp}/data/images/val"],
    ),
    Case(
        "no_names_in_data_yaml",
        _write("data/data.yaml", "train: images/train\nval: images/val\n"),
        TRAIN,
        2,
        ["{inp}/data/data.yaml: 'names' must list the class names"],
    ),
    Case(
        "output_under_a_file",
        _nothing,
        [*TRAIN[:-1], "{inp}/config.yaml/runs"],
        2,
        ["output folder {inp}/config.yaml/runs cannot be created: {inp}/config.yaml is a file"],
    ),
    Case(
        "validate_without_teacher",
        _nothing,
        ["validate", "--student", "{teacher}", "--data", "{data}"],
        2,
        ["validate needs --teacher"],
    ),
    Case(
        "export_missing_weights",
        _nothing,
        ["export", "--weights", "{inp}/none.pt", "--out", "{out}"],
        2,
        ["student weights not found: {inp}/none.pt"],
    ),
    Case(
        "parity_planted_pickle",
        _planted_pickle,
        ["parity", "--weights", "{teacher}", "--onnx", "{inp}/x.onnx", "--out", "{out}"],
        2,
        ["student weights {inp}/teacher.pt refused"],
    ),
    Case(
        "parity_pin_mismatch",
        _nothing,
        [
            "parity",
            "--weights",
            "{teacher}",
            "--onnx",
            "{inp}/x.onnx",
            "--out",
            "{out}",
            "--set",
            f"train.student_sha256={'f' * 64}",
        ],
        2,
        ["student weights {inp}/teacher.pt have sha256"],
    ),
    # --- round 3: nothing the user gave is overwritten; every entry point checks its values ---
    Case(
        "detect_annotated_copies_over_the_frames",
        _frames_in("cam7/images"),
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/cam7/images", "--out", "{inp}/cam7", "--save-images"],
        2,
        ["would be written over {inp}/cam7/images", "never overwrites an input"],
    ),
    Case(
        "synth_into_a_dataset",
        _users_dataset,
        ["synth", "{inp}/data"],
        2,
        ["{inp}/data is not empty and not an output of `wildfire-kd synth`"],
    ),
    Case(
        "synth_force_into_a_dataset",
        _users_dataset,
        ["synth", "{inp}/data", "--force"],
        2,
        ["{inp}/data is not empty and not an output of `wildfire-kd synth`"],
    ),
    Case("synth_empty_class_list", _nothing, ["synth", "{out}", "--classes", ""], 2, ["synth.classes", "got ['']"]),
    Case(
        "synth_sequence_shorter_than_a_fire",
        _nothing,
        ["synth", "{out}", "--sequence", "--frames", "5"],
        2,
        ["--frames 5", "at least 8 frames"],
    ),
    Case(
        "detect_onnx_is_a_folder",
        _nothing,
        ["detect", "--onnx", "{inp}/data", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/data is not a model the camera runtime knows"],
    ),
    Case(
        "onnx_imgsz_is_text",
        _onnx_metadata("imgsz", '"big"'),
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/tiny.onnx: metadata wildfire_kd.imgsz is 'big'"],
    ),
    Case(
        "onnx_metadata_not_json",
        _onnx_metadata("names", "smoke, fire"),
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/tiny.onnx: metadata wildfire_kd.names is not JSON"],
    ),
    Case(
        "negatives_folder_empty",
        lambda inp: (inp / "empty").mkdir(),
        [*VALIDATE, "--set", "validation.negatives={inp}/empty"],
        2,
        ["validation.negatives {inp}/empty: no images"],
    ),
    Case(
        "negatives_folder_without_images",
        _write("notes/readme.txt", "frames go here"),
        [*VALIDATE, "--set", "validation.negatives={inp}/notes"],
        2,
        ["validation.negatives {inp}/notes: no images"],
    ),
    Case("val_split_without_labels", _unlabel_val, VALIDATE, 2, ["the val split has no labelled image"]),
    Case(
        "validate_out_inside_the_dataset",
        _nothing,
        [*VALIDATE[:-2], "--out", "{inp}/data/images/val"],
        2,
        ["is inside the dataset {inp}/data/images/val", "never writes into a dataset"],
    ),
    Case(
        "train_out_inside_the_dataset",
        _nothing,
        [*TRAIN[:-2], "--out", "{inp}/data/labels/train"],
        2,
        ["is inside the dataset {inp}/data/labels/train"],
    ),
    Case(
        "build_teacher_inside_the_folder_it_clears",
        _teacher_into("build/train/weights/teacher.pt"),
        [
            "build",
            "--config",
            "{config}",
            "--data",
            "{data}",
            "--teacher",
            "{inp}/build/train/weights/teacher.pt",
            "--out",
            "{inp}/build",
        ],
        2,
        ["{inp}/build/train would be written over {inp}/build/train/weights/teacher.pt"],
    ),
    Case(
        "int8_op_type_unknown",
        _nothing,
        [*EXPORT_INT8, "--set", "export.int8_op_types=[Bogus]"],
        2,
        ["export.int8_op_types names no ONNX operator: 'Bogus'", "Conv, MatMul"],
    ),
    Case(
        "int8_op_type_lowercase",
        _nothing,
        [*EXPORT_INT8, "--set", "export.int8_op_types=[conv]"],
        2,
        ["'conv' (did you mean 'Conv'?)"],
    ),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from wildfire_kd.synth import synthesize

    root = tmp_path_factory.mktemp("pristine")
    synthesize(root / "data", train_images=16, val_images=8, imgsz=96, seed=3)
    make_teacher(root / "teacher.pt", ["smoke", "fire"])
    shutil.copyfile(SMOKE_CONFIG, root / "config.yaml")
    (root / "x.onnx").write_bytes(b"not reached: the weights are refused first")
    make_onnx(root / "tiny.onnx", [(0, 0.9, (8.0, 8.0, 40.0, 40.0))])
    return root


def _hashes(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_there_are_at_least_forty_hostile_inputs():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, pristine: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(pristine, inp)
    case.damage(inp)
    before = _hashes(inp)
    fill = {
        "data": str(inp / "data" / "data.yaml"),
        "teacher": str(inp / "teacher.pt"),
        "config": str(inp / "config.yaml"),
        "inp": str(inp),
        "out": str(out),
    }
    r = invoke_cli(*[a.format(**fill) for a in case.args], cwd=tmp_path)
    message = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode == case.code, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert errors == [message], f"one error line, the last one:\n{r.stderr[-3000:]}"
    for expected in case.says:
        assert expected.format(**fill) in message, f"{expected.format(**fill)!r} not in {message!r}"
    assert _hashes(inp) == before, "an input file changed"
    assert not (tmp_path / "PLANTED_CODE_RAN").exists(), "a pickle in a weights file ran code"
