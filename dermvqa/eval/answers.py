"""answers.jsonl: one line per answered (item, blind) pair, appended as answers come; a rerun resumes.

`run.json` beside it pins the settings the answers were made with, so a rerun with another model,
benchmark or mode into the same folder is refused instead of mixing answers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from atomic_files import write_text_atomic


class AnswerLog:
    def __init__(self, out_dir: Path, settings: dict):
        self.path = out_dir / "answers.jsonl"
        run_file = out_dir / "run.json"
        if run_file.exists():
            before = json.loads(run_file.read_text())
            if before != settings:
                diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
                raise ValueError(f"{out_dir} holds answers made with other settings ({', '.join(diff)}); "
                                 f"use a new --out folder")
        else:
            write_text_atomic(run_file, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        self.rows: dict[tuple[str, bool], dict] = {}
        self.dropped_partial_line = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        for n, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) and not line.endswith("\n"):  # a write cut short by a kill
                    write_text_atomic(self.path, "".join(lines[:-1]))
                    self.dropped_partial_line = True
                    break
                raise ValueError(f"{self.path}: line {n} is not valid JSON") from None
            self.rows[(row["id"], row["blind"])] = row

    def has(self, item_id: str, blind: bool) -> bool:
        return (item_id, blind) in self.rows

    def get(self, item_id: str, blind: bool) -> dict | None:
        return self.rows.get((item_id, blind))

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.rows[(row["id"], row["blind"])] = row
            f.flush()
            os.fsync(f.fileno())
