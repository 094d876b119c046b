"""`wildfire-kd-edge serve` on this machine only (loopback): a fake HTTP camera, a folder camera fed by a writer, a
receiver that records the alerts; the service raises what `detect --sequence` raises on the same frames; killed with
SIGKILL at random moments and restarted, it loses no alert and raises none twice. Every server here listens on
127.0.0.1, every process started is stopped, and each wait is bounded."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import make_blob_onnx
from wildfire_kd.edge.cameras import load_cameras
from wildfire_kd.errors import InputError

FRAMES = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scene(folder: Path, start: int, frames: int = FRAMES) -> Path:
    """A camera's frames, named by their unix time: a static red square (an artefact the model fires on) and, from
    frame 6, a red plume that grows and rises. The blob model (conftest.make_blob_onnx) sees red."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        image = Image.new("RGB", (320, 240), (90, 110, 90))
        draw = ImageDraw.Draw(image)
        draw.rectangle([16, 16, 40, 40], fill=(255, 0, 0))
        if i >= 6:
            k = i - 6
            draw.rectangle([200 - k, 180 - 4 * k, 216 + 2 * k, 196 - 2 * k], fill=(255, 0, 0))
        image.save(folder / f"{start + 60 * i}.png")
    return folder


@pytest.fixture
def model(tmp_path) -> Path:
    return make_blob_onnx(tmp_path / "blob.onnx", imgsz=320, level=0.5)


class _Receiver:
    """A webhook receiver on loopback: records every alert POSTed; can be taken down and brought back."""

    def __init__(self):
        self.alerts: list[dict] = []
        self.up = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not receiver.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.alerts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def unique(self) -> dict[str, dict]:
        return {a["id"]: a for a in self.alerts}

    def close(self):
        self.server.shutdown()


class _Camera:
    """An IP camera's snapshot URL on loopback: each GET gives the next frame (Last-Modified: its time)."""

    def __init__(self, folder: Path):
        self.frames = sorted(folder.glob("*.png"), key=lambda p: p.name)
        self.served = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if camera.served >= len(camera.frames):
                    self.send_response(503)
                    self.end_headers()
                    return
                frame = camera.frames[camera.served]
                camera.served += 1
                body = frame.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Last-Modified", formatdate(float(frame.stem), usegmt=True))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/snapshot.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _start(cameras: Path, model: Path, state: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wildfire_kd.edge", "serve", "--cameras", str(cameras), "--model",
                             str(model), "--state", str(state), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and ln[0] != "#"}


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _detect_alerts(model: Path, folder: Path, tmp_path: Path) -> list[tuple]:
    """What `detect --sequence` raises on ``folder``: (status, frame time, box) per alert, in order."""
    from wildfire_kd.edge.detect import detect

    out = tmp_path / f"detect-{folder.name}"
    detect(model, [str(folder)], out, sequence=True, tiles=1)
    rows = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    return [(r["status"], r["time"], tuple(r.get("box", ()))) for r in rows]


def _keys(alerts) -> list[tuple]:
    return [(a["status"], a["time"], tuple(a.get("box", ()))) for a in sorted(alerts, key=lambda a: a["time"])]


