"""The camera runtime (camera.py, detect.py): torch-free, the metadata it insists on, the same detections as
ultralytics' predictor, the detect command's files and exit codes, and temporal confirmation of alarms."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, unseal
from wildfire_kd.edge.alarms import AlarmRule, Confirmer
from wildfire_kd.edge.boxes import Detection, decode, nms
from wildfire_kd.errors import InputError

# --- NMS and decoding against ultralytics' own (fast, no model) ------------------------------------------------


def _random_output(seed: int, nc: int = 2, anchors: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(20, 300, (2, anchors))
    wh = rng.uniform(5, 80, (2, anchors))
    scores = rng.uniform(0, 1, (nc, anchors)) ** 3  # mostly low, a few confident
    return np.concatenate([xy, wh, scores]).astype(np.float32)


@pytest.mark.parametrize(("seed", "n", "tied"), [(0, 300, False), (1, 300, False), (2, 1500, False), (3, 1500, True)])
def test_nms_keeps_what_torchvision_keeps(seed, n, tied):
    import torch
    import torchvision

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100 if n < 1000 else 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if tied:  # equal scores: the order among them decides what is kept
        scores = np.round(scores, 2)
    ours = nms(boxes, scores, 0.5)
    theirs = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize(("seed", "conf", "iou"), [(0, 0.25, 0.7), (1, 0.05, 0.5), (2, 0.5, 0.45)])
def test_decode_gives_ultralytics_non_max_suppression(seed, conf, iou):
    import torch
    from ultralytics.utils.nms import non_max_suppression

    output = _random_output(seed)
    boxes, scores, classes = decode(output, conf, iou)
    (theirs,) = non_max_suppression(torch.from_numpy(output[None]), conf_thres=conf, iou_thres=iou)
    theirs = theirs.numpy()
    assert len(boxes) == len(theirs) > 0
    assert np.allclose(boxes, theirs[:, :4], atol=1e-4) and np.allclose(scores, theirs[:, 4])
    assert np.array_equal(classes, theirs[:, 5].astype(int))


# --- the runtime on real exported files --------------------------------------------------------------------------


RUNTIME_MODELS = {"onnxruntime": "student.onnx", "openvino": "student_openvino_model", "ncnn": "student_ncnn_model"}
OTHER_RUNTIMES = {
    "onnxruntime": {"openvino", "ncnn"},
    "openvino": {"onnxruntime", "ncnn"},
    "ncnn": {"onnxruntime", "openvino"},
}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", list(RUNTIME_MODELS))
def test_the_runtime_imports_and_runs_without_torch_ultralytics_yaml_or_pydantic(
    runtime, exported, learnt_data, tmp_path
):
    """Each runtime alone: torch, ultralytics, yaml, pydantic and the two other runtimes blocked."""
    blocked = {"torch", "torchvision", "ultralytics", "yaml", "pydantic", "typer", *OTHER_RUNTIMES[runtime]}
    model = exported / RUNTIME_MODELS[runtime]
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from wildfire_kd.edge.cli import main\n"
        f"code = main(['--model', {str(model)!r}, {str(learnt_data.parent / 'images' / 'val')!r},"
        f" '--out', {str(tmp_path / 'out')!r}])\n"
        "print('MODULES', sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'ultralytics'}))\n"
        "sys.exit(code)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MODULES []" in r.stdout and "detection(s)" in r.stdout
    assert (tmp_path / "out" / "detections.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("folder", "variant"),
    [("student_openvino_model", "fp32"), ("student_bf16_openvino_model", "bf16"), ("student_ncnn_model", "fp32"),
     ("student_fp16_ncnn_model", "fp16")],
)  # fmt: skip
def test_detect_gives_the_same_detections_in_every_runtime(folder, variant, exported, learnt_data):
    """OpenVINO and NCNN against onnxruntime, frame by frame through the camera path, at the variant's parity bounds."""
    import cv2

    from wildfire_kd.config import ParitySettings
    from wildfire_kd.edge.model import CameraModel

    tol = ParitySettings().for_variant(variant)
    reference, other = CameraModel(exported / "student.onnx"), CameraModel(exported / folder)
    assert other.runtime.runtime != reference.runtime.runtime
    problems, compared = [], 0
    for image_path in sorted((learnt_data.parent / "images" / "val").glob("*.jpg")):
        image = cv2.imread(str(image_path))
        ref = reference.detect(image, conf=0.25)
        ours = other.detect(image, conf=0.25)
        compared += len(ref)
        boxes = np.array([d.box for d in ref]).reshape(-1, 4)
        confs, classes = np.array([d.confidence for d in ref]), np.array([d.class_id for d in ref])
        problems += [
            f"{image_path.name}: {m}" for m in _match(ours, boxes, confs, classes, tol.det_iou, tol.det_conf_atol)
        ]
    assert compared > 0 and problems == [], problems


