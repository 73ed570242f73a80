"""SQLite cache of paid endpoint replies (eval's openai: answers, its judge's verdicts, the data teacher's
conversations), one committed row per reply, and the history of the requests that brought none.

A row's key is the sha256 of what the caller says makes a request (cache_key: eval's endpoint URL, model,
prompt, image pixels' sha256 and settings; the teacher's image, prompt version, model and request body), so a
rerun or a run after kill -9 sends no answered request again, while another model, prompt, image or setting
asks anew. WAL journaling and a commit per row: a killed process loses no reply it had received. Only answers
are stored as answers (the reply text as it came, with its reasoning, finish_reason and token usage); a request
that failed (HTTP error, timeout, malformed body, empty, refused or reasoning-only reply) is appended to the
table's failure history instead (`<table>_failures`: reason, HTTP status, the server's message, tries, time),
so a rerun asks it again and the history says what went wrong when. Nothing secret is stored (no headers, no key).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from chat_endpoint.protocol import Reply

TABLES = ("answers", "verdicts")
CACHE_FILE = "cache.sqlite"
COLUMNS = ("key", "model", "prompt", "image_sha256", "reply", "served_model", "created", "detail")
# The table `dermvqa data teach` wrote before it shared this cache: its answers are moved into COLUMNS on open.
TEACHER_COLUMNS = ["key", "image", "model", "prompt_version", "text", "prompt_tokens", "completion_tokens", "created"]


def cache_key(*parts) -> str:
    blob = json.dumps(list(parts), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """key -> Reply in one table of a SQLite file, and the failure history beside it; safe to share between
    threads."""

    def __init__(self, path: str | Path, table: str):
        if table not in TABLES:
            raise ValueError(f"cache table must be one of {TABLES}, got {table!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table, self.failures = table, f"{table}_failures"
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.db:
                self._create_tables()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a reply cache ({e}); move it aside or use another --out") from e

    def _create_tables(self) -> None:
        columns = [row[1] for row in self.db.execute(f"PRAGMA table_info({self.table})")]
        teacher_rows = []
        if columns == TEACHER_COLUMNS:
            teacher_rows = self.db.execute(f"SELECT {', '.join(TEACHER_COLUMNS)} FROM {self.table}").fetchall()
            self.db.execute(f"DROP TABLE {self.table}")
        elif columns and "detail" not in columns:  # eval's cache from before replies kept their reasoning
            self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN detail TEXT")
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, "
                        "image_sha256 TEXT, reply TEXT, served_model TEXT, created REAL, detail TEXT)")
        self.db.executemany(f"INSERT INTO {self.table} VALUES (?, ?, ?, '', ?, '', ?, ?)",
                            [(key, model, f"{version}: {image}", text, created,
                              json.dumps({"prompt_tokens": pt, "completion_tokens": ct}, sort_keys=True))
                             for key, image, model, version, text, pt, ct, created in teacher_rows])
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.failures} (key TEXT, model TEXT, prompt TEXT, "
                        "image_sha256 TEXT, reason TEXT, status INTEGER, message TEXT, tries INTEGER, created REAL)")

    def get(self, key: str) -> Reply | None:
        with self.lock:
            row = self.db.execute(f"SELECT reply, served_model, detail FROM {self.table} WHERE key = ?",
                                  (key,)).fetchone()
        if row is None:
            return None
        detail = json.loads(row[2]) if row[2] else {}
        return Reply(row[0], detail.get("reasoning", ""), detail.get("finish_reason"), "", row[1] or "",
                     detail.get("prompt_tokens", 0), detail.get("completion_tokens", 0))

    def put(self, key: str, model: str, prompt: str, image_sha256: str, reply: Reply) -> None:
        detail = {"reasoning": reply.reasoning, "finish_reason": reply.finish_reason,
                  "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        with self.lock, self.db:  # one transaction per reply, committed before the reply is used
            self.db.execute(f"INSERT OR REPLACE INTO {self.table} ({', '.join(COLUMNS)}) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, model, prompt, image_sha256, reply.content, reply.served_model, time.time(),
                             json.dumps(detail, sort_keys=True, ensure_ascii=False)))

    def put_failure(self, key: str, model: str, prompt: str, image_sha256: str, reason: str, status: int | None,
                    message: str, tries: int) -> None:
        with self.lock, self.db:
            self.db.execute(f"INSERT INTO {self.failures} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, model, prompt, image_sha256, reason, status, message, tries, time.time()))

    def close(self) -> None:
        with self.lock:
            self.db.close()
