"""Reliability round 3, the cases that need more than one command line: the edge entry point's values, the MLflow
server checked before training, cameras kept apart, detect never reading its own output back, synth replacing only
its own output. Each asserts the exit code, one line without a traceback, and that no input changed."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SMOKE_CONFIG, invoke_cli, make_onnx, make_teacher  # noqa: E402

BOX = (8.0, 8.0, 40.0, 40.0)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(folder: Path, n: int, size: int = 64) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (100 + i, 120, 140)).save(folder / f"frame_{i:03d}.jpg")
    return folder


@pytest.fixture
def camera_model(tmp_path) -> Path:
    """A model that sees the same plume in every frame."""
    return make_onnx(tmp_path / "model.onnx", [(0, 0.9, BOX)])


# --- the edge entry point checks what the full CLI checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--conf", "2"], "--conf 2.0: a confidence threshold is between 0 and 1"),
        (["--conf", "nan"], "--conf nan: a confidence threshold is between 0 and 1"),
        (["--conf", "-1"], "--conf -1.0: a confidence threshold is between 0 and 1"),
        (["--iou", "5"], "--iou 5.0: the NMS IoU threshold is between 0 and 1"),
        (["--iou", "-1"], "--iou -1.0: the NMS IoU threshold is between 0 and 1"),
        (["--threads", "0"], "--threads 0: 1 to 256"),
        (["--sequence", "--alarm-k", "4", "--alarm-n", "3"], "needs 1 <= k <= n, got k=4, n=3"),
        (["--sequence", "--alarm-iou", "0"], "alarm IoU 0.0"),
    ],
    ids=["conf2", "conf_nan", "conf_neg", "iou5", "iou_neg", "threads0", "k_over_n", "alarm_iou0"],
)
def test_the_edge_entry_point_refuses_what_the_full_cli_refuses(args, says, camera_model, tmp_path, capsys):
    from wildfire_kd.edge.cli import main

    frames = _frames(tmp_path / "cam", 2)
    before = _hashes(tmp_path)
    code = main(["--onnx", str(camera_model), str(frames), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0] and "Traceback" not in err[0], err
    assert _hashes(tmp_path) == {k: v for k, v in before.items()}, "an input changed"
    r = invoke_cli("detect", "--onnx", str(camera_model), str(frames), "--out", str(tmp_path / "o2"), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, "the full CLI refuses it too"


# --- trackers fail fast -----------------------------------------------------------------------------------------------


class _NotMLflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("server", ["closed_port", "answers_404"])
def test_an_mlflow_server_that_does_not_answer_is_exit_2_before_training(server, tmp_path, monkeypatch):
    from wildfire_kd.synth import synthesize

    data = synthesize(tmp_path / "data", train_images=2, val_images=2, imgsz=64)
    teacher = make_teacher(tmp_path / "teacher.pt", ["smoke", "fire"], cfg="yolov8n.yaml")
    httpd = None
    if server == "closed_port":
        uri = f"http://127.0.0.1:{_closed_port()}"
    else:
        httpd = http.server.HTTPServer(("127.0.0.1", 0), _NotMLflow)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    try:
        r = invoke_cli(
            "train", "--config", str(SMOKE_CONFIG), "--data", str(data), "--teacher", str(teacher),
            "--out", str(tmp_path / "runs"), "--set", "train.loggers=[mlflow]",
        )  # fmt: skip
    finally:
        if httpd is not None:
            httpd.shutdown()
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"MLFLOW_TRACKING_URI={uri}" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert time.monotonic() - started < 60, "refused at once, not after MLflow's retries"
    assert not (tmp_path / "runs").exists(), "nothing trained"


# --- cameras are kept apart ---------------------------------------------------------------------------------------


# these tests are about which frames confirm each other, so they pin a counting rule: 3 of the last 5 frames
THREE_OF_FIVE = {"mode": "count", "k": 3, "n": 5}


def _alerts(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def test_each_camera_folder_is_confirmed_on_its_own(camera_model, tmp_path):
    from wildfire_kd.edge.detect import detect

    c, d = _frames(tmp_path / "camC", 2), _frames(tmp_path / "camD", 2)
    result = detect(camera_model, [str(c), str(d)], tmp_path / "o1", sequence=True, alarm=THREE_OF_FIVE)
    assert result.cameras == 2 and result.alarms == 0, "two frames of C and two of D are no four frames of one camera"
    _frames(tmp_path / "camC", 3), _frames(tmp_path / "camD", 3)
    result = detect(camera_model, [str(c), str(d)], tmp_path / "o2", sequence=True, alarm=THREE_OF_FIVE)
    alerts = _alerts(tmp_path / "o2")
    assert result.alarms == 2 and [a["camera"] for a in alerts] == [str(c), str(d)], "each camera's own fire alarms"


def test_a_frame_named_twice_is_one_frame(camera_model, tmp_path):
    from wildfire_kd.edge.detect import detect

    c = _frames(tmp_path / "camC", 3)
    files = [str(c), str(c), str(c / "frame_000.jpg")]
    result = detect(camera_model, files, tmp_path / "o", sequence=True, alarm=THREE_OF_FIVE)
    assert result.images == 3 and result.alarms == 1
    assert _alerts(tmp_path / "o")[0]["confirmed_by"] == [str(c / f"frame_{i:03d}.jpg") for i in range(3)]


def test_a_frame_of_another_size_starts_confirmation_again_and_says_so(camera_model, tmp_path):
    from wildfire_kd.edge.detect import detect

    c = _frames(tmp_path / "camC", 2)
    _frames(tmp_path / "other", 1, size=96)
    shutil.move(tmp_path / "other" / "frame_000.jpg", c / "frame_002.jpg")
    result = detect(camera_model, [str(c)], tmp_path / "o", sequence=True, alarm=THREE_OF_FIVE)
    assert result.alarms == 0, "two frames of one size, one of another: no three frames of one view"
    assert len(result.warnings) == 1 and "frame_002.jpg is 96x96, earlier frames 64x64" in result.warnings[0]


def test_detect_never_takes_its_own_annotated_copies_as_frames(camera_model, tmp_path):
    cam = _frames(tmp_path / "cam", 3)
    before = _hashes(cam)
    for _ in range(2):
        r = invoke_cli("detect", "--onnx", str(camera_model), str(cam), "--out", str(cam / "det"), "--save-images")
        assert r.returncode == 0 and "3 image(s)" in r.stdout, r.stdout + r.stderr
    assert {k: v for k, v in _hashes(cam).items() if "/det/" not in k} == before
    assert len(list((cam / "det" / "images").glob("*.jpg"))) == 3


# --- synth replaces only its own output -------------------------------------------------------------------------------


def test_synth_replaces_its_own_earlier_output_only_with_force_and_leaves_nothing_stale(tmp_path):
    out = tmp_path / "seq"
    args = ["synth", str(out), "--sequence", "--width", "128", "--sequences", "2"]
    assert invoke_cli(*args, "--frames", "12").returncode == 0
    r = invoke_cli(*args, "--frames", "9")
    assert r.returncode == 2 and "holds an earlier output of `wildfire-kd synth`; pass --force" in r.stderr
    assert len(list((out / "fire_00").glob("*.jpg"))) == 12, "untouched without --force"
    assert invoke_cli(*args, "--frames", "9", "--force").returncode == 0
    rows = (out / "fire_00" / "frames.csv").read_text().splitlines()[1:]
    assert len(list((out / "fire_00").glob("*.jpg"))) == len(rows) == 9, "no stale frames beside the new listing"