def _match(
    ours: list[Detection],
    boxes: np.ndarray,
    confs: np.ndarray,
    classes: np.ndarray,
    iou_bound: float,
    conf_bound: float,
) -> list[str]:
    """Every reference detection has one of ours with the same class, IoU >= bound and |Δconf| <= bound, and
    the counts are equal; returns the problems."""
    from wildfire_kd.edge.boxes import box_iou

    problems = [] if len(ours) == len(boxes) else [f"{len(ours)} detections against {len(boxes)}"]
    if ours and len(boxes):
        ious = box_iou(boxes, np.array([d.box for d in ours]))
        for i in range(len(boxes)):
            same = [j for j, d in enumerate(ours) if d.class_id == classes[i]]
            j = max(same, key=lambda j: ious[i, j], default=None)
            if j is None or ious[i, j] < iou_bound or abs(ours[j].confidence - confs[i]) > conf_bound:
                problems.append(f"reference #{i} (class {classes[i]}, conf {confs[i]:.4f}) unmatched")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["student.onnx", "student_fp16.onnx", "student_int8.onnx"])
def test_detect_gives_the_pipelines_detections(variant, exported, learnt_model, learnt_data):
    """fp32 and fp16 against the PyTorch student through ultralytics' predictor (parity's bounds); int8, whose
    numbers differ from PyTorch by design (parity judges it by mAP), against ultralytics' predictor on the same file."""
    import cv2
    from ultralytics import YOLO

    from wildfire_kd.config import ParitySettings
    from wildfire_kd.edge.model import CameraModel

    tol = ParitySettings().for_variant("fp16" if variant == "student_fp16.onnx" else "fp32")
    bounds = (tol.det_iou, tol.det_conf_atol)
    camera = CameraModel(exported / variant)
    reference = YOLO(str(exported / variant) if variant == "student_int8.onnx" else str(learnt_model), task="detect")
    problems, compared = [], 0
    for image_path in sorted((learnt_data.parent / "images" / "val").glob("*.jpg")):
        image = cv2.imread(str(image_path))
        ours = camera.detect(image, conf=0.25, iou=0.7)
        r = reference.predict(image, imgsz=camera.imgsz, conf=0.25, iou=0.7, verbose=False)[0].boxes
        compared += len(r)
        problems += [
            f"{image_path.name}: {m}"
            for m in _match(ours, r.xyxy.numpy(), r.conf.numpy(), r.cls.numpy().astype(int), *bounds)
        ]
    assert compared >= 10, "a trained student: detections to compare"
    assert problems == []


