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


# --- round 4 (issue 30): the inputs that crashed (exit 3) or hung, and files edited after export ---


def _sequence_csv(text: str | bytes) -> Callable[[Path], None]:
    """seq/cam: three frames (copies of val images) and a frames.csv of ``text`` ({f0} {f1} {f2}: the frames)."""

    def damage(inp: Path) -> None:
        cam = inp / "seq" / "cam"
        cam.mkdir(parents=True)
        names = []
        for image in sorted((inp / "data" / "images" / "val").glob("*.jpg"))[:3]:
            shutil.copyfile(image, cam / image.name)
            names.append(image.name)
        body = text if isinstance(text, bytes) else text.format(f0=names[0], f1=names[1], f2=names[2]).encode()
        (cam / "frames.csv").write_bytes(body)

    return damage


def _camera_with_mask(polygons: str) -> Callable[[Path], None]:
    def damage(inp: Path) -> None:
        _frames_in("cam")(inp)
        (inp / "cam" / "mask.json").write_text('{"ignore": ' + polygons + "}")

    return damage


def _symlink_loop(inp: Path) -> None:
    (inp / "loop_a").symlink_to(inp / "loop_b")
    (inp / "loop_b").symlink_to(inp / "loop_a")


def _module_that_exits(inp: Path) -> None:
    (inp / "blocks.py").write_text("import sys\nclass Block:\n    pass\nsys.exit(5)\n")


def _model_folder(kind: str, edit: Callable[[dict], None] | None = None, remove: str | None = None):
    """A model folder as export seals it (files of ``kind``: openvino or ncnn, the network stand-ins), then its
    metadata edited by ``edit`` (or one of its files removed), as a hand on the camera might."""

    def damage(inp: Path) -> None:
        import json

        from wildfire_kd.edge import metadata as model_metadata
        from wildfire_kd.edge.letterbox import INPUT_CONTRACT
        from wildfire_kd.formats import write_sidecar

        folder = inp / f"student_{kind}_model"
        folder.mkdir()
        files = {"openvino": ("student.xml", "student.bin"), "ncnn": ("model.ncnn.param", "model.ncnn.bin")}[kind]
        for name in files:
            (folder / name).write_bytes(b"stand-in for the network: the seal is checked before it is read")
        meta = {"names": ["smoke", "fire"], "imgsz": [96, 96], "input": INPUT_CONTRACT, "variant": "fp32",
                "operating_point": {"conf": 0.3}}  # fmt: skip
        write_sidecar(folder, meta)
        sidecar = folder / "metadata.yaml"
        raw = json.loads(sidecar.read_text())
        ours = model_metadata.decode(raw)
        if edit is not None:
            edit(ours)
            raw.update(model_metadata.encode(ours))
            sidecar.write_text(json.dumps(raw, indent=1))
        if remove is not None:
            (folder / remove).unlink()

    return damage


def _sealed_onnx_edited(inp: Path) -> None:
    import onnx

    from wildfire_kd.onnx_files import save_checked

    model = onnx.load(str(inp / "tiny.onnx"))
    save_checked(model, inp / "sealed.onnx")  # as export writes it: sealed
    model = onnx.load(str(inp / "sealed.onnx"))
    prop = model.metadata_props.add()  # a shipped confidence threshold slipped in by hand
    prop.key, prop.value = "wildfire_kd.operating_point", '{"conf": 0.9}'
    onnx.save(model, str(inp / "sealed.onnx"))


def _pool(inp: Path) -> None:
    from wildfire_kd.synth import synthesize

    synthesize(inp / "pooled", train_images=1, val_images=1, imgsz=96, seed=77, unlabeled_images=4)


def _pool_with_a_val_frame(inp: Path) -> None:
    _pool(inp)
    val = sorted((inp / "data" / "images" / "val").glob("*.jpg"))[0]
    shutil.copyfile(val, inp / "pooled" / "unlabeled" / "copy_of_val.jpg")


