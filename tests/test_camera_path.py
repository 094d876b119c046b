"""The camera path after the detector (issue 29): static suppression, one event per fire, the camera profile in the
model file, alarms judged on the smoke, and the generator that makes these failures."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke_cli, make_blob_onnx, make_onnx, run_cli
from wildfire_kd.edge.alarms import AlarmRule
from wildfire_kd.edge.boxes import Detection
from wildfire_kd.edge.camera import CameraPath, CameraSettings
from wildfire_kd.edge.events import EventRule
from wildfire_kd.edge.static import StaticMemory, StaticRule
from wildfire_kd.errors import InputError

RULE = AlarmRule("score", n=5, threshold=1.25, floor=0.1, release=0.5)  # the default


def _det(box, conf=0.6, class_id=0) -> Detection:
    return Detection(class_id, "smoke", conf, tuple(float(v) for v in box))


def _run(path: CameraPath, boxes: list[list[tuple]], conf: float = 0.6):
    """Frames a minute apart; returns every frame's outcome."""
    return [path.frame(f"{i:03d}", 60.0 * i, [_det(b, conf) for b in frame]) for i, frame in enumerate(boxes)]


def _alarm_frames(outcomes) -> list[int]:
    return [i for i, o in enumerate(outcomes) for _ in o.alarms]


# --- static suppression -----------------------------------------------------------------------------------------


def test_a_fixed_smoke_like_box_never_alarms_once_suppressed_and_one_that_grows_alarms():
    fixed = (100, 100, 140, 150)
    outcomes = _run(CameraPath("cam", CameraSettings(RULE)), [[fixed]] * 30)
    alarmed = _alarm_frames(outcomes)
    learnt = next(i for i, o in enumerate(outcomes) if o.suppressed)
    assert learnt == 10, "seen for 10 minutes without growing: static"
    assert all(i < learnt for i in alarmed), f"no alarm once suppressed (alarms at {alarmed})"
    assert all(o.suppressed and not o.seen for o in outcomes[learnt:])
    assert "static: seen at this place in 11 frames over 10 min, not growing" == outcomes[learnt].suppressed[0].reason
    # the same artefact, then after 20 frames a fire there that grows: released, and it alarms
    grows = [[fixed]] * 20 + [[(100, 100 - 8 * k, 140 + 4 * k, 150)] for k in range(1, 11)]
    outcomes = _run(CameraPath("cam", CameraSettings(RULE)), grows)
    late = [i for i in _alarm_frames(outcomes) if i >= 20]
    assert late and late[0] <= 23, f"the growing box alarms within a few frames of growing (alarms {late})"
    assert any(o.seen for o in outcomes[20:]), "released: the alarm logic sees it again"


def test_a_box_that_drifts_off_its_spot_is_not_suppressed_and_the_time_limit_relearns():
    rule = StaticRule(minutes=5, max_hours=1.0)
    memory = StaticMemory(rule)
    for i in range(10):
        memory.filter(60.0 * i, [_det((10, 10, 50, 50))])
    kept, suppressed = memory.filter(600.0, [_det((10, 10, 50, 50)), _det((60, 10, 100, 50))])
    assert len(suppressed) == 1 and [d.box for d in kept] == [(60.0, 10.0, 100.0, 50.0)], "drifted: a new spot"
    kept, suppressed = memory.filter(600.0 + 3601, [_det((10, 10, 50, 50))])
    assert kept and not suppressed, "an online spot stays static an hour at most here: then it is learnt again"
    round_trip = StaticMemory.from_dict(json.loads(json.dumps(memory.to_dict())))
    assert round_trip.to_dict() == memory.to_dict()
    with pytest.raises(InputError, match="not a camera's static memory"):
        StaticMemory.from_dict({"rule": rule.to_dict(), "spots": [{"box": [1, 2]}]})
    with pytest.raises(InputError, match="growth 0"):
        StaticRule(growth=0)


def test_an_artefact_that_never_leaves_is_renewed_at_the_time_limit_and_raises_no_alarm_a_day():
    """A lens artefact seen every minute for 3 days (max_hours 24): suppressed from its 10th minute on, never
    unsuppressed at a time limit (that would be one false alarm per artefact per day); a fire growing there still
    releases it."""
    fixed = (100, 100, 140, 150)
    days = [[fixed]] * (3 * 24 * 60)
    outcomes = _run(CameraPath("cam", CameraSettings(RULE)), days)
    learnt = next(i for i, o in enumerate(outcomes) if o.suppressed)
    assert learnt == 10 and all(o.suppressed and not o.seen for o in outcomes[learnt:])
    assert all(i < learnt for i in _alarm_frames(outcomes))
    memory = StaticMemory(StaticRule(max_hours=24.0))
    for i in range(26 * 60):
        memory.filter(60.0 * i, [_det(fixed)])
    kept, _ = memory.filter(26 * 3600.0, [_det((100, 80, 150, 150))])  # after a renewal, it grows: released
    assert kept and memory.released == 1


