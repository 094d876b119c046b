"""`wildfire-kd-edge serve`: the camera service on the tower: frames from each camera, alarms, alerts that arrive.

    wildfire-kd-edge serve --cameras cameras.yaml --model student_int8_openvino_model --state /var/lib/wildfire

Each camera (cameras.py) has its own thread taking frames from its source (sources.py) every interval; a camera that
stops answering is reported (logs, /metrics, /healthz), retried with a growing wait, and holds up no other. One worker
runs the model over the frames in turn and each camera's path (camera.py: mask, static suppression, the alarm rule,
one event per fire: the code `detect --sequence` runs, so both raise the same alerts on the same frames). Each frame's
outcome is committed at once to the state folder (outbox.py: the camera's state with the alerts it raised), then the
alerts go to alerts.jsonl and, when set, to the webhook, retried until acknowledged: at least once, in order per
camera, each with a stable id. A kill -9 loses nothing committed; a restart goes on from the saved state. SIGTERM
finishes the frame in hand, flushes, and exits 143. /healthz and /metrics (Prometheus) answer on --port (loopback
unless --host says otherwise). The state folder is held by one service at a time (guard.lock_folder).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..guard import lock_folder
from ..layout import SERVICE_ALERTS
from .alarms import rule_with
from .camera import CameraPath, CameraSettings
from .cameras import CameraConfig, check_webhook, load_cameras
from .detect import check_thresholds
from .events import EventRule
from .masks import CameraMask
from .model import CameraModel
from .outbox import Outbox
from .sources import open_source
from .static import StaticRule

log = logging.getLogger("wildfire_kd.serve")

MAX_ERROR_WAIT_S = 600.0  # a failing camera is retried after interval x 2^k, at most every 10 minutes
CROP_MARGIN = 0.5  # the JPEG crop sent with an alert: the box widened by half its size on each side
CROP_MAX_PX = 512  # ... at most this wide or high


@dataclass
class ServeOptions:
    cameras: str
    model: str
    state: str
    webhook: str | None = None
    host: str = "127.0.0.1"
    port: int | None = 9108
    threads: int | None = None
    runtime: str | None = None
    conf: float | None = None
    iou: float = 0.7
    alarm: dict[str, Any] = field(default_factory=dict)
    static: bool = True
    events: bool = True


@dataclass
class CameraStats:
    frames: int = 0
    errors: int = 0
    last_frame: float | None = None  # when it last gave a frame (wall clock)
    last_error: str | None = None
    inference_ms: float = 0.0
    suppressed: int = 0
    alerts: int = 0


class Camera:
    """One camera in the service: its config, source, path, mask and figures."""

    def __init__(self, config: CameraConfig, settings: CameraSettings, outbox: Outbox, timeout: float):
        self.config, self.source = config, open_source(config, timeout)
        self.path = CameraPath(config.id, settings)
        folder = config.folder or Path(".")
        self.mask = CameraMask(folder, config.mask) if config.mask or config.folder else None
        self.mask_checked, self.stats, self.notes = False, CameraStats(), []
        saved = outbox.camera_state(config.id)
        if saved is not None:  # a restart: the same alarms follow as if it had never stopped
            self.path.restore(saved[0])
            self.source.restore(saved[1])


def _crop(image, box) -> str | None:
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    x1, y1, x2, y2 = (int(max(0, x1 - mx)), int(max(0, y1 - my)), int(min(w, x2 + mx)), int(min(h, y2 + my)))
    if x2 <= x1 or y2 <= y1:
        return None
    crop = image[y1:y2, x1:x2]
    scale = min(1.0, CROP_MAX_PX / max(crop.shape[:2]))
    if scale < 1:
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))))
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(data.tobytes()).decode() if ok else None


def payload(alert, image) -> dict[str, Any]:
    """An alert as it leaves the tower (alerts.jsonl, the webhook): the event, its status, where and when, the box,
    the frames that confirmed it and, as Pyronear sends, a JPEG crop around the box (base64)."""
    row = alert.to_dict()
    row["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(alert.time))
    if alert.detection is not None and alert.status != "closed":
        row["crop_jpeg"] = _crop(image, alert.detection.box)
    return row


class Service:
    def __init__(self, options: ServeOptions):
        self.options = options
        check_thresholds(options.conf, options.iou, options.threads)
        self.config = load_cameras(options.cameras)
        self.webhook = check_webhook(options.webhook, "--webhook") or self.config.webhook
        self.state = _state_folder(options.state)
        self.model = CameraModel(options.model, threads=options.threads, runtime=options.runtime)
        rule = rule_with(self.model.alarm_rule, options.alarm)
        self.settings = CameraSettings(rule, StaticRule() if options.static else None,
                                       EventRule() if options.events else None)  # fmt: skip
        self.conf = self.model.default_conf if options.conf is None else options.conf
        self.outbox = Outbox(self.state)
        self.cameras = {c.id: Camera(c, self.settings, self.outbox, self.config.timeout) for c in self.config.cameras}
        self.frames: queue.Queue = queue.Queue(maxsize=2 * len(self.cameras))
        self.stop = threading.Event()
        self.started = time.time()
        self.threads: list[threading.Thread] = []
        self.http = None

    # --- the threads -------------------------------------------------------------------------------------------

    def _watch(self, camera: Camera) -> None:
        """One camera's thread: the next frame every interval (at once while frames wait), retries on failure."""
        failures = 0
        while not self.stop.is_set():
            try:
                frame = camera.source.next()
            except Exception as e:  # a camera that stops answering holds up no other
                failures += 1
                camera.stats.errors += 1
                camera.stats.last_error = f"{type(e).__name__}: {e}"[:300]
                log.warning("camera %s: %s (try %d)", camera.config.id, camera.stats.last_error, failures)
                self.stop.wait(min(camera.config.interval * 2 ** min(failures, 10), MAX_ERROR_WAIT_S))
                continue
            failures = 0
            if frame is not None:
                frame.source_state = camera.source.state()  # as of this frame: committed with its outcome
                while not self.stop.is_set():
                    try:
                        self.frames.put((camera, frame), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if camera.source.more():
                    continue
            self.stop.wait(camera.config.interval if frame is not None else min(camera.config.interval, 1.0))

    def _deliver(self) -> None:
        """The webhook deliveries: each camera's oldest alert first, retried with a growing wait until acknowledged."""
        import requests

        session = requests.Session()
        while not self.stop.is_set():
            sent = False
            for seq, row in self.outbox.due(time.time()):
                try:
                    answer = session.post(self.webhook, json=row, timeout=self.config.timeout)
                    answer.raise_for_status()
                except Exception as e:
                    wait = self.outbox.failed(seq, f"{type(e).__name__}: {e}")
                    log.warning("alert %s not delivered (%s); again in %.0f s", row["id"], e, wait)
                    continue
                self.outbox.delivered(seq)
                sent = True
            if not sent:
                self.stop.wait(0.2)

    # --- one frame ----------------------------------------------------------------------------------------------

    def process(self, camera: Camera, frame) -> None:
        """The model, the mask, the camera's path; the outcome committed, then logged."""
        h, w = frame.image.shape[:2]
        if not camera.mask_checked and camera.mask is not None:
            camera.mask_checked = True
            wrong = camera.mask.fits(w, h)
            if wrong is not None:  # unmasked rather than masked wrong: a wrong mask could hide a fire
                camera.mask = None
                camera.notes.append(f"mask ignored: {wrong}")
                log.warning(
                    "camera %s: %s; it runs unmasked (false alarms, not a fire hidden)", camera.config.id, wrong
                )
        floor = self.settings.rule.floor if self.settings.rule.floor is not None else self.conf
        tiles, _ = self.model.tiles_for(w, h, camera.config.tiles)
        start = time.perf_counter()
        found = self.model.detect(frame.image, conf=min(floor, self.conf), iou=self.options.iou, tiles=tiles)
        camera.stats.inference_ms = 1000 * (time.perf_counter() - start)
        if camera.mask is not None:
            found = camera.mask.keep(found, w, h)[0]
        outcome = camera.path.frame(frame.name, frame.time, found)
        rows = [payload(a, frame.image) for a in outcome.alerts]
        self.outbox.commit_frame(camera.config.id, camera.path.state(), frame.source_state, rows)
        camera.stats.frames += 1
        camera.stats.last_frame = time.time()
        camera.stats.suppressed += len(outcome.suppressed)
        camera.stats.alerts += len(rows)
        self.log_alerts()

    def log_alerts(self) -> None:
        """Every committed alert not yet in alerts.jsonl: appended (without its crop) and synced, then marked."""
        pending = self.outbox.unlogged()
        if not pending:
            return
        with open(self.state / SERVICE_ALERTS, "a", encoding="utf-8") as f:
            for _, row in pending:
                f.write(json.dumps({k: v for k, v in row.items() if k != "crop_jpeg"}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.outbox.mark_logged([seq for seq, _ in pending], webhook=self.webhook is not None)

    # --- the service ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Until SIGTERM (143) or SIGINT (130)."""
        stopped_by: list[int] = []

        def on_signal(signum, _frame):
            stopped_by.append(signum)
            self.stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.log_alerts()  # what a killed run committed but had not logged yet
            while not self.stop.is_set():
                try:
                    camera, frame = self.frames.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.process(camera, frame)  # the frame in hand is finished even when a signal came meanwhile
        finally:
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 143 if signal.SIGTERM in stopped_by else 130 if stopped_by else 0

    def start(self) -> None:
        from .health import serve_health

        if self.options.port is not None:
            self.http = serve_health(self, self.options.host, self.options.port)
        workers = [threading.Thread(target=self._watch, args=(c,), name=f"camera-{c.config.id}", daemon=True)
                   for c in self.cameras.values()]  # fmt: skip
        if self.webhook is not None:
            workers.append(threading.Thread(target=self._deliver, name="delivery", daemon=True))
        for t in workers:
            t.start()
        self.threads = workers
        log.info("serving %d camera(s) with %s; state %s", len(self.cameras), self.model.path, self.state)

    def shutdown(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
        if self.http is not None:
            self.http.shutdown()
        self.log_alerts()
        self.outbox.close()


def _state_folder(folder: str | Path) -> Path:
    """The state folder, created, writable, and this service's alone (a second one on it: exit 2)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        hint = "give the service a folder of its own"
        raise InputError(f"--state {path}: not a writable folder ({e.strerror}); {hint}") from None
    return lock_folder(path, "--state")


def serve(options: ServeOptions) -> int:
    """Run the service (module doc); returns its exit code."""
    return Service(options).run()
