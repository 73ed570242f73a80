"""Pass 1 of synthesis: read every row once to decide what each can support and what the corpus holds.

Per row: why it is rejected (if it is), a non-fatal note (an unknown label), its split, and its
resolved diagnosis paths. For the corpus: diagnosis, concept, location and sign counts. Then the
balanced yes/no and multiple-choice plans over the whole corpus. Blocks of rows can be scanned in
forked workers; the result is the same as one process scanning in order.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from data_gen import gates
from data_gen.balance import plan_multiple_choice, plan_yes_no
from data_gen.concepts import ConceptVocab
from data_gen.corpus import Corpus
from data_gen.derm1m import iter_parts
from data_gen.families.common import RowPlan
from data_gen.ontology import Ontology
from data_gen.split import assign_split, dhash

DUPLICATE = ("duplicate image row (filename seen before)", "")


@dataclass
class ScanInput:
    csv_path: Path
    ontology: Ontology
    images_dir: Path | None
    seed: int
    test_fraction: float
    chunk_rows: int
    strict: bool
    encoding: str
    val_fraction: float = 0.0


@dataclass
class Scan:
    filename: list[str] = field(default_factory=list)
    reason: list[tuple[str, str] | None] = field(default_factory=list)
    notes: list[tuple[str, str] | None] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    paths: list[tuple] = field(default_factory=list)
    plans: dict[int, RowPlan] = field(default_factory=dict)
    yes_no_dropped: int = 0


def _scan_rows(inp: ScanInput, rows) -> tuple[list, dict]:
    """Per-row results and the corpus counts of one block (duplicates are marked later, in order)."""
    corpus = Corpus(inp.ontology, ConceptVocab())
    out = []
    for row in rows:
        where = f"{inp.csv_path}: data row {row.index + 1} ({row.filename or 'no filename'})"
        res = inp.ontology.resolve(row.disease_label, row.hierarchical_label) if row.disease_label else None
        paths = res.paths if res is not None else ()
        note = None
        if res is not None and res.problem:
            if inp.strict:
                raise ValueError(f"{where}: {res.problem} {res.detail}")
            note = (f"{res.problem} (diagnosis questions skipped)", f"row {row.index + 1}: {res.detail}")
        if row.problem and inp.strict:
            raise ValueError(f"{where}: {row.problem} {row.detail}")
        r, detail = gates.row_gate(row, bool(paths))
        reason = (r, detail) if r else None
        group_key = row.filename
        if reason is None and inp.images_dir is not None:
            image = inp.images_dir / row.filename
            try:
                if not image.is_file():
                    raise ValueError(f"image file not found: {image}")
                group_key = dhash(image)
            except ValueError as e:
                if inp.strict:
                    raise ValueError(f"{where}: {e}") from e
                reason = ("image file missing" if not image.is_file() else "image unreadable", str(image))
        if reason is None:
            corpus.observe(row, paths, res.hier_nodes if res is not None else ())
        split = row.split or assign_split(group_key, inp.seed, inp.test_fraction, inp.val_fraction)  # given wins
        out.append((row.filename, reason, note, split, paths))
    return out, corpus.state()


_FORKED: dict = {}  # what forked scan workers inherit: the input and a shared progress counter


def _scan_worker(w: int) -> list:
    inp, workers, done = _FORKED["input"], _FORKED["workers"], _FORKED["done"]
    results = []
    for k, rows in iter_parts(inp.csv_path, inp.chunk_rows, inp.encoding, only=_Every(workers, w)):
        results.append((k, *_scan_rows(inp, rows)))
        with done.get_lock():
            done.value += len(rows)
    return results


class _Every:
    """`k in _Every(n, w)` is k % n == w: block membership without knowing the block count."""

    def __init__(self, n: int, w: int):
        self.n, self.w = n, w

    def __contains__(self, k: int) -> bool:
        return k % self.n == self.w


def scan(inp: ScanInput, corpus: Corpus, workers: int | None = None, progress: bool = True) -> Scan:
    from tqdm import tqdm

    workers = workers or min(2, os.cpu_count() or 1)
    # Forking only pays off with several blocks; ~200 bytes per Derm1M row is a low estimate of row size.
    workers = min(workers, max(1, -(-os.path.getsize(inp.csv_path) // (200 * inp.chunk_rows))))
    bar = tqdm(desc="scan", unit="row", disable=not progress)
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        blocks = []
        for k, rows in iter_parts(inp.csv_path, inp.chunk_rows, inp.encoding):
            blocks.append((k, *_scan_rows(inp, rows)))
            bar.update(len(rows))
    else:
        ctx = mp.get_context("fork")
        _FORKED.update(input=inp, workers=workers, done=ctx.Value("q", 0))
        with ctx.Pool(workers) as pool:
            pending = pool.map_async(_scan_worker, range(workers))
            while not pending.ready():
                time.sleep(0.2)
                bar.update(_FORKED["done"].value - bar.n)
            blocks = sorted((b for part in pending.get() for b in part), key=lambda b: b[0])
        bar.update(_FORKED["done"].value - bar.n)
        _FORKED.clear()
    bar.close()

    result, seen = Scan(), set()
    items_by_split: dict[str, list] = defaultdict(list)
    for _, rows, state in blocks:
        corpus.absorb(state)
        for filename, reason, note, split, paths in rows:
            if filename in seen:
                reason = DUPLICATE
            seen.add(filename)
            i = len(result.reason)
            result.filename.append(filename)
            result.reason.append(reason)
            result.notes.append(note)
            result.split.append(split)
            result.paths.append(paths)
            if reason is None and len(paths) == 1 and not inp.ontology.is_grouping(paths[0]):
                items_by_split[split].append((i, filename, paths[0]))
    corpus.finalize()
    for split, items in sorted(items_by_split.items()):
        for it in items:
            result.plans[it[0]] = RowPlan()
        result.yes_no_dropped += plan_yes_no(items, corpus, inp.seed, split, result.plans)
        plan_multiple_choice(items, corpus, inp.seed, result.plans)
    return result