def test_spots_seeded_from_smoke_free_frames_are_static_from_the_first_frame():
    memory = StaticMemory()
    for i in range(3):
        memory.learn(-180.0 + 60 * i, [_det((5, 5, 30, 30))])
    path = CameraPath("cam", CameraSettings(RULE), memory)
    outcomes = _run(path, [[(5, 5, 30, 30)]] * 8)
    assert _alarm_frames(outcomes) == [] and all(o.suppressed for o in outcomes)
    assert "in the camera's smoke-free frames" in outcomes[0].suppressed[0].reason


# --- one event per fire -----------------------------------------------------------------------------------------


def _rising_plume(frames: int = 30, start: int = 3) -> list[list[tuple]]:
    """A plume from frame ``start``: it widens, its top rises and it drifts right, so its last box shares nothing
    with its first (IoU-based identity breaks), with a frame missed now and then."""
    out: list[list[tuple]] = [[] for _ in range(start)]
    for k in range(frames - start):
        w, h, x, lift = 6 + 3 * k, 10 + 5 * k, 300 + 4 * k, max(0, k - 12) * 8
        out.append([] if k in (8, 9, 10, 17, 18, 19) else [(x, 400 - h - lift, x + w, 400 - lift)])
    return out


def test_a_rising_growing_plume_makes_one_event_with_updates_not_several_alarms():
    boxes = _rising_plume()
    first, last = next(b for f in boxes for b in f), [b for f in boxes for b in f][-1]
    assert last[1] > first[3] or last[3] < first[1] or last[0] > first[2], "its last box is off its first"
    bare = _run(CameraPath("cam", CameraSettings(RULE, static=None, events=None)), boxes)
    alerts = [a for o in bare for a in o.alerts]
    assert len(alerts) >= 3 and all(a.status == "opened" for a in alerts), "without events: an alert per re-alarm"
    grouped = _run(CameraPath("cam", CameraSettings(RULE)), boxes)
    alerts = [a for o in grouped for a in o.alerts]
    statuses = [a.status for a in alerts]
    assert statuses.count("opened") == 1 and statuses.count("updated") >= 2, statuses
    assert len({a.event for a in alerts}) == 1
    assert alerts[0].to_dict()["event"].startswith("cam-") and alerts[0].to_dict()["status"] == "opened"


