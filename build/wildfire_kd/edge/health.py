"""The service's /healthz (JSON) and /metrics (Prometheus text format, through prometheus_client), on one port.

/metrics: frames per camera, seconds since each camera's last frame, the last inference time, camera errors,
detections suppressed as static, alerts raised, and the outbox: pending, delivered, failed. /healthz: 200 while every
camera gave a frame within three of its intervals (or the service started less than that ago), else 503 naming the
silent cameras; always the per-camera figures.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SILENT_INTERVALS = 3  # a camera without a frame for this many intervals makes the service unhealthy


def health(service) -> tuple[bool, dict[str, Any]]:
    now = time.time()
    cameras, silent = {}, []
    for camera_id, camera in service.cameras.items():
        s = camera.stats
        since = now - (s.last_frame or service.started)
        if since > SILENT_INTERVALS * camera.config.interval:
            silent.append(camera_id)
        cameras[camera_id] = {
            "frames": s.frames, "errors": s.errors, "last_error": s.last_error, "notes": camera.notes[-5:],
            "seconds_since_last_frame": None if s.last_frame is None else round(now - s.last_frame, 1),
        }  # fmt: skip
    report = {"status": "ok" if not silent else "silent cameras", "silent": silent, "cameras": cameras,
              "outbox": service.outbox.figures()}  # fmt: skip
    return not silent, report


class _Collector:
    """The service's figures, read at each scrape."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = time.time()
        per_camera = {
            "frames": CounterMetricFamily("wildfire_frames", "frames processed", labels=["camera"]),
            "errors": CounterMetricFamily("wildfire_camera_errors", "failed frame grabs", labels=["camera"]),
            "suppressed": CounterMetricFamily(
                "wildfire_static_suppressed", "detections taken as static", labels=["camera"]
            ),  # fmt: skip
            "alerts": CounterMetricFamily("wildfire_alerts_raised", "alerts raised", labels=["camera"]),
        }
        age = GaugeMetricFamily("wildfire_last_frame_age_seconds", "seconds since the last frame", labels=["camera"])
        inference = GaugeMetricFamily("wildfire_inference_ms", "the last frame's inference", labels=["camera"])
        for camera_id, camera in self.service.cameras.items():
            s = camera.stats
            for name, family in per_camera.items():
                family.add_metric([camera_id], getattr(s, name))
            age.add_metric([camera_id], now - (s.last_frame or self.service.started))
            inference.add_metric([camera_id], s.inference_ms)
        yield from per_camera.values()
        yield age
        yield inference
        figures = self.service.outbox.figures()
        yield GaugeMetricFamily("wildfire_alerts_pending", "alerts not yet delivered", value=figures["pending"])
        yield CounterMetricFamily("wildfire_alerts_delivered", "alerts delivered", value=figures["delivered"])
        yield CounterMetricFamily("wildfire_alert_deliveries_failed", "failed deliveries", value=figures["failed"])


def serve_health(service, host: str, port: int) -> ThreadingHTTPServer:
    """Start /healthz and /metrics on ``host``:``port`` in a thread; returns the server (shutdown() stops it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(service))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == "/metrics":
                body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.split("?")[0] == "/healthz":
                ok, report = health(service)
                body, status, kind = json.dumps(report).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, kind = b"/healthz or /metrics\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: a scrape every few seconds is not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
