"""Export QA parquet shards as LLaVA-style conversation JSON (`[{id, image, conversations:[...]}]`).

The image token goes at the start of an image's first human turn. Every record of an image sits in
one shard file, so grouping is done file by file and the output is streamed, never held whole.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from atomic_files import honour_umask


def _conversation(image: str, records: list[dict], cid: str) -> dict:
    turns = []
    for i, r in enumerate(records):
        prompt = ("<image>\n" if i == 0 else "") + r["question"]
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": r["answer"]}]
        for follow in r.get("follow_ups") or []:  # a multi-turn record continues its own conversation
            turns += [{"from": "human", "value": follow["question"]}, {"from": "gpt", "value": follow["answer"]}]
    return {"id": cid, "image": image, "conversations": turns,
            "families": [r["family"] for r in records], "split": records[0]["split"]}


def export(qa_dir: str | Path, out_path: str | Path, split: str | None = None, families: list[str] | None = None,
           group_by_image: bool = True) -> int:
    """Write the JSON file atomically; return how many conversations it holds."""
    qa_dir, out_path = Path(qa_dir), Path(out_path)
    files = sorted(qa_dir.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no QA parquet shards under {qa_dir}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".tmp")
    n = 0
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("[")
        for file in files:
            rows = [r for r in pq.read_table(file).to_pylist()
                    if (split is None or r["split"] == split) and (not families or r["family"] in families)]
            if group_by_image:
                by_image: dict[str, list[dict]] = {}
                for r in rows:
                    by_image.setdefault(r["image"], []).append(r)
                convs = [_conversation(img, recs, recs[0]["id"]) for img, recs in by_image.items()]
            else:
                convs = [_conversation(r["image"], [r], r["id"]) for r in rows]
            for c in convs:
                f.write(("\n" if n == 0 else ",\n") + json.dumps(c, ensure_ascii=False))
                n += 1
        f.write("\n]\n")
    honour_umask(tmp)
    os.replace(tmp, out_path)
    return n
