"""SQLite cache of paid endpoint replies (openai: answers and judge verdicts), one committed row per reply.

A row's key is the sha256 of (endpoint URL, requested model, prompt text, image pixels' sha256, settings), so a
rerun or a run after kill -9 sends no answered request again, while another model, prompt, image or setting
asks anew. WAL journaling and a commit per row: a killed process loses no reply it had received. Only answers
are stored; failures (empty, refused, HTTP errors, timeouts, malformed bodies) are not, so a rerun asks again.
Nothing secret is stored (no headers, no key).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

TABLES = ("answers", "verdicts")
CACHE_FILE = "cache.sqlite"


def cache_key(url: str, model: str, prompt: str, image_sha256: str, settings: dict) -> str:
    blob = json.dumps([url, model, prompt, image_sha256, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """key -> (reply text, served model name) in one table of DIR/cache.sqlite; safe to share between threads."""

    def __init__(self, cache_dir: str | Path, table: str):
        if table not in TABLES:
            raise ValueError(f"cache table must be one of {TABLES}, got {table!r}")
        self.path = Path(cache_dir) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, "
                            "image_sha256 TEXT, reply TEXT, served_model TEXT, created REAL)")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a reply cache ({e}); move it aside or use another --out") from e

    def get(self, key: str) -> tuple[str, str] | None:
        with self.lock:
            row = self.db.execute(f"SELECT reply, served_model FROM {self.table} WHERE key = ?", (key,)).fetchone()
        return tuple(row) if row else None

    def put(self, key: str, model: str, prompt: str, image_sha256: str, reply: str, served_model: str) -> None:
        with self.lock, self.db:  # one transaction per reply, committed before the reply is used
            self.db.execute(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (key, model, prompt, image_sha256, reply, served_model, time.time()))

    def __len__(self) -> int:
        with self.lock:
            return self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        with self.lock:
            self.db.close()