@pytest.mark.slow
def test_a_file_without_our_metadata_or_with_another_input_size_is_refused(exported, learnt_data, tmp_path):
    import onnx

    bare = onnx.load(str(exported / "student.onnx"))
    kept = [p for p in bare.metadata_props if not p.key.startswith("wildfire_kd.")]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    images = str(learnt_data.parent / "images" / "val")
    r = run_cli("detect", "--onnx", str(tmp_path / "bare.onnx"), images, "--out", str(tmp_path / "o1"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'bare.onnx'} has no wildfire_kd metadata (names, imgsz, input missing)" in r.stderr
    other = unseal(onnx.load(str(exported / "student.onnx")))  # as a file exported before seals (an edit: exit 2)
    for prop in other.metadata_props:
        if prop.key == "wildfire_kd.imgsz":
            prop.value = "[320, 320]"
    onnx.save(other, str(tmp_path / "other.onnx"))
    r = run_cli("detect", "--onnx", str(tmp_path / "other.onnx"), images, "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "does not take the 320x320 frames its metadata names" in r.stderr


@pytest.mark.slow
def test_detect_writes_one_line_per_image_and_reports_an_unreadable_one(exported, learnt_data, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for image in sorted((learnt_data.parent / "images" / "val").glob("*.jpg"))[:4]:
        shutil.copyfile(image, frames / image.name)
    (frames / "zz_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    r = run_cli("detect", "--onnx", str(exported / "student.onnx"), str(frames), "--out", str(out), "--save-images")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 image(s) (1 unreadable)" in r.stdout
    rows = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [Path(row["file"]).name for row in rows] == sorted(p.name for p in frames.iterdir())
    assert rows[-1] == {"file": str(frames / "zz_broken.jpg"), "error": "unreadable image (OpenCV could not decode it)"}
    good = rows[:-1]
    assert all(row["width"] == row["height"] == 128 for row in good)  # the synthetic val images
    assert sum(len(row["detections"]) for row in good) > 0, "a trained student finds the synthetic plumes"
    d = next(d for row in good for d in row["detections"])
    assert set(d) == {"class_id", "name", "confidence", "box"} and d["name"] in ("smoke", "fire") and len(d["box"]) == 4
    assert len(list((out / "images").glob("*.jpg"))) == 4
    # nothing readable at all: exit 2
    for image in frames.glob("val_*.jpg"):
        image.unlink()
    r = run_cli("detect", "--onnx", str(exported / "student.onnx"), str(frames), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "none of the 1 image(s) could be read" in r.stderr


# --- temporal confirmation ------------------------------------------------------------------------------------------


def _det(box, class_id=0, conf=0.6) -> Detection:
    return Detection(class_id, ["smoke", "fire"][class_id], conf, tuple(float(v) for v in box))


def test_a_persistent_plume_raises_one_alarm_once_confirmed():
    confirmer = Confirmer(AlarmRule(k=3, n=5, iou=0.3))
    alarms = []
    for t in range(8):  # a plume that grows a little every frame
        alarms += confirmer.update(f"f{t}", [_det((50 - t, 60 - t, 70 + t, 90))])
    assert [a.frame for a in alarms] == ["f2"], "confirmed in the 3rd frame, then not raised again"
    assert alarms[0].confirmed_by == ["f0", "f1", "f2"]


def test_single_frame_blobs_raise_no_alarm():
    confirmer = Confirmer(AlarmRule(k=3, n=5, iou=0.3))
    rng = np.random.default_rng(0)
    alarms = []
    for t in range(30):  # glare and cloud blobs: each in one frame, somewhere else every time
        x, y = rng.uniform(0, 200, 2)
        alarms += confirmer.update(f"f{t}", [_det((x, y, x + 20, y + 20))] if t % 2 else [])
    assert alarms == []


def test_confirmation_needs_the_same_class_and_k_of_the_last_n_frames():
    confirmer = Confirmer(AlarmRule(k=2, n=3, iou=0.3))
    box = (10, 10, 40, 40)
    assert confirmer.update("a", [_det(box, class_id=0)]) == []
    assert confirmer.update("b", [_det(box, class_id=1)]) == [], "fire does not confirm smoke"
    assert confirmer.update("c", []) == []
    assert confirmer.update("d", []) == []
    assert confirmer.update("e", [_det(box, class_id=1)]) == [], "'b' left the last 3 frames"
    assert [a.frame for a in confirmer.update("f", [_det(box, class_id=1)])] == ["f"]
    with pytest.raises(InputError, match="k <= n"):
        Confirmer(AlarmRule(k=4, n=3))


def test_the_default_rule_sums_confidence_and_a_user_rule_starts_from_its_own_modes_defaults():
    from wildfire_kd.edge.alarms import DEFAULT_RULE, rule_with

    assert rule_with(None, None) == DEFAULT_RULE
    assert (DEFAULT_RULE.mode, DEFAULT_RULE.n, DEFAULT_RULE.threshold, DEFAULT_RULE.floor) == ("score", 5, 1.25, 0.1)
    # a faint plume (0.3 a frame) alarms in the 5th frame: 1.5 >= 1.25; a one-frame glare at 0.9 never does
    confirmer, box = Confirmer(), (10, 10, 40, 40)
    assert [bool(confirmer.update(f"p{i}", [_det(box, conf=0.3)])) for i in range(5)] == [False] * 4 + [True]
    glare = Confirmer()
    assert glare.update("g0", [_det(box, conf=0.9)]) == [] and glare.update("g1", []) == []
    # k (or mode count) means counting, from count's own defaults: no floor 0.1, no hysteresis carried over
    assert rule_with(None, {"k": 2, "n": 3}) == AlarmRule("count", n=3, k=2)
    assert rule_with(None, {"mode": "count"}) == AlarmRule("count")
    assert rule_with(None, {"threshold": 2.0}) == AlarmRule("score", n=5, threshold=2.0, floor=0.1, release=0.5)
    shipped = AlarmRule("count", n=8, k=5, floor=0.4)  # what validate chose and export wrote into the model
    assert rule_with(shipped, {"n": 10}) == AlarmRule("count", n=10, k=5, floor=0.4)
    with pytest.raises(InputError, match="k <= n"):
        rule_with(None, {"k": 4, "n": 3})


@pytest.mark.slow
def test_detect_uses_the_operating_point_shipped_in_the_file(exported, learnt_data, tmp_path):
    import onnx

    from wildfire_kd.edge.model import CameraModel

    model = unseal(onnx.load(str(exported / "student.onnx")))  # as exported before seals (sealed, an edit: exit 2)
    prop = model.metadata_props.add()
    prop.key, prop.value = "wildfire_kd.operating_point", json.dumps({"conf": 0.61, "rule": "max_f1"})
    onnx.save(model, str(tmp_path / "with_point.onnx"))
    assert CameraModel(tmp_path / "with_point.onnx").default_conf == 0.61
    assert CameraModel(exported / "student.onnx").default_conf == 0.25  # exported without a validation beside it
    images = str(learnt_data.parent / "images" / "val")
    r = run_cli("detect", "--onnx", str(tmp_path / "with_point.onnx"), images, "--out", str(tmp_path / "a"))
    assert r.returncode == 0 and "at conf 0.61" in r.stdout
    r = run_cli(
        "detect", "--onnx", str(tmp_path / "with_point.onnx"), images, "--out", str(tmp_path / "b"), "--conf", "0.3"
    )
    assert r.returncode == 0 and "at conf 0.3" in r.stdout


def test_annotated_copies_of_frames_with_one_name_in_two_folders_keep_apart(tmp_path):
    from wildfire_kd.edge.detect import annotated_names

    files = [tmp_path / "cam1" / "0001.jpg", tmp_path / "cam2" / "0001.jpg", tmp_path / "cam2" / "0002.jpg"]
    names = annotated_names(files)
    assert [str(names[f]) for f in files] == ["cam1/0001.jpg", "cam2/0001.jpg", "cam2/0002.jpg"]
    one_folder = [tmp_path / "cam1" / "0001.jpg", tmp_path / "cam1" / "0002.jpg"]
    assert [str(n) for n in annotated_names(one_folder).values()] == ["0001.jpg", "0002.jpg"]


def test_both_entry_points_take_threads():
    from typer.testing import CliRunner

    from wildfire_kd.cli import app
    from wildfire_kd.edge.cli import _parser

    assert _parser().parse_args(["--onnx", "m.onnx", "f", "--threads", "2"]).threads == 2
    assert "--threads" in CliRunner().invoke(app, ["detect", "--help"]).stdout
