"""SQLite cache of paid endpoint replies (openai: answers and judge verdicts), one committed row per reply.

A row's key is the sha256 of (endpoint URL, requested model, prompt text, image pixels' sha256, settings), so a
rerun or a run after kill -9 sends no answered request again, while another model, prompt, image or setting
asks anew. WAL journaling and a commit per row: a killed process loses no reply it had received. Only answers
are stored as answers (the reply text as it came, with its reasoning and finish_reason); a request that
failed (HTTP error, timeout, malformed body, empty, refused or reasoning-only reply) is appended to the
table's failure history instead (`answers_failures`: reason, HTTP status, the server's message, tries, time),
so a rerun asks it again and the history says what went wrong when. Nothing secret is stored (no headers, no key).
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
    """key -> (reply text, served model name, detail) in one table of DIR/cache.sqlite, and the failure history
    beside it; safe to share between threads."""

    def __init__(self, cache_dir: str | Path, table: str):
        if table not in TABLES:
            raise ValueError(f"cache table must be one of {TABLES}, got {table!r}")
        self.path = Path(cache_dir) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table, self.failures = table, f"{table}_failures"
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, "
                            "image_sha256 TEXT, reply TEXT, served_model TEXT, created REAL, detail TEXT)")
            columns = [row[1] for row in self.db.execute(f"PRAGMA table_info({table})")]
            if "detail" not in columns:  # a cache written before replies kept their reasoning and finish_reason
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN detail TEXT")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.failures} (key TEXT, model TEXT, prompt TEXT, "
                            "image_sha256 TEXT, reason TEXT, status INTEGER, message TEXT, tries INTEGER, "
                            "created REAL)")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a reply cache ({e}); move it aside or use another --out") from e

    def get(self, key: str) -> tuple[str, str, dict] | None:
        with self.lock:
            row = self.db.execute(f"SELECT reply, served_model, detail FROM {self.table} WHERE key = ?",
                                  (key,)).fetchone()
        return (row[0], row[1], json.loads(row[2]) if row[2] else {}) if row else None

    def put(self, key: str, model: str, prompt: str, image_sha256: str, reply: str, served_model: str,
            detail: dict) -> None:
        with self.lock, self.db:  # one transaction per reply, committed before the reply is used
            self.db.execute(f"INSERT OR REPLACE INTO {self.table} (key, model, prompt, image_sha256, reply, "
                            "served_model, created, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, model, prompt, image_sha256, reply, served_model, time.time(),
                             json.dumps(detail, sort_keys=True, ensure_ascii=False)))

    def put_failure(self, key: str, model: str, prompt: str, image_sha256: str, reason: str, status: int | None,
                    message: str, tries: int) -> None:
        with self.lock, self.db:
            self.db.execute(f"INSERT INTO {self.failures} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, model, prompt, image_sha256, reason, status, message, tries, time.time()))

    def close(self) -> None:
        with self.lock:
            self.db.close()