def test_a_plume_of_many_boxes_is_one_event_with_one_alert_per_frame_at_most_and_news_only():
    """A detector that sees a plume as a grid of small boxes (each re-alarming, shifting, some parts staying put)
    must not flood the dispatcher: one event, at most one alert a frame, an update only when the extent changed."""
    frames = []
    for k in range(30):
        top = 400 - 8 * (k // 3)  # the plume's top rises one cell every 3 frames; its base cells stay put
        cells = [(x, y, x + 8, y + 8) for x in range(300, 332, 8) for y in range(top, 408, 8)]
        frames.append([c for i, c in enumerate(cells) if (i + k) % 5])  # a cell missed now and then
    outcomes = _run(CameraPath("cam", CameraSettings(RULE)), frames)
    alerts = [a for o in outcomes for a in o.alerts]
    assert [a.status for a in alerts].count("opened") == 1 and len({a.event for a in alerts}) == 1
    assert all(len(o.alerts) <= 1 for o in outcomes), [len(o.alerts) for o in outcomes]
    updates = [a for a in alerts if a.status == "updated"]
    assert 1 <= len(updates) <= 8 and all(a.reason == "grew or moved" for a in updates), [a.reason for a in alerts]
    tops = [a.detection.box[1] for a in alerts if a.status != "closed"]
    assert tops == sorted(tops, reverse=True) and tops[-1] < tops[0], "each update shows the plume higher"
    assert "closed" not in [a.status for a in alerts], "cells that stay put while the plume grows do not close it"


def test_two_fires_far_apart_are_two_events_and_an_event_closes_after_silence():
    path = CameraPath("cam", CameraSettings(RULE, events=EventRule(close_minutes=5)))
    a, b = (10, 300, 30, 330), (600, 300, 620, 330)
    outcomes = _run(path, [[a, b]] * 4 + [[]] * 10)
    alerts = [x for o in outcomes for x in o.alerts]
    assert [x.status for x in alerts].count("opened") == 2
    closed = [x for x in alerts if x.status == "closed"]
    assert len(closed) == 2 and "nothing confirmed on it for 5 min" in closed[0].reason


# --- found means found on the smoke -----------------------------------------------------------------------------


def test_an_alarm_off_the_smoke_region_is_false_and_frame_labels_alone_are_counted(tmp_path):
    from wildfire_kd.edge.sequence_figures import figures
    from wildfire_kd.edge.sequences import load_sequences

    for name in ("located", "labels_only"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(8):  # HPWREN names: smoke from ignition (frame 2) on
            (folder / f"{1_528_221_000 + 60 * i}_{(i - 2) * 60:+06d}.jpg").write_bytes(b"")
    (tmp_path / "located" / "smoke.json").write_text(json.dumps({"region": [500, 200, 700, 400]}))
    sequences = load_sequences(tmp_path)
    rocks = [[_det((100, 900, 140, 940))] for _ in range(8)]  # rocks at the bottom of the frame, from the start
    f = figures(sequences, {"located": rocks, "labels_only": rocks}, CameraSettings(RULE, static=None))
    labels_only, located = f.per_sequence  # in name order
    assert not located.detected and located.false_alarms == 1, "an alarm on the rocks is not the fire"
    assert labels_only.detected and labels_only.minutes_to_detection == 0.0, "frame labels alone: counted found"
    assert f.judged_by_frame_labels == 1
    (tmp_path / "located" / "smoke.json").write_text(json.dumps({"region": [5, 5, 1, 1]}))
    with pytest.raises(InputError, match="smoke.json: region .* is not a box"):
        load_sequences(tmp_path)


# --- the camera profile in the model file ------------------------------------------------------------------------


def test_automatic_tiles_follow_the_frames_size():
    from wildfire_kd.edge.model import auto_tiles

    assert [auto_tiles(w, h, 640) for w, h in ((640, 480), (1280, 960), (2048, 1536), (3072, 2048), (8000, 6000))] == [
        1,
        1,
        2,
        3,
        3,
    ]


def test_the_profile_round_trips_through_the_model_file_and_detect_uses_it(tmp_path):
    from PIL import Image

    from wildfire_kd.edge.detect import detect
    from wildfire_kd.edge.model import CameraModel, CameraProfile

    model = make_blob_onnx(tmp_path / "blob.onnx", imgsz=640, camera_profile={"imgsz": 640, "tiles": 4})
    assert CameraModel(model).profile == CameraProfile(640, 4)
    frames = tmp_path / "cam"
    frames.mkdir()
    frame = np.full((2304, 3072, 3), 110, np.uint8)
    frame[1200:1224, 2000:2024] = (255, 0, 0)  # a 24 px red plume (RGB here): 5 px at 640, seen with tiles
    Image.fromarray(frame).save(frames / "0.png")
    result = detect(model, [str(frames)], tmp_path / "out", conf=0.5)
    assert result.detections >= 1 and result.tiles == {"3072x2304": {"tiles": 4, "source": "the model file's "
                                                                      "camera profile"}}  # fmt: skip
    assert "4 tile(s) on 3072x2304 frames (the model file's camera profile)" in result.summary()
    result = detect(model, [str(frames)], tmp_path / "out1", conf=0.5, tiles=1)
    assert result.detections == 0 and result.tiles["3072x2304"]["source"] == "--tiles", "overridden: unseen"
    plain = make_blob_onnx(tmp_path / "plain.onnx", imgsz=640)
    result = detect(plain, [str(frames)], tmp_path / "out2", conf=0.5)
    assert result.tiles["3072x2304"]["tiles"] == 3 and "automatic" in result.tiles["3072x2304"]["source"]
    with pytest.raises(InputError, match="camera_profile is for 1024 px, the model takes 640"):
        CameraModel(make_blob_onnx(tmp_path / "bad.onnx", imgsz=640, camera_profile={"imgsz": 1024, "tiles": 2}))
    with pytest.raises(InputError, match="tiles 0"):
        CameraModel(make_blob_onnx(tmp_path / "bad2.onnx", imgsz=640, camera_profile={"imgsz": 640, "tiles": 0}))


def test_export_ships_the_profile_validate_chose_at_its_size(tmp_path):
    from conftest import MODEL_FIGURES
    from wildfire_kd.export import run_context

    run = tmp_path / "run"
    (run / "validation").mkdir(parents=True)
    (run / "weights").mkdir()
    profile = {"imgsz": 1024, "tiles": 1}
    report = {
        "out_dir": "v", "passed": True, "classes": ["smoke"], "teacher": MODEL_FIGURES, "student": MODEL_FIGURES,
        "retention": {}, "teacher_agreement": None, "gates": [], "data": {"split": "val"},
        "sequences": {"rule": AlarmRule().to_dict(), "profile": profile},
    }  # fmt: skip
    (run / "validation" / "validation.json").write_text(json.dumps(report))
    assert run_context(run / "weights" / "best.pt")["camera_profile"] == profile


@pytest.mark.slow
def test_the_profile_reaches_every_format_and_the_camera_reads_it(tmp_path, learnt_model, learnt_data):
    """ONNX, OpenVINO and NCNN: export writes the profile validate chose into each, and CameraModel reads it back."""
    from conftest import MODEL_FIGURES
    from wildfire_kd.edge.model import CameraModel, CameraProfile

    report = {
        "out_dir": "v", "passed": True, "classes": ["smoke", "fire"], "teacher": MODEL_FIGURES,
        "student": MODEL_FIGURES, "retention": {}, "teacher_agreement": None, "gates": [], "data": {"split": "val"},
        "sequences": {"rule": AlarmRule().to_dict(), "profile": {"imgsz": 160, "tiles": 2}},
    }  # fmt: skip
    (tmp_path / "validation.json").write_text(json.dumps(report))
    from wildfire_kd.config import ExportSettings
    from wildfire_kd.export import export

    settings = ExportSettings(formats=["onnx", "openvino", "ncnn"])
    result = export(learnt_model, tmp_path / "e", settings, validation_report=tmp_path / "validation.json")
    assert result.imgsz == 160, "exported at the profile's size"
    for f in result.files:
        model = CameraModel(f.path)
        assert model.profile == CameraProfile(160, 2) and model.imgsz == 160, f.path


# --- detect --sequence end to end: memory, events, the options of both entry points --------------------------------


def _camera_folder(tmp_path: Path, frames: int) -> Path:
    from PIL import Image

    folder = tmp_path / "frames" / "cam1"
    folder.mkdir(parents=True)
    for i in range(frames):
        Image.new("RGB", (64, 64)).save(folder / f"{i:03d}.jpg")
    return folder


def test_detect_suppresses_a_static_box_writes_the_memory_and_reads_it_back(tmp_path):
    from wildfire_kd.edge.detect import detect

    model = make_onnx(tmp_path / "m.onnx", [(0, 0.9, (8.0, 8.0, 40.0, 40.0))])
    folder = _camera_folder(tmp_path, 14)
    result = detect(model, [str(folder)], tmp_path / "out", sequence=True)
    assert result.suppressed == 4 and result.events["opened"] == 1 and result.events["closed"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert rows[0]["time"] == 0.0 and rows[13]["time"] == 13 * 60.0, "name order, a minute apart"
    assert not rows[9]["suppressed"] and rows[10]["suppressed"][0]["suppressed"].startswith("static: seen")
    assert rows[10]["detections"] == [], "a suppressed detection is reported apart"
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert [a["status"] for a in alerts] == ["opened", "closed"] and alerts[1]["reason"] == "static: suppressed"
    memory = tmp_path / "out" / "static_memory.json"
    assert json.loads(memory.read_text())[str(folder)]["spots"][0]["static_since"] == 600.0
    again = detect(model, [str(folder)], tmp_path / "out2", sequence=True, static_memory=memory)
    assert again.suppressed == 14 and again.alarms == 0, "the memory read back: static from the first frame"
    off = detect(model, [str(folder)], tmp_path / "out3", sequence=True, static=False, events=False)
    assert off.suppressed == 0 and off.alarms == 1 and "closed" not in off.events
    history = tmp_path / "history" / "cam1"
    history.mkdir(parents=True)
    for f in sorted(folder.iterdir())[:3]:
        (history / f.name).write_bytes(f.read_bytes())
    seeded = detect(model, [str(folder)], tmp_path / "out4", sequence=True, learn_static=tmp_path / "history")
    assert seeded.alarms == 0 and seeded.suppressed == 14
    with pytest.raises(InputError, match="--learn-static .* no folder cam1/"):
        detect(model, [str(folder)], tmp_path / "out5", sequence=True, learn_static=tmp_path / "frames" / "none")


def test_both_entry_points_take_the_same_detect_options_with_the_configs_defaults():
    from wildfire_kd.cli import detect as typer_detect
    from wildfire_kd.config import DetectSettings
    from wildfire_kd.edge.cli import _parser
    from wildfire_kd.edge.detect import detect
    from wildfire_kd.edge.options import DETECT_OPTIONS

    edge_flags = {a.dest for a in _parser()._actions}
    typer_params = set(inspect.signature(typer_detect).parameters)
    for option in DETECT_OPTIONS:
        assert option.dest in edge_flags and option.dest in typer_params, option.dest
        assert option.dest in DetectSettings.model_fields, option.dest
    defaults = DetectSettings()
    for name, param in inspect.signature(detect).parameters.items():
        if name in DetectSettings.model_fields:
            assert getattr(defaults, name) == param.default, f"detect({name}=...) and detect.{name} differ"


def test_the_edge_cli_and_the_full_cli_take_alarm_options_and_tiles(tmp_path):
    from wildfire_kd.edge.cli import main

    model = make_onnx(tmp_path / "m.onnx", [(0, 0.9, (8.0, 8.0, 40.0, 40.0))])
    folder = _camera_folder(tmp_path, 4)
    assert main([str(folder), "--model", str(model), "--out", str(tmp_path / "o1"), "--sequence", "--tiles", "auto",
                 "--alarm-k", "4", "--no-events"]) == 0  # fmt: skip
    r = invoke_cli("detect", str(folder), "--model", str(model), "--out", str(tmp_path / "o2"), "--sequence",
                   "--alarm-k", "4", "--tiles", "2", "--no-static")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "alarm(s) in 1 event(s)" in r.stdout and "2 tile(s) on 64x64 frames (--tiles)" in r.stdout
    r = invoke_cli("detect", str(folder), "--model", str(model), "--out", str(tmp_path / "o3"), "--tiles", "many")
    assert r.returncode == 2 and "many" in r.stderr


# --- the generator ------------------------------------------------------------------------------------------------


def test_synthetic_sequences_carry_a_static_artefact_a_rising_plume_and_a_history(tmp_path):
    from PIL import Image

    from wildfire_kd.edge.sequences import load_sequences

    r = run_cli("synth", str(tmp_path / "s"), "--sequence", "--sequences", "2", "--frames", "40", "--width", "512")
    assert r.returncode == 0, r.stderr
    named = {s.name: s for s in load_sequences(tmp_path / "s")}
    fire = named["fire_00"]
    boxes = [f.box for f in fire.frames if f.box]
    first, last = boxes[0], boxes[-1]
    assert last[3] < first[1] or last[0] > first[2] or last[2] < first[0], "the plume's last box is off its first"
    history = sorted((tmp_path / "s" / "history" / "fire_00").iterdir())
    assert len(history) == 12
    plain = tmp_path / "plain"
    r = run_cli("synth", str(plain), "--sequence", "--sequences", "2", "--frames", "40", "--width", "512",
                "--no-static-distractors")  # fmt: skip
    # the artefact: where the two versions differ before the fire (same noise), the same small place in every frame
    masks = []
    for frame in [f for f in fire.frames if not f.smoke][::4]:
        ours, theirs = (
            np.asarray(Image.open(p), dtype=np.float32) for p in (frame.path, plain / "fire_00" / frame.path.name)
        )
        masks.append(np.abs(ours - theirs).max(-1) > 30)
    assert 0 < masks[0].mean() < 0.02, "a small artefact"
    assert all((m & masks[0]).sum() / (m | masks[0]).sum() > 0.8 for m in masks), "at the same place in every frame"
    assert r.returncode == 0 and not (plain / "history").exists()


@pytest.mark.slow
def test_an_ncnn_folder_whose_metadata_names_another_size_is_refused(exported, learnt_data, tmp_path):
    """An NCNN folder without a seal (an earlier export) whose metadata says another size: NCNN runs any size, so the
    anchors it gives are checked against the metadata's."""
    import shutil

    from wildfire_kd.edge.detect import detect
    from wildfire_kd.edge.metadata import SEAL_KEY, decode, encode

    folder = tmp_path / "ncnn"
    shutil.copytree(exported / "student_ncnn_model", folder)
    sidecar = folder / "metadata.yaml"
    raw = json.loads(sidecar.read_text())
    ours = decode(raw)
    ours.pop(SEAL_KEY)
    ours["imgsz"] = [64, 64]  # the model is 128
    sidecar.write_text(json.dumps({**{k: v for k, v in raw.items() if not k.startswith("wildfire_kd.")},
                                   **encode(ours)}))  # fmt: skip
    images = learnt_data.parent / "images" / "val"
    with pytest.raises(InputError, match="metadata says 64 px .* but the network gives"):
        detect(folder, [str(images)], tmp_path / "out")
