"""Per-row answer cache of the endpoint teacher: SQLite, one committed row per paid answer.

The key is a hash of (image, prompt version, model, the request body, with an inline image by its
sha256), so a rerun, a crash or a kill -9 resumes without sending an answered row again, while a new
prompt, model, setting or image asks anew.
WAL journaling: a killed process loses no committed answer.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path


def cache_key(image: str, prompt_version: str, model: str, request: dict) -> str:
    blob = json.dumps([image, prompt_version, model, request], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """key -> (text, prompt_tokens, completion_tokens); used from one thread (the teacher's event loop)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, image TEXT, model TEXT, "
                            "prompt_version TEXT, text TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
                            "created REAL)")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{path}: not a teacher answer cache ({e}); move it aside or use another --out") from e

    def get(self, key: str) -> tuple[str, int, int] | None:
        row = self.db.execute("SELECT text, prompt_tokens, completion_tokens FROM answers WHERE key = ?",
                              (key,)).fetchone()
        return tuple(row) if row else None

    def put(self, key: str, image: str, model: str, prompt_version: str, text: str, prompt_tokens: int,
            completion_tokens: int) -> None:
        with self.db:  # one transaction, committed before the next request's answer is handled
            self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, image, model, prompt_version, text, prompt_tokens, completion_tokens, time.time()))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()