TRAIN = ["train", "--config", "{config}", "--data", "{data}", "--teacher", "{teacher}", "--out", "{out}"]
VALIDATE = ["validate", "--student", "{teacher}", "--teacher", "{teacher}", "--data", "{data}", "--out", "{out}"]
EXPORT_INT8 = ["export", "--weights", "{teacher}", "--out", "{out}", "--int8", "--data", "{data}"]
SEQUENCES = [*VALIDATE, "--sequences", "{inp}/seq"]
DETECT_CAM = ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/cam", "--out", "{out}", "--sequence"]
CSV_HEAD = "file,time,smoke,x1,y1,x2,y2\n"
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
    # --- round 4 (issue 30) ---
    Case(
        "detect_tiles_huge",
        _frames_in("cam"),
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/cam", "--out", "{out}", "--tiles", "1000000000"],
        2,
        ["--tiles 1000000000: 1 (the whole frame only) to 16"],
    ),  # fmt: skip
    Case(
        "detect_threads_huge",
        _frames_in("cam"),
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/cam", "--out", "{out}", "--threads", "1000000"],
        2,
        ["--threads 1000000: 1 to 256"],
    ),  # fmt: skip
    Case(
        "sequence_row_without_smoke",
        _sequence_csv("file,time,smoke\n{f0},0\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: no smoke"],
    ),  # fmt: skip
    Case(
        "sequence_row_with_extra_cells",
        _sequence_csv("file,time,smoke\n{f0},0,0,1,2,3,4,5,6\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: more cells than the header's 3 columns"],
    ),  # fmt: skip
    Case(
        "sequence_box_not_a_number",
        _sequence_csv(CSV_HEAD + "{f0},0,1,left,2,30,40\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: the box", "is not four numbers"],
    ),  # fmt: skip
    Case(
        "sequence_box_inverted",
        _sequence_csv(CSV_HEAD + "{f0},0,1,50,50,10,10\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: the box [50.0, 50.0, 10.0, 10.0] is not a box with x1 < x2"],
    ),  # fmt: skip
    Case(
        "sequence_box_nan",
        _sequence_csv(CSV_HEAD + "{f0},0,1,nan,1,20,20\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: the box [nan, 1.0, 20.0, 20.0]"],
    ),  # fmt: skip
    Case(
        "sequence_time_nan",
        _sequence_csv("file,time,smoke\n{f0},nan,0\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv:2: time 'nan' is not a finite number"],
    ),  # fmt: skip
    Case(
        "sequence_csv_not_utf8",
        _sequence_csv(b"file,time,smoke\n\xff\xfe\x80.jpg,0,0\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv: not UTF-8 text"],
    ),  # fmt: skip
    Case(
        "sequence_csv_header_only",
        _sequence_csv("file,time,smoke\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv: a header and no frames"],
    ),  # fmt: skip
    Case(
        "sequence_csv_wrong_header",
        _sequence_csv("file;time;smoke\n{f0};0;0\n"),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/frames.csv: its header is ['file;time;smoke']"],
    ),  # fmt: skip
    Case(
        "sequence_smoke_region_inverted",
        lambda inp: (
            _sequence_csv("file,time,smoke\n{f0},0,1\n")(inp)
            or (inp / "seq" / "cam" / "smoke.json").write_text('{"region": [9, 9, 1, 1]}')
        ),
        SEQUENCES,
        2,
        ["{inp}/seq/cam/smoke.json: region [9.0, 9.0, 1.0, 1.0] is not a box"],
    ),  # fmt: skip
    Case(
        "ultralytics_value_not_a_number",
        _nothing,
        [*TRAIN, "--set", "train.ultralytics={{mosaic: abc}}"],
        2,
        ["train.ultralytics.mosaic: 'abc' refused by ultralytics"],
    ),  # fmt: skip
    Case(
        "ultralytics_value_out_of_range",
        _nothing,
        [*TRAIN, "--set", "train.ultralytics={{mosaic: 5.0}}"],
        2,
        ["train.ultralytics.mosaic: 5.0 refused by ultralytics", "between 0.0 and 1.0"],
    ),  # fmt: skip
    Case(
        "detect_on_a_symlink_loop",
        _symlink_loop,
        ["detect", "--onnx", "{inp}/tiny.onnx", "{inp}/loop_a", "--out", "{out}"],
        2,
        ["{inp}/loop_a"],
    ),  # fmt: skip
    Case(
        "teacher_module_exits",
        _module_that_exits,
        [*TRAIN, "--teacher-modules", "{inp}/blocks.py"],
        2,
        ["train.teacher_modules: {inp}/blocks.py failed to import", "sys.exit(5)"],
    ),  # fmt: skip
    Case(
        "export_imgsz_negative",
        _nothing,
        ["export", "--weights", "{teacher}", "--out", "{out}", "--imgsz", "-64"],
        2,
        ["export.imgsz", "between 32 and 4096"],
    ),  # fmt: skip
    Case(
        "export_imgsz_huge",
        _nothing,
        ["export", "--weights", "{teacher}", "--out", "{out}", "--set", "export.imgsz=100000"],
        2,
        ["export.imgsz", "between 32 and 4096"],
    ),  # fmt: skip
    Case(
        "export_imgsz_zero",
        _nothing,
        ["export", "--weights", "{teacher}", "--out", "{out}", "--set", "export.imgsz=0"],
        2,
        ["export.imgsz", "between 32 and 4096"],
    ),  # fmt: skip
    Case("train_imgsz_huge", _nothing, [*TRAIN, "--imgsz", "100000"], 2, ["train.imgsz", "between 32 and 4096"]),
    Case(
        "validate_imgsz_negative",
        _nothing,
        [*VALIDATE, "--imgsz", "-64"],
        2,
        ["validation.imgsz", "between 32 and 4096"],
    ),  # fmt: skip
    Case(
        "parity_imgsz_negative",
        _nothing,
        ["parity", "--weights", "{teacher}", "--onnx", "{inp}/tiny.onnx", "--out", "{out}", "--imgsz", "-64"],
        2,
        ["--imgsz -64: must be between 32 and 4096"],
    ),  # fmt: skip
    Case(
        "openvino_operating_point_edited",
        _model_folder("openvino", lambda m: m.update(operating_point={"conf": 0.9})),
        ["detect", "--model", "{inp}/student_openvino_model", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/student_openvino_model: its files or metadata changed after export"],
    ),  # fmt: skip
    Case(
        "ncnn_imgsz_edited",
        _model_folder("ncnn", lambda m: m.update(imgsz=[64, 64])),
        ["detect", "--model", "{inp}/student_ncnn_model", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/student_ncnn_model: its files or metadata changed after export"],
    ),  # fmt: skip
    Case(
        "ncnn_weights_gone",
        _model_folder("ncnn", remove="model.ncnn.bin"),
        ["detect", "--model", "{inp}/student_ncnn_model", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/student_ncnn_model"],
    ),  # fmt: skip
    Case(
        "onnx_operating_point_edited",
        _sealed_onnx_edited,
        ["detect", "--model", "{inp}/sealed.onnx", "{inp}/data/images/val", "--out", "{out}"],
        2,
        ["{inp}/sealed.onnx: its files or metadata changed after export"],
    ),  # fmt: skip
    Case(
        "mask_polygon_nan",
        _camera_with_mask("[[[0, 0], [NaN, 0], [10, 10]]]"),
        DETECT_CAM,
        2,
        ["{inp}/cam/mask.json: polygon 0 has a point that is not a frame pixel"],
    ),  # fmt: skip
    Case(
        "mask_polygon_huge",
        _camera_with_mask("[[[0, 0], [1e12, 0], [10, 10]]]"),
        DETECT_CAM,
        2,
        ["{inp}/cam/mask.json: polygon 0 has a point that is not a frame pixel"],
    ),  # fmt: skip
    Case(
        "mask_polygon_64bit",
        _camera_with_mask("[[[0, 0], [9223372036854775807, 0], [10, 10]]]"),
        DETECT_CAM,
        2,
        ["{inp}/cam/mask.json: polygon 0"],
    ),  # fmt: skip
    Case(
        "class_map_to_a_name_the_teacher_lacks",
        _nothing,
        [*TRAIN, "--set", "distill.class_map={{smoke: Smoke}}"],
        2,
        ["knows no class 'Smoke'", "it does know 'smoke' itself: drop that mapping"],
    ),  # fmt: skip
    Case(
        "camera_profile_tiles_zero",
        _nothing,
        [*VALIDATE, "--set", "validation.camera_profiles=[{{tiles: 0}}]"],
        2,
        ["validation.camera_profiles.0.tiles"],
    ),  # fmt: skip
    Case(
        "static_memory_not_json",
        lambda inp: _frames_in("cam")(inp) or (inp / "memory.json").write_text("[oops"),
        [*DETECT_CAM, "--static-memory", "{inp}/memory.json"],
        2,
        ["--static-memory {inp}/memory.json: not readable JSON"],
    ),  # fmt: skip
    Case(
        "learn_static_without_the_cameras_folder",
        _frames_in("cam"),
        [*DETECT_CAM, "--learn-static", "{inp}/data"],
        2,
        ["--learn-static {inp}/data: no folder cam/"],
    ),
    Case(
        "unlabeled_pool_missing",
        _nothing,
        [*TRAIN, "--unlabeled", "{inp}/nowhere"],
        2,
        ["train.unlabeled: {inp}/nowhere does not exist"],
    ),  # fmt: skip
    Case(
        "unlabeled_pool_holds_a_val_frame",
        _pool_with_a_val_frame,
        [*TRAIN, "--unlabeled", "{inp}/pooled/unlabeled"],
        2,
        ["{inp}/pooled/unlabeled/copy_of_val.jpg has the same bytes as"],
    ),  # fmt: skip
    Case(
        "unlabeled_pool_without_kd",
        _pool,
        [*TRAIN, "--unlabeled", "{inp}/pooled/unlabeled", "--set", "distill.response=false"],
        2,
        ["train.unlabeled", "set distill.response=true"],
    ),  # fmt: skip
    Case(
        "synth_unlabeled_negative", _nothing, ["synth", "{out}", "--unlabeled", "-5"], 2, ["synth.unlabeled_images"]
    ),  # fmt: skip
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


def test_there_are_at_least_seventy_five_hostile_inputs():
    assert len(CASES) >= 75 and len({c.id for c in CASES}) == len(CASES)  # 45 before round 4 (issue 30)


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
