"""QA synthesis orchestrator: Derm1M CSV + ontology -> parquet QA shards, report.json and report.md.

Pass 1 (scan) reads the whole CSV once: resolves labels, applies the row gates, assigns each image
its split, and builds the corpus vocabulary and the balanced yes/no and multiple-choice plans.
Pass 2 turns the rows of this shard's parts into records. The CSV is cut into parts of `chunk_rows`
rows; part k belongs to shard k % N and is written to qa/<split>/part-<k>.parquet, then a stats file
marks it done. A killed run resumes at the first part without stats; N shard runs write exactly
the files of one full run, byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from data_gen import gates
from data_gen.concepts import ConceptVocab, load_concept_terms
from data_gen.corpus import Corpus
from data_gen.derm1m import check_columns, iter_parts
from data_gen.families import CAPTION_TEXT, TEMPLATE_WORDS, resolve
from data_gen.families.common import RowContext, RowPlan
from data_gen.families.yes_no import asked_name
from data_gen.ontology import Ontology
from data_gen.records import write_parquet
from atomic_files import write_text_atomic
from data_gen.report import merge_stats, write_report
from data_gen.scan import Scan, ScanInput
from data_gen.scan import scan as run_scan
from data_gen.split import check_fractions

# Most records one image may give per family (more would over-weight rows with many concepts/levels).
PER_IMAGE_CAP = {"category": 3, "morphology": 3}  # morphology: open + two closed (train rows only)
DEFAULT_CAP = 2


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gate_records(records, row, rejections, fams_count):
    """Apply the record gates; return the kept records."""
    kept, seen = [], set()
    structured = gates.words(" ".join([row.disease_label, row.hierarchical_label, *row.concepts, *row.locations,
                                       *row.symptoms]))
    caption_words = gates.words(row.caption) - TEMPLATE_WORDS - structured - gates.STOPWORDS
    for rec in records:
        def example(extra=""):
            return f"row {row.index + 1} {row.filename}: {rec.question[:60]!r} -> {rec.answer[:60]!r} {extra}".rstrip()
        leaked = gates.leak(rec.answer)
        if leaked:
            rejections.add(f"{rec.family}: answer leak phrase", example(f"({leaked})"))
            continue
        if rec.answer_type == "open" and gates.answer_in_question(rec.question, rec.answer):
            rejections.add(f"{rec.family}: answer inside the question", example())
            continue
        extra = set() if rec.family in CAPTION_TEXT else gates.words(rec.answer) & caption_words
        if extra:  # words only the caption knows, unless the question or options brought them
            extra -= gates.words(" ".join([rec.question, *rec.options, *rec.ontology_path]))
        if extra:
            rejections.add(f"{rec.family}: caption-only fact in answer", example(str(sorted(extra))))
            continue
        key = (rec.question.lower(), rec.answer.lower())
        if key in seen:
            rejections.add(f"{rec.family}: duplicate question/answer for the image", example())
            continue
        seen.add(key)
        if fams_count[rec.family] >= PER_IMAGE_CAP.get(rec.family, DEFAULT_CAP):
            rejections.add(f"{rec.family}: per-image cap", example())
            continue
        fams_count[rec.family] += 1
        kept.append(rec)
    return kept


def _part_stats(records, rejections, rows, accepted, part):
    yes_no = defaultdict(lambda: [0, 0])
    for r in records:
        if r.family == "yes_no":
            yes_no[f"{r.split}: {asked_name(r.answer, r.answer_index)}"][r.answer_index] += 1
    images = {(r.split, r.image) for r in records}
    return {"part": part, "rows": rows, "rows_accepted": accepted, "records": len(records),
            "families": Counter(r.family for r in records), "answer_types": Counter(r.answer_type for r in records),
            "splits": Counter(r.split for r in records), "sources": Counter(r.source for r in records),
            "source_types": Counter(r.source_type for r in records),
            "ontology_levels": Counter(str(len(r.ontology_path)) for r in records),
            "images_by_split": Counter(split for split, _ in images), "yes_no_asked": dict(yes_no),
            "rejections": rejections.as_dict()}


@dataclass
class _Job:
    csv_path: Path
    out_dir: Path
    encoding: str
    chunk_rows: int
    families: list
    corpus: Corpus
    scan: Scan
    seed: int


def _make_part(job: _Job, k: int, chunk) -> None:
    """Build, gate and write one part; its stats file, written last, marks it done."""
    scan, rejections, records, accepted = job.scan, gates.Rejections(), [], 0
    not_applicable, tallies = Counter(), Counter()
    for row in chunk:
        i = row.index
        if scan.notes[i]:
            rejections.add(*scan.notes[i])
        if scan.reason[i] is not None:
            reason, detail = scan.reason[i]
            rejections.add(reason, f"row {i + 1} {row.filename}: {detail}".rstrip(": "))
            continue
        accepted += 1
        ctx = RowContext(row, scan.paths[i], job.corpus, scan.plans.get(i, RowPlan()), scan.split[i], job.seed)
        built = [rec for fam in job.families for rec in fam.build(ctx)]
        for reason, detail in ctx.rejected:
            rejections.add(reason, f"row {i + 1} {row.filename}: {detail}".rstrip(": "))
        not_applicable.update(ctx.missing)
        tallies.update(ctx.tally)
        records += _gate_records(built, row, rejections, Counter())
    for split in sorted({r.split for r in records}):  # train/test, or the splits the CSV gives
        write_parquet([r for r in records if r.split == split], job.out_dir / "qa" / split / f"part-{k:05d}.parquet")
    stats = _part_stats(records, rejections, len(chunk), accepted, k)
    stats["not_applicable"] = not_applicable
    stats["tallies"] = tallies
    _write_json(job.out_dir / "parts" / f"part-{k:05d}.json", stats)


def _work(job: _Job, parts: list[int]) -> None:
    for k, chunk in iter_parts(job.csv_path, job.chunk_rows, job.encoding, only=set(parts)):
        _make_part(job, k, chunk)


def _run_parts(job: _Job, todo: list[int], workers, progress: bool, desc: str, total_rows: int) -> None:
    """Process the parts here, or in forked workers (they inherit the scan, nothing is pickled)."""
    from tqdm import tqdm

    workers = min(workers or min(2, os.cpu_count() or 1), len(todo))
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        with tqdm(total=total_rows, desc=desc, unit="row", disable=not progress) as bar:
            for k, chunk in iter_parts(job.csv_path, job.chunk_rows, job.encoding, only=set(todo)):
                _make_part(job, k, chunk)
                bar.update(len(chunk))
        return
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_work, args=(job, todo[w::workers])) for w in range(workers)]
    for p in procs:
        p.start()
    stats = [job.out_dir / "parts" / f"part-{k:05d}.json" for k in todo]
    rows_of = {path: min(job.chunk_rows, len(job.scan.reason) - k * job.chunk_rows) for k, path in zip(todo, stats)}
    with tqdm(total=total_rows, desc=f"{desc} ({workers} workers)", unit="row", disable=not progress) as bar:
        while any(p.is_alive() for p in procs):
            time.sleep(0.2)
            bar.update(sum(n for path, n in rows_of.items() if path.exists()) - bar.n)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} synthesis worker(s) failed (exit codes {failed}); rerun to resume")


def synthesize(csv_path, ontology_path, out_dir, images_dir=None, seed=0, families=None, shard=(0, 1),
               test_fraction=0.2, *, tree_path=None, concept_terms_path=None, chunk_rows=10_000, strict=False,
               encoding="utf-8", n_options=4, workers=None, overwrite=False, progress=True, val_fraction=0.0) -> dict:
    """Write QA records for the rows of `shard` = (I, N) under out_dir/qa/ and return the report.
    `workers` processes (default: up to 2 CPUs) share this shard's parts; the output does not depend on it.
    A folder holding a run with other inputs or settings is refused unless `overwrite` (which deletes it)."""
    t0 = time.time()
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
    check_columns(csv_path, encoding)
    check_fractions(test_fraction, val_fraction)
    fams = resolve(families)
    ontology = Ontology.load(ontology_path, tree_path)
    synonyms = load_concept_terms(concept_terms_path) if concept_terms_path else None
    settings = {"csv": _file_digest(csv_path), "ontology": _file_digest(Path(ontology_path)),
                "tree": _file_digest(Path(tree_path)) if tree_path else None,
                "concept_terms": _file_digest(Path(concept_terms_path)) if concept_terms_path else None,
                "images": bool(images_dir), "seed": seed, "families": [f.NAME for f in fams],
                "test_fraction": test_fraction, "chunk_rows": chunk_rows, "n_options": n_options, "strict": strict,
                **({"val_fraction": val_fraction} if val_fraction else {})}  # absent at 0: older runs still resume
    run_file = out_dir / "run.json"
    if overwrite:
        for old in ("qa", "parts"):
            shutil.rmtree(out_dir / old, ignore_errors=True)
        for old in ("run.json", "report.json", "report.md"):
            (out_dir / old).unlink(missing_ok=True)
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != settings:
            raise ValueError(f"{out_dir} holds a run with other inputs or settings; use a new --out "
                             f"or overwrite=True (differences: "
                             f"{sorted(k for k in settings if settings[k] != previous.get(k))})")
    else:
        _write_json(run_file, settings)

    corpus = Corpus(ontology, ConceptVocab(synonym_groups=synonyms))
    inp = ScanInput(csv_path, ontology, Path(images_dir) if images_dir else None, seed, test_fraction, chunk_rows,
                    strict, encoding, val_fraction)
    scan = run_scan(inp, corpus, workers, progress)
    n_rows = len(scan.reason)
    n_parts = max(1, -(-n_rows // chunk_rows))
    stats_dir = out_dir / "parts"
    todo = [k for k in range(n_parts) if k % count == index and not (stats_dir / f"part-{k:05d}.json").exists()]

    todo_rows = sum(min(chunk_rows, n_rows - k * chunk_rows) for k in todo)
    t_scan = time.time() - t0
    job = _Job(csv_path, out_dir, encoding, chunk_rows, fams, corpus, scan, seed)
    _run_parts(job, todo, workers, progress, f"synth shard {index}/{count}", todo_rows)

    done = {p.name: json.loads(p.read_text()) for p in sorted(stats_dir.glob("part-*.json"))}
    report = merge_stats(list(done.values()), n_parts, settings, scan.yes_no_dropped)
    write_report(out_dir, report)
    elapsed = time.time() - t0
    report["seconds"] = {"scan": round(t_scan, 2), "total": round(elapsed, 2)}  # returned only, not in report.json
    if progress:
        made = sum(done[f"part-{k:05d}.json"]["records"] for k in todo)
        print(f"[data synth] shard {index}/{count}: {len(todo)} parts, {todo_rows} rows -> {made} records in "
              f"{elapsed:.1f}s ({todo_rows / max(elapsed, 1e-9):.0f} rows/s, scan included); "
              f"{report['parts_done']}/{n_parts} parts done; rows accepted {report['rows']['accepted']}/"
              f"{report['rows']['read']}; report at {out_dir / 'report.md'}")
    return report
