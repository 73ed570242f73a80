"""Training samples that cannot be used (unreadable image, conversation longer than max_length): logged, counted, capped.

One bad file among 400k must not kill an 8-GPU run, nor hide: every skip is appended as a JSON line
to the run's `skipped_samples.jsonl` (one short write with O_APPEND, so DataLoader workers and ranks
can share the file), and once more distinct records were skipped than `max_fraction` of the
corpus the run stops with the list. A resumed run meets the same records again and skips them again;
counts are of distinct record ids, so a resume does not double them.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path


class TooManySkipped(RuntimeError):
    """More records were unusable than the run allows."""


class SkipLog:
    def __init__(self, path: str | Path | None, n_records: int, max_fraction: float = 0.001):
        self.path = Path(path) if path else None
        self.budget = int(max_fraction * n_records)
        self.max_fraction = max_fraction

    def add(self, record: dict, reason: str) -> None:
        """Log one skipped record; raise TooManySkipped once the distinct count exceeds the budget."""
        if self.path is None:
            raise TooManySkipped(f"record {record['id']} ({record['image']}): {reason}")
        line = json.dumps({"id": record["id"], "image": record["image"], "reason": reason}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        skipped = read_skips(self.path)
        if len(skipped) > self.budget:
            shown = "; ".join(f"{rid}: {reason}" for rid, reason in list(skipped.items())[:10])
            raise TooManySkipped(f"{len(skipped)} training records could not be used, more than "
                                 f"data.max_skipped_fraction={self.max_fraction} allows ({self.budget}); see "
                                 f"{self.path}. First ones: {shown}")


def read_skips(path: str | Path) -> dict[str, str]:
    """Distinct skipped record ids -> reason, in first-skip order (empty when nothing was skipped)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            out.setdefault(entry["id"], entry["reason"])
    return out


def skip_summary(path: str | Path) -> dict:
    """{count, by_reason} for the run log and the model folder's data summary."""
    skipped = read_skips(path)
    kinds = Counter(reason.split(":", 1)[0] for reason in skipped.values())
    return {"count": len(skipped), "by_reason": dict(kinds)}
