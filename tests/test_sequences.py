"""Time to detection, judged the way camera networks judge it: sequences as data, the figures against hand-computed
values, the alarm rules, masks, the alarm rule shipped in the model file, tiling for distant plumes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_FIGURES, make_blob_onnx, make_onnx, opts, run_cli, sets
from wildfire_kd.edge.alarms import AlarmRule, Confirmer
from wildfire_kd.edge.boxes import Detection
from wildfire_kd.edge.camera import CameraSettings
from wildfire_kd.edge.sequence_figures import choose_rule, detections_of, early_plume_recall, figures
from wildfire_kd.edge.sequences import Frame, Sequence, load_sequences
from wildfire_kd.errors import InputError

PLUME = (100.0, 100.0, 120.0, 130.0)


def _det(box=PLUME, conf=0.6, class_id=0) -> Detection:
    return Detection(class_id, "smoke", conf, tuple(float(v) for v in box))


def _sequence(name: str, frames: int, onset: int | None, interval: float = 60.0) -> Sequence:
    made = [
        Frame(Path(f"{name}/{i:03d}.jpg"), 1000.0 + i * interval, onset is not None and i >= onset, PLUME)
        for i in range(frames)
    ]
    return Sequence(name, Path(name), made, None if onset is None else 1000.0 + onset * interval)


# --- sequences as data ------------------------------------------------------------------------------------------------


def test_synth_writes_tower_camera_sequences_in_the_sequence_format(tmp_path):
    r = run_cli("synth", str(tmp_path / "s"), "--sequence", "--sequences", "4", "--frames", "12", "--width", "256")
    assert r.returncode == 0, r.stderr
    sequences = load_sequences(tmp_path / "s")
    assert [s.name for s in sequences] == ["clear_01", "clear_03", "fire_00", "fire_02"]
    fire = next(s for s in sequences if s.name == "fire_00")
    assert fire.positive and fire.interval == 60 and len(fire.frames) == 12
    smoky = [f for f in fire.frames if f.smoke]
    assert smoky[0].time == fire.onset and all(f.box for f in smoky)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in smoky]
    assert areas[-1] > areas[0], "the plume grows"
    assert (smoky[0].box[2] - smoky[0].box[0]) < 0.03 * 256, "a few pixels wide at onset"
    clear = next(s for s in sequences if s.name == "clear_01")
    assert not clear.positive and not any(f.smoke for f in clear.frames)
    assert (tmp_path / "s" / "fire_00" / "mask.png").is_file()
    from PIL import Image

    with Image.open(fire.frames[0].path) as image:
        assert image.size == (256, 192)
    # the fire sequences' names alone say the same (HPWREN's <unix>_<±seconds from ignition>)
    (tmp_path / "s" / "fire_00" / "frames.csv").unlink()
    by_name = load_sequences(tmp_path / "s")[2]
    assert by_name.onset == fire.onset and [f.smoke for f in by_name.frames] == [f.smoke for f in fire.frames]


def test_a_frames_csv_with_iso_times_and_a_bad_one(tmp_path):
    from PIL import Image

    folder = tmp_path / "cam"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32)).save(folder / f"{i}.jpg")
    rows = [
        "file,time,smoke",
        "0.jpg,2024-06-05T14:00:00,0",
        "1.jpg,2024-06-05T14:02:00,1",
        "2.jpg,2024-06-05T14:04:00,1",
    ]
    (folder / "frames.csv").write_text("\n".join(rows) + "\n")
    (sequence,) = load_sequences(folder)
    assert sequence.interval == 120 and sequence.onset == sequence.frames[1].time
    (folder / "frames.csv").write_text("file,time,smoke\n0.jpg,yesterday,0\n")
    with pytest.raises(InputError, match="time 'yesterday' is neither seconds nor ISO 8601"):
        load_sequences(folder)


# --- the figures, against hand-computed values ---------------------------------------------------------------------


def test_time_to_detection_false_alarms_per_day_and_sequence_f1_equal_hand_computed_values():
    seqs = [_sequence("a", 10, onset=4), _sequence("b", 10, onset=2), _sequence("c", 20, onset=None)]
    rule = AlarmRule("count", n=3, k=2, iou=0.3)
    detections = {
        # a: the plume from onset (frame 4): 2 of 3 frames at frame 5, 1 frame (1 minute) after onset
        "a": [[] for _ in range(4)] + [[_det()] for _ in range(6)],
        # b: never seen
        "b": [[] for _ in range(10)],
        # c (smoke-free): a glare at (10, 10) in frames 3 and 4 (one alarm), again in 15 and 17 (another)
        "c": [[_det((10, 10, 30, 30))] if i in (3, 4, 15, 17) else [] for i in range(20)],
    }
    f = figures(seqs, detections, CameraSettings(rule, static=None, events=None))  # the alarm rule alone
    assert (f.true_positives, f.false_negatives, f.false_positives, f.true_negatives) == (1, 1, 1, 0)
    assert f.precision == 0.5 and f.recall == 0.5 and f.f1 == pytest.approx(0.5) and f.false_positive_rate == 1.0
    assert f.median_minutes_to_detection == 1.0 and f.median_frames_to_detection == 1
    # smoke-free time: a 4 frames + b 2 frames + c 20 frames, a minute each = 26 minutes; 2 false alarms
    assert f.smoke_free_hours == pytest.approx(26 / 60)
    assert f.false_alarms == 2 and f.false_alarms_per_camera_day == pytest.approx(2 / (26 * 60 / 86_400))
    a = f.per_sequence[0]
    assert a.detected and a.minutes_to_detection == 1.0 and a.false_alarms == 0 and a.alarms[0]["on_plume"]
    assert f.alerts_per_fire == 1.0 and f.judged_by_frame_labels == 0
    # the camera's whole path: the glare recurs at one place for 12 minutes without growing, so static suppression
    # takes it before its second alarm (the first came before it was learnt)
    whole = figures(seqs, detections, rule)
    assert whole.false_alarms == 1 and whole.suppressed == 2 and whole.recall == 0.5, "frames 15 and 17 suppressed"


def test_early_plume_recall_counts_the_frames_of_the_first_minutes_in_which_the_plume_is_touched():
    seqs = [_sequence("a", 10, onset=2), _sequence("c", 5, onset=None)]
    off = (300, 300, 320, 320)
    # a: onset at frame 2; the first 3 minutes are frames 2, 3, 4: touched in 2 (0.6), off it in 3, faint in 4 (0.2)
    found = {"a": [[], [], [_det()], [_det(off)], [_det(conf=0.2)]] + [[_det()]] * 5, "c": [[_det()]] * 5}
    assert early_plume_recall(seqs, found, minutes=3) == pytest.approx(2 / 3)
    assert early_plume_recall(seqs, found, minutes=3, conf=0.5) == pytest.approx(1 / 3)
    assert early_plume_recall([seqs[1]], found, minutes=3) is None, "no fire, no figure"


def test_an_alarm_before_onset_or_off_the_plume_is_a_false_alarm():
    seq = _sequence("a", 8, onset=4)
    off = (300, 300, 320, 320)
    detections = {"a": [[_det()] for _ in range(3)] + [[]] + [[_det(off)] for _ in range(4)]}
    f = figures([seq], detections, AlarmRule("count", n=2, k=2))
    assert f.false_alarms == 2 and f.recall == 0.0, "before onset on the plume's place, and after it elsewhere"


def test_a_detector_that_fires_on_every_frame_gets_the_expected_false_alarm_rate(tmp_path):
    from wildfire_kd.edge.model import CameraModel

    r = run_cli("synth", str(tmp_path / "s"), "--sequence", "--sequences", "4", "--frames", "10", "--width", "128")
    assert r.returncode == 0, r.stderr
    sequences = [s for s in load_sequences(tmp_path / "s") if not s.positive]  # two smoke-free sequences
    always = CameraModel(make_onnx(tmp_path / "always.onnx", [(0, 0.9, (40.0, 40.0, 60.0, 60.0))], imgsz=64))
    found = detections_of(always, sequences, conf=0.25, iou=0.7, masks=False)
    f = figures(sequences, found, AlarmRule())  # 3 of 5: one alarm each, at the third frame, held while it stays
    assert f.false_alarms == 2 and f.false_positive_rate == 1.0
    assert f.false_alarms_per_camera_day == pytest.approx(2 / (20 * 60 / 86_400)), "2 alarms in 20 camera-minutes"


# --- the alarm rules ---------------------------------------------------------------------------------------------


def _alarm_frames(rule: AlarmRule, frames: list[list[Detection]]) -> list[str]:
    confirmer = Confirmer(rule)
    return [a.frame for i, dets in enumerate(frames) for a in confirmer.update(str(i), dets)]


def test_summed_confidence_adds_up_a_faint_plume_below_the_per_frame_floor_of_counting():
    faint = [[_det(conf=0.3)] for _ in range(6)]
    assert _alarm_frames(AlarmRule("count", n=5, k=3, floor=0.4), faint) == [], "never above a 0.4 floor"
    assert _alarm_frames(AlarmRule("score", n=5, threshold=0.55, floor=0.1), faint) == ["1"], "0.3 + 0.3 >= 0.55"
    assert _alarm_frames(AlarmRule("count", n=5, k=3, floor=0.25), faint) == ["2"], "counting: the third frame"


def test_hysteresis_holds_an_alarm_through_a_flicker():
    frames = [[_det()], [_det()], [_det()], [], [], [_det()], [_det()], [_det()]]
    assert _alarm_frames(AlarmRule("count", n=3, k=3), frames) == ["2", "7"], "it alarms again after two empty frames"
    assert _alarm_frames(AlarmRule("count", n=3, k=3, release=0.3), frames) == ["2"], "held at >= 0.3 x 3 frames"


def test_the_rule_search_picks_the_most_fires_within_the_false_alarm_budget():
    seqs = [_sequence("fire", 12, onset=2), _sequence("clear", 60, onset=None)]
    glare = (10, 10, 30, 30)
    detections = {
        "fire": [[]] * 2 + [[_det(conf=0.35)] for _ in range(10)],
        "clear": [[_det(glare, conf=0.9)] if i % 10 == 0 else [] for i in range(60)],  # one bright frame in ten
    }
    rule, f = choose_rule(seqs, detections, budget=1.0, floor=0.05)
    assert f.recall == 1.0 and f.false_alarms == 0, "found the faint fire, ignored the single-frame glare"
    assert not (rule.mode == "count" and rule.k == 1), "one frame is never enough here"
    strict, g = choose_rule(seqs, {**detections, "fire": [[]] * 12}, budget=1.0, floor=0.05)
    assert g.recall == 0.0 and g.false_alarms == 0, "nothing to find: the quietest rule"


# --- masks, tiles, and the rule in the model file --------------------------------------------------------------------


def test_a_masked_region_never_alarms(tmp_path):
    from PIL import Image

    from wildfire_kd.edge.masks import CameraMask

    Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), ((0, 80), (0, 80)))).save(tmp_path / "mask.png")
    mask = CameraMask(tmp_path)
    kept, dropped = mask.keep([_det((2, 2, 18, 18)), _det((50, 50, 70, 70))], 100, 100)
    assert dropped == 1 and [d.box for d in kept] == [(50.0, 50.0, 70.0, 70.0)]
    (tmp_path / "mask.json").write_text(json.dumps({"ignore": [[[40, 40], [80, 40], [80, 80], [40, 80]]]}))
    assert CameraMask(tmp_path).keep([_det((50, 50, 70, 70))], 100, 100) == ([], 1)
    (tmp_path / "mask.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a camera mask"):
        CameraMask(tmp_path)


def test_tiled_inference_finds_a_small_plume_that_the_whole_frame_pass_misses(tmp_path):
    from wildfire_kd.edge.model import CameraModel

    model = CameraModel(make_blob_onnx(tmp_path / "blob.onnx", imgsz=640))
    frame = np.full((2304, 3072, 3), 110, np.uint8)
    frame[1200:1224, 2000:2024] = (0, 0, 255)  # a 24 px red plume in a 3072 px frame: 5 px at 640
    assert model.detect(frame, conf=0.5) == []
    found = model.detect(frame, conf=0.5, tiles=4)
    assert found and all(1990 <= d.box[0] and d.box[2] <= 2030 and 1190 <= d.box[1] <= 1230 for d in found)


def test_the_alarm_rule_round_trips_through_the_model_file_and_detect_uses_it(tmp_path):
    from wildfire_kd.edge.detect import detect
    from wildfire_kd.edge.model import CameraModel

    rule = AlarmRule("score", n=4, threshold=1.2, floor=0.1, release=0.5)
    path = make_onnx(tmp_path / "m.onnx", [(0, 0.9, (8.0, 8.0, 40.0, 40.0))], alarm=rule.to_dict())
    assert CameraModel(path).alarm_rule == rule
    frames = tmp_path / "cam"
    frames.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (64, 64)).save(frames / f"{i}.jpg")
    result = detect(path, [str(frames)], tmp_path / "out", sequence=True)
    assert result.alarm_rule == rule.to_dict() and result.alarms == 1, "0.9 + 0.9 >= 1.2 at the second frame"
    result = detect(path, [str(frames)], tmp_path / "out2", sequence=True, alarm={"threshold": 2.5})
    assert result.alarms == 1 and result.alarm_rule["threshold"] == 2.5
    bad = make_onnx(tmp_path / "bad.onnx", [], alarm={"mode": "vote"})
    with pytest.raises(InputError, match="mode 'vote'"):
        CameraModel(bad)


def test_export_writes_the_rule_validate_chose_into_the_model_file(tmp_path):
    from wildfire_kd.export import run_context

    run = tmp_path / "run"
    (run / "validation").mkdir(parents=True)
    (run / "weights").mkdir()
    rule = AlarmRule("count", n=8, k=3, floor=0.2).to_dict()
    report = {
        "out_dir": "v", "passed": True, "classes": ["smoke"], "teacher": MODEL_FIGURES, "student": MODEL_FIGURES,
        "retention": {}, "teacher_agreement": None, "gates": [], "data": {"split": "val"}, "sequences": {"rule": rule},
    }  # fmt: skip
    (run / "validation" / "validation.json").write_text(json.dumps(report))
    assert run_context(run / "weights" / "best.pt")["alarm"] == rule


# --- validate over sequences ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_reports_sequences_and_robustness_and_their_gates_fail_naming_themselves(
    learnt_model, learnt_data, tmp_path
):
    r = run_cli("synth", str(tmp_path / "s"), "--sequence", "--sequences", "2", "--frames", "8", "--width", "192")
    assert r.returncode == 0, r.stderr
    clear = tmp_path / "s" / "clear_01"
    (clear / "notes.txt").write_text("not a frame")  # listed in frames.csv: it must be said, not skipped in silence
    with open(clear / "frames.csv", "a", encoding="utf-8") as f:
        f.write("notes.txt,1717290000,0\n")
    r = run_cli(
        "validate",
        *opts(student=str(learnt_model), teacher=str(learnt_model), data=str(learnt_data), out=str(tmp_path / "v")),
        "--sequences", str(tmp_path / "s"), "--imgsz", "128", "--device", "cpu",
        *sets("validation.latency_runs=2", "validation.min_map50_retention=null",
              "validation.min_robust_recall_retention=2"),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    assert "validation.min_robust_recall_retention" in r.stderr.strip().splitlines()[-1]
    report = json.loads((tmp_path / "v" / "validation.json").read_text())
    seq = report["sequences"]
    assert AlarmRule.from_dict(seq["rule"]) and seq["student"]["sequences"] == 2 and seq["student"]["positives"] == 1
    assert seq["student"]["recall"] == seq["teacher"]["recall"], "one model on both sides, one rule"
    assert "student_without_masks" in seq
    assert seq["unreadable_frames"] == [str(clear / "notes.txt")]
    assert [p["profile"] for p in seq["profiles"]] == [{"imgsz": 128, "tiles": 1}, {"imgsz": 128, "tiles": "auto"}]
    assert seq["profile"] in [p["profile"] for p in seq["profiles"]]
    assert set(report["robustness"]["perturbed"]) >= {"jpeg_q30", "downscale_x0.5", "contrast_x0.6"}
    text = (tmp_path / "v" / "validation.md").read_text()
    assert re.search(r"## Camera sequences: .*, alarm rule ", text) and "## Robustness" in text


def test_every_sequence_gate_turns_the_verdict_naming_itself():
    from wildfire_kd.config import ValidateSettings
    from wildfire_kd.validate.gates import gates
    from wildfire_kd.validate.result import ModelFigures

    student = ModelFigures("w", "0", 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.3)
    settings = ValidateSettings(
        min_map50_retention=None,
        max_minutes_to_detection=5,
        max_false_alarms_per_camera_day=1,
        min_sequence_recall=0.9,
        min_robust_recall_retention=0.8,
    )
    sequences = {"student": {"median_minutes_to_detection": 7.0, "false_alarms_per_camera_day": 2.5, "recall": 0.5}}
    checked = gates(settings, student, {"map50": 1.0}, None, {}, {"worst_student_retention": 0.6}, sequences)
    assert [(g.name, g.passed) for g in checked] == [
        ("validation.max_minutes_to_detection", False),
        ("validation.max_false_alarms_per_camera_day", False),
        ("validation.min_sequence_recall", False),
        ("validation.min_robust_recall_retention", False),
    ]
    assert checked[0].describe() == "validation.max_minutes_to_detection = 7, required <= 5"
    fine = {"student": {"median_minutes_to_detection": 3.0, "false_alarms_per_camera_day": 0.5, "recall": 1.0}}
    assert all(
        g.passed for g in gates(settings, student, {"map50": 1.0}, None, {}, {"worst_student_retention": 0.9}, fine)
    )


def test_detect_over_several_cameras_uses_each_folders_mask(tmp_path, monkeypatch):
    from PIL import Image

    from wildfire_kd.edge import detect as detect_module
    from wildfire_kd.edge.detect import detect
    from wildfire_kd.edge.masks import CameraMask

    model = make_onnx(tmp_path / "m.onnx", [(0, 0.9, (8.0, 8.0, 40.0, 40.0))])
    for camera in ("masked", "open"):
        (tmp_path / camera).mkdir()
        for i in range(4):
            Image.new("RGB", (64, 64)).save(tmp_path / camera / f"{i}.jpg")
    Image.new("L", (64, 64), 255).save(tmp_path / "masked" / "mask.png")  # this camera ignores its whole view
    result = detect(model, [str(tmp_path / "masked"), str(tmp_path / "open")], tmp_path / "out", sequence=True)
    assert result.masked == 4 and result.alarms == 1
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert [a["camera"] for a in alerts] == [str(tmp_path / "open")]
    shutil.rmtree(tmp_path / "out")
    masks_read = []  # each camera's mask files are read once, not once per frame
    monkeypatch.setattr(detect_module, "CameraMask", lambda folder: masks_read.append(folder) or CameraMask(folder))
    detect(model, [str(tmp_path / "masked"), str(tmp_path / "open")], tmp_path / "out", sequence=True)
    assert sorted(masks_read) == [tmp_path / "masked", tmp_path / "open"]
    shutil.rmtree(tmp_path / "out")
