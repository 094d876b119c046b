"""The service's state: one SQLite database in WAL mode in the state folder (stdlib sqlite3, no server).

- ``cameras``: each camera's path state (alarm window, held alarms, open events, static memory) and its source's
  (the last frame a folder camera took), saved in the same transaction as the alerts that frame raised: after a kill
  at any moment the state and the alerts agree (a held plume does not alarm again, a building one is not forgotten).
- ``outbox``: every alert, written before any delivery and removed only once every destination has it: alerts.jsonl
  (appended and synced) and, when set, the webhook (acknowledged with a 2xx). Deliveries are at least once and in
  order per camera; each alert keeps its stable id, so a receiver drops duplicates.
- ``counters``: what was delivered and what failed, kept across restarts for /metrics.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..layout import SERVICE_DB

SCHEMA = """
CREATE TABLE IF NOT EXISTS cameras (id TEXT PRIMARY KEY, path TEXT NOT NULL, source TEXT NOT NULL, updated REAL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, camera TEXT NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL, logged INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0, error TEXT);
CREATE INDEX IF NOT EXISTS outbox_camera ON outbox (camera, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
BACKOFF_S, MAX_BACKOFF_S = 2.0, 300.0  # a failed delivery waits 2, 4, 8 ... s, at most 5 minutes


class Outbox:
    """The state folder's database, shared by the service's threads (one connection, one lock)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / SERVICE_DB
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the next frame (power loss)
        self.db.executescript(SCHEMA)

    def camera_state(self, camera: str) -> tuple[dict, dict] | None:
        with self.lock:
            row = self.db.execute("SELECT path, source FROM cameras WHERE id = ?", (camera,)).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def commit_frame(self, camera: str, path_state: dict, source_state: dict, alerts: list[dict]) -> None:
        """One frame's outcome, at once: the camera's state and the alerts it raised (with their payloads)."""
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute(
                    "INSERT INTO cameras (id, path, source, updated) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                    "SET path = excluded.path, source = excluded.source, updated = excluded.updated",
                    (camera, json.dumps(path_state), json.dumps(source_state), now),
                )
                self.db.executemany(
                    "INSERT OR IGNORE INTO outbox (id, camera, payload, created) VALUES (?, ?, ?, ?)",
                    [(a["id"], camera, json.dumps(a), now) for a in alerts],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def unlogged(self) -> list[tuple[int, dict]]:
        with self.lock:
            rows = self.db.execute("SELECT seq, payload FROM outbox WHERE logged = 0 ORDER BY seq").fetchall()
        return [(seq, json.loads(payload)) for seq, payload in rows]

    def mark_logged(self, seqs: list[int], webhook: bool) -> None:
        """alerts.jsonl holds them; without a webhook that was their last destination."""
        with self.lock:
            if webhook:
                self.db.executemany("UPDATE outbox SET logged = 1 WHERE seq = ?", [(s,) for s in seqs])
            else:
                self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
                self._count("delivered", len(seqs))

    def due(self, now: float) -> list[tuple[int, dict]]:
        """Per camera, its oldest alert not yet delivered, when its next try is due (later ones wait: in order)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT o.seq, o.payload, o.next_try, o.logged FROM outbox o JOIN "
                "(SELECT camera, MIN(seq) AS seq FROM outbox GROUP BY camera) f ON o.seq = f.seq ORDER BY o.seq"
            ).fetchall()
        return [(seq, json.loads(payload)) for seq, payload, next_try, logged in rows if logged and next_try <= now]

    def delivered(self, seq: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._count("delivered", 1)

    def failed(self, seq: int, error: str) -> float:
        """A delivery failed: try again after an exponential backoff (returned, seconds)."""
        with self.lock:
            attempts = self.db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()[0] + 1
            wait = min(BACKOFF_S * 2 ** (attempts - 1), MAX_BACKOFF_S)
            self.db.execute(
                "UPDATE outbox SET attempts = ?, next_try = ?, error = ? WHERE seq = ?",
                (attempts, time.time() + wait, error[:500], seq),
            )
            self._count("failed", 1)
        return wait

    def _count(self, name: str, n: int) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, n, n),
        )

    def figures(self) -> dict[str, Any]:
        with self.lock:
            pending = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            counters = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
        return {"pending": pending, "delivered": counters.get("delivered", 0), "failed": counters.get("failed", 0)}

    def close(self) -> None:
        with self.lock:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self.db.close()