def test_the_service_raises_what_detect_raises_on_the_same_frames(model, tmp_path):
    http_frames = _scene(tmp_path / "http_frames", 1_717_200_000)
    drop = tmp_path / "drop"
    drop.mkdir()
    source = _scene(tmp_path / "folder_frames", 1_717_300_000)
    camera, receiver, port = _Camera(http_frames), _Receiver(), _free_port()
    (tmp_path / "cameras.yaml").write_text(
        f"cameras:\n  - id: ip\n    source: {camera.url}\n    interval: 0.05\n    tiles: 1\n"
        f"  - id: drop\n    source: {drop}\n    interval: 0.05\n    tiles: 1\n"
        f"delivery:\n  webhook: {receiver.url}\n  timeout: 5\n"
    )
    service = _start(tmp_path / "cameras.yaml", model, tmp_path / "state", port)

    def writer():  # a camera uploading: each frame written in two halves, the next one once it was taken
        for i, frame in enumerate(sorted(source.glob("*.png"))):
            data, target = frame.read_bytes(), drop / frame.name
            with open(target, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.3)  # half a file for a while: it must not be read yet
                f.write(data[len(data) // 2 :])
            _wait(lambda i=i: _metrics(port).get('wildfire_frames_total{camera="drop"}', 0) >= i + 1, 60, "a frame")

    try:
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        thread.join(timeout=120)
        _wait(lambda: _metrics(port).get('wildfire_frames_total{camera="ip"}', 0) >= FRAMES, 60, "the ip frames")
        _wait(lambda: _metrics(port).get("wildfire_alerts_pending") == 0, 30, "the deliveries")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 143, service.stderr.read()[-3000:]
    finally:
        service.kill()
        camera.close()
        receiver.close()
    got = receiver.unique().values()
    assert {a["camera"] for a in got} == {"ip", "drop"}
    for name, folder in (("ip", http_frames), ("drop", source)):
        expected = _detect_alerts(model, folder, tmp_path)
        assert expected and any(s == "opened" for s, _, _ in expected) and any(s == "closed" for s, _, _ in expected)
        assert _keys(a for a in got if a["camera"] == name) == sorted(expected, key=lambda k: k[1]), name
        assert all(a["crop_jpeg"] for a in got if a["camera"] == name and a["status"] != "closed"), "crops sent"
    logged = [json.loads(line) for line in (tmp_path / "state" / "alerts.jsonl").read_text().splitlines()]
    assert sorted(a["id"] for a in logged) == sorted(a["id"] for a in got), "alerts.jsonl holds the same"


def test_killed_at_random_moments_and_restarted_it_loses_no_alert_and_raises_none_twice(model, tmp_path):
    folders = [_scene(tmp_path / f"cam{i}", 1_717_400_000 + 86_400 * i) for i in range(2)]
    receiver, port, state = _Receiver(), _free_port(), tmp_path / "state"
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n"
        + "".join(
            f"  - id: cam{i}\n    source: {f}\n    interval: 0.05\n    tiles: 1\n" for i, f in enumerate(folders)
        )  # fmt: skip
        + f"delivery:\n  webhook: {receiver.url}\n  timeout: 2\n"
    )
    rng, kills = random.Random(7), 0
    try:
        for attempt in range(10):
            receiver.up = attempt % 3 != 1  # down for a while, every third run
            service = _start(tmp_path / "cameras.yaml", model, state, port)
            if attempt % 2 == 0 or not (state / "service.sqlite").is_file():
                # at work (a loaded machine takes seconds to start a service): a kill amid frames and deliveries
                _wait(lambda: bool(_metrics(port)), 120, "the service")
            time.sleep(rng.uniform(0.2, 2.5))  # else at any moment, the start included
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=30)
            kills += 1
            with sqlite3.connect(f"file:{state / 'service.sqlite'}?mode=ro", uri=True) as db:  # always readable
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        receiver.up = True
        service = _start(tmp_path / "cameras.yaml", model, state, port)  # the last run, to the end
        done = [f'wildfire_frames_total{{camera="cam{i}"}}' for i in range(2)]
        _wait(lambda: all(_metrics(port).get(k, 0) >= 0 for k in done) and _metrics(port), 30, "the service")
        _wait(lambda: _metrics(port).get("wildfire_alerts_pending") == 0 and _all_taken(state, folders), 120, "the end")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 143
    finally:
        service.kill()
        receiver.close()
    got = receiver.unique()
    duplicates = len(receiver.alerts) - len(got)
    for i, folder in enumerate(folders):
        expected = _detect_alerts(model, folder, tmp_path)
        mine = [a for a in got.values() if a["camera"] == f"cam{i}"]
        assert _keys(mine) == sorted(expected, key=lambda k: k[1]), f"cam{i}: every alert once, none lost"
    opened = [a for a in got.values() if a["status"] == "opened"]
    print(f"chaos: {kills} SIGKILLs, {len(receiver.alerts)} deliveries, {len(got)} alerts by id, {duplicates} "
          f"duplicates dropped by id, {len(opened)} events opened")  # fmt: skip


def _all_taken(state: Path, folders: list[Path]) -> bool:
    with sqlite3.connect(f"file:{state / 'service.sqlite'}?mode=ro", uri=True) as db:
        rows = dict(db.execute("SELECT id, source FROM cameras").fetchall())
    last = {i: json.loads(rows.get(f"cam{i}", "{}")).get("last") for i in range(len(folders))}
    return all(last[i] == max(p.name for p in f.glob("*.png")) for i, f in enumerate(folders))


