"""Data-parallel eval: `--shard I/N` answers a deterministic 1/N of the items; `dermvqa eval merge` joins them.

The rule: shard I of N (1-based) keeps the items whose position in the benchmark's item order (the loader's
order, after --limit, before images are checked) satisfies pos % N == I - 1. Each shard folder holds its
answers.jsonl, run.json (the answer settings) and shard.json (this marker: which shard, the selection and
scoring settings, the benchmark's sha256); the merge checks the shards agree and cover every item exactly
once. `--shard auto` under torchrun takes I = RANK + 1 and N = WORLD_SIZE.

Greedy replies do not depend on which items share a batch, so in generate mode the merged answers.jsonl and
metrics.json equal the one-process run's byte for byte. Option probabilities (likelihood mode) move in the
last float32 bits with the batch's padding width, as between two one-process runs at other batch sizes:
the replies and reply-based metrics stay identical, probability-based ones (AUC, ECE) can differ slightly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from atomic_files import write_text_atomic

SHARD_FILE = "shard.json"


def parse_shard(text: str) -> tuple[int, int]:
    """(I, N) from "I/N" (1 <= I <= N), or from RANK / WORLD_SIZE for "auto"."""
    if text == "auto":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ValueError("--shard auto: RANK and WORLD_SIZE are not set (run under torchrun, or pass I/N)")
        return int(os.environ["RANK"]) + 1, int(os.environ["WORLD_SIZE"])
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N (e.g. 2/4), or auto")
    return int(i), int(n)


def select(items: list, shard: tuple[int, int]) -> list:
    """The items of shard (I, N): positions pos with pos % N == I - 1."""
    i, n = shard
    return items[i - 1::n]


def write_marker(out: Path, shard: tuple[int, int], run: dict) -> None:
    """shard.json; a rerun into the folder must be the same shard of the same selection."""
    marker = {"shard": shard[0], "of": shard[1], **run}
    path = out / SHARD_FILE
    if path.exists() and json.loads(path.read_text()) != marker:
        raise ValueError(f"{path}: this folder holds another shard or selection ({path.read_text().strip()}); "
                         f"use a new --out folder")
    write_text_atomic(path, json.dumps(marker, indent=2, sort_keys=True) + "\n")


def read_shards(dirs: list[Path]) -> list[tuple[Path, dict, dict]]:
    """(folder, marker, run settings) per shard folder, checked to be the shards 1..N of one run."""
    if not dirs:
        raise ValueError("merge: no shard folders given")
    shards = []
    for d in dirs:
        for name in (SHARD_FILE, "run.json"):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d}: no {name}; not a `dermvqa eval --shard` folder")
        shards.append((d, json.loads((d / SHARD_FILE).read_text()), json.loads((d / "run.json").read_text())))
    first_dir, first, settings = shards[0]
    for d, marker, run in shards[1:]:
        for what, a, b in (("settings (run.json)", run, settings),
                           (SHARD_FILE, {k: v for k, v in marker.items() if k != "shard"},
                            {k: v for k, v in first.items() if k != "shard"})):
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ValueError(f"merge: {d} and {first_dir} differ in {what}: {', '.join(diff)}")
    numbers = sorted(m["shard"] for _, m, _ in shards)
    if numbers != list(range(1, first["of"] + 1)):
        raise ValueError(f"merge: expected shards 1..{first['of']} once each, got {numbers}")
    return sorted(shards, key=lambda s: s[1]["shard"])