# --- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "cameras:\n  - {id: a, source: /tmp}\n  - {id: a, source: /tmp}\n",
            "3: camera id 'a' is already used at line 2",
        ),
        ("cameras:\n  - {id: a, source: 'ftp://cam/x.jpg'}\n", "2: source 'ftp://cam/x.jpg': scheme 'ftp' is not one"),
        ("cameras:\n  - {id: a, source: /tmp, interval: 0}\n", "2: interval 0 must be a number of seconds above 0"),
        ("cameras:\n  - {id: a, source: /tmp, interval: -5}\n", "2: interval -5"),
        (
            "cameras:\n  - {id: a, source: /tmp}\ndelivery:\n  webhook: ftp://x\n",
            "4: webhook 'ftp://x' is not an http(s) URL",
        ),
        ("cameras:\n  - {id: a, source: /tmp, colour: red}\n", "2: unknown key(s) ['colour']"),
        ("cameras:\n  - {id: a, source: /tmp, auth: {user: me, password: secret}}\n", "2: auth must be"),
        ("cameras: []\n", "needs 'cameras:'"),
    ],
    ids=[
        "duplicate_id",
        "unknown_scheme",
        "interval_zero",
        "interval_negative",
        "webhook_not_http",
        "unknown_key",
        "password_in_clear",
        "no_cameras",
    ],  # fmt: skip
)
def test_a_bad_cameras_yaml_is_refused_naming_the_line(tmp_path, text, says):
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=None) as caught:
        load_cameras(path)
    assert str(path) in str(caught.value) and says in str(caught.value), str(caught.value)


def test_the_service_refuses_a_state_folder_it_cannot_write_or_that_another_holds(model, tmp_path):
    from wildfire_kd.edge.cli import main
    from wildfire_kd.guard import lock_folder, release_folders

    (tmp_path / "cameras.yaml").write_text(f"cameras:\n  - id: a\n    source: {tmp_path}\n")
    (tmp_path / "file").write_text("not a folder")
    args = ["serve", "--cameras", str(tmp_path / "cameras.yaml"), "--model", str(model), "--port", "0"]
    assert main([*args, "--state", str(tmp_path / "file" / "state")]) == 2
    lock_folder(tmp_path / "held")
    try:
        r = subprocess.run([sys.executable, "-m", "wildfire_kd.edge", *args, "--state", str(tmp_path / "held")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        release_folders()
    assert r.returncode == 2 and f"(pid {os.getpid()})" in r.stderr, r.stderr


def test_a_mask_of_another_view_is_ignored_with_a_warning(model, tmp_path):
    """A mask with another aspect ratio than the frames belongs to another view: the camera runs unmasked (false
    alarms are the lesser harm: a wrong mask could hide a fire), and says so in /healthz."""
    from PIL import Image

    from wildfire_kd.edge.serve import ServeOptions, Service

    folder = _scene(tmp_path / "cam", 1_717_500_000, frames=2)
    Image.new("L", (100, 100), 255).save(tmp_path / "square_mask.png")  # the frames are 320 x 240
    (tmp_path / "cameras.yaml").write_text(f"cameras:\n  - {{id: a, source: {folder}, mask: {tmp_path}/square_mask.png"
                                           ", tiles: 1}\n")  # fmt: skip
    service = Service(ServeOptions(str(tmp_path / "cameras.yaml"), str(model), str(tmp_path / "state"), port=None))
    try:
        camera = service.cameras["a"]
        deadline = time.monotonic() + 10
        while (frame := camera.source.next()) is None:  # a file counts as whole once its size held for a second
            assert time.monotonic() < deadline
            time.sleep(0.2)
        frame.source_state = camera.source.state()
        service.process(camera, frame)
        assert camera.mask is None and "mask ignored" in camera.notes[0] and "320x240" in camera.notes[0]
        assert camera.stats.frames == 1
    finally:
        service.shutdown()
        from wildfire_kd.guard import release_folders

        release_folders()


def test_the_state_round_trips_a_camera_path_mid_plume():
    """Saved after any frame and restored, a camera path raises exactly what an uninterrupted one raises."""
    from wildfire_kd.edge.boxes import Detection
    from wildfire_kd.edge.camera import CameraPath, CameraSettings

    rng = np.random.default_rng(0)
    frames = [[Detection(0, "smoke", float(rng.uniform(0.2, 0.9)), (100 - k, 200 - 3 * k, 120 + k, 220))]
              if rng.random() < 0.8 else [] for k in range(40)]  # fmt: skip
    whole = CameraPath("c", CameraSettings())
    expected = [a.to_dict() for i, f in enumerate(frames) for a in whole.frame(str(i), 60.0 * i, f).alerts]
    path, got = CameraPath("c", CameraSettings()), []
    for i, f in enumerate(frames):
        if i % 7 == 3:  # a restart: the state through JSON, a new path
            state = json.loads(json.dumps(path.state()))
            path = CameraPath("c", CameraSettings())
            path.restore(state)
        got += [a.to_dict() for a in path.frame(str(i), 60.0 * i, f).alerts]
    assert got == expected and expected
