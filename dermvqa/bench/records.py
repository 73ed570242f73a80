"""Benchmark the training data path at Derm1M scale: records, curriculum, dataset and a 4-worker DataLoader.

Builds N QA records by resampling the 100 real Derm1M rows through `dermvqa data synth` (kept in
--work and reused), then, in a fresh process per size, measures what training does before its
first step: open the train split, order it as the Derm1M recipes do (one epoch, length grouping on),
wrap it in QADataset and read the first --batches packed batches through a DataLoader with
--workers workers. Prints the wall time to the first batch, the main process's peak RSS, and each
worker's unique memory (USS) after the last batch; the main process's CPU seconds to the first batch
are the figure a loaded machine does not inflate. Images are one fixed in-memory picture: the
bench measures the record path, not JPEG decoding.

Usage: python -m dermvqa.bench.records [--sizes 1000000 3000000] [--work DIR] [--repo DIR]
`--repo` measures another checkout (e.g. a worktree of the commit before a change) the same way: this file's
measurement runs there, importing that checkout's packages;
`--eval` also times `dermvqa eval --bench qa:...:test` from its start to its first answer.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RECORDS_PER_ROW = 6.6  # measured on the real rows; the report prints the true count


def build(work: Path, n: int, base: int) -> Path:
    """About n QA records (train + test) under work/qa_<n>, reused when present. Sizes above `base` are
    copies of the base set with their ids and image names made distinct (synthesis on this shared 2-core
    machine runs at a few hundred rows/s, so 3M records would take half an hour to synthesize)."""
    from data_gen.synth import synthesize
    from dermvqa.bench.data_gen import SAMPLE, TERMS, TREE, resampled_csv

    out = work / f"qa_{n}"
    if (out / "report.json").is_file():
        return out
    if n > base:
        return replicate(build(work, base, base), out, -(-n // base))
    csv_path = resampled_csv(work / f"rows_{n}.csv", int(n / RECORDS_PER_ROW))
    t = time.perf_counter()
    report = synthesize(csv_path, SAMPLE / "ontology.json", out, tree_path=TREE, concept_terms_path=TERMS)
    print(f"built {report['records']:,} records in {time.perf_counter() - t:.0f} s -> {out}", flush=True)
    return out


def replicate(src: Path, out: Path, copies: int) -> Path:
    """`copies` copies of src's shards, each record id and image name suffixed with its copy number."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for shard in sorted((src / "qa").rglob("*.parquet")):
        table = pq.read_table(shard)
        for k in range(copies):
            t = table
            for name in ("id", "image"):
                t = t.set_column(t.schema.get_field_index(name), name,
                                 pc.binary_join_element_wise(t.column(name), pa.scalar(f"~{k}"), ""))
            target = out / "qa" / shard.relative_to(src / "qa").with_name(f"{shard.stem}-copy{k}.parquet")
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, target)
    report = json.loads((src / "report.json").read_text())
    (out / "report.json").write_text(json.dumps({"records": report["records"] * copies, "copies_of": str(src)}))
    print(f"built {report['records'] * copies:,} records as {copies} copies of {src}", flush=True)
    return out


def measure(qa_dir: Path, processor_dir: Path, workers: int, batches: int, batch_size: int) -> dict:
    """One size, in this (fresh) process: the data path as the trainer builds it, old or new API."""
    from collections import Counter

    import numpy as np
    import psutil
    import torch
    from PIL import Image
    from transformers import AutoProcessor

    import data_gen.records as rec
    from dermvqa.data.dataset import QADataset
    from dermvqa.train.packing import PackingCollator

    processor = AutoProcessor.from_pretrained(processor_dir)
    image = Image.new("RGB", (64, 64), (180, 90, 80))
    phases = [{"families": "all", "epochs": 1}]  # the Derm1M recipes' curriculum (configs/qwen2.5-7b)
    base_rss = psutil.Process().memory_info().rss
    arrow = hasattr(rec, "open_records")  # records as memory-mapped Arrow, or a list of dicts (before)
    if arrow:
        from dermvqa.train.curriculum import curriculum_order
    else:
        from dermvqa.train.trainer import curriculum_order
    t0 = time.perf_counter()
    if arrow:  # the first open converts the shards into the datasets cache; every later open maps it
        rec.open_records(qa_dir / "qa", split="train")
    cold = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    if arrow:
        records = rec.open_records(qa_dir / "qa", split="train")
        ordered = records.take(curriculum_order(records, phases, 0, group=batch_size))
    else:
        records = rec.read_records(qa_dir / "qa", split="train")
        ordered = curriculum_order(records, phases, 0, group=batch_size)
    opened = time.perf_counter() - t0

    class FixedImage(QADataset):
        def load_image(self, r):
            return image

    dataset = FixedImage(ordered, "/nonexistent", processor, max_length=1024)  # the Derm1M recipes
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=PackingCollator(1024, processor.tokenizer.pad_token_id))
    it = iter(loader)
    next(it)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for _ in range(batches - 1):
        next(it)
    workers_uss = [c.memory_full_info().uss for c in psutil.Process().children()]
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    growth = psutil.Process().memory_info().rss - base_rss
    del it
    mix = {}
    for group in (0, 128):  # the dominant family's share of each 128-sample step (grouped by length or not)
        if arrow:
            fam = np.asarray(records.column("family").to_pylist())[curriculum_order(records, phases, 0, group)]
        else:
            fam = np.asarray([r["family"] for r in curriculum_order(records, phases, 0, group)])
        shares = [max(Counter(fam[s:s + 128]).values()) / 128 for s in range(0, len(fam) - 127, 128)]
        mix[f"dominant family share, group {group}: median/p90"] = \
            f"{np.median(shares):.2f}/{np.percentile(shares, 90):.2f}"
    return {"train records": len(records), "examples in curriculum": len(ordered),
            "first open (Arrow conversion) s": round(cold, 2), "open+order s": round(opened, 2),
            "first batch s": round(first, 2), "first batch main-process CPU s": round(first_cpu, 2),
            f"{batches} batches s": round(elapsed, 1),
            "main peak RSS MB": round(peak), "main RSS growth MB": round(growth / 2**20),
            "worker USS MB": [round(u / 2**20) for u in workers_uss], **mix}


def time_eval(qa_dir: Path, model_dir: Path, out: Path, limit: int = 8) -> float:
    """Seconds from `dermvqa eval --bench qa:DIR:test --limit N` starting to its first answer on disk.

    The first N test images are written (copies of one real HAM10000 photo) so there is something to answer."""
    import shutil

    import numpy as np

    from data_gen.records import open_records
    from dermvqa.bench import SHARED_DATA

    photo = next((SHARED_DATA / "ham10000" / "images").glob("*.jpg"))
    test = open_records(qa_dir / "qa", split="test")
    for name in test.take(np.arange(limit)).column("image").to_pylist():  # the questions eval takes first
        (qa_dir / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, qa_dir / "images" / name)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-m", "dermvqa.cli", "eval", "--model", str(model_dir), "--bench",
                            f"qa:{qa_dir}:test:root={qa_dir / 'images'}", "--out", str(out), "--limit", str(limit),
                            "--no-blind", "--batch-size", "1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    answers = out / "answers.jsonl"
    while not (answers.is_file() and answers.read_text().strip()):
        if run.poll() is not None:
            raise RuntimeError(f"dermvqa eval ended (exit {run.returncode}) before answering")
        time.sleep(0.05)
    first = time.perf_counter() - t0
    run.wait()
    return first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--base", type=int, default=1_000_000, help="largest size synthesized; larger ones copy it")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_records"))
    ap.add_argument("--repo", type=Path, help="checkout whose data path is measured (default: the dermvqa "
                                              "this runs)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16, help="also the length-grouping size (stage2_lora's 16)")
    ap.add_argument("--eval", action="store_true", help="also time `dermvqa eval` to its first answer per size")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = measure(Path(args.child[0]), Path(args.child[1]), args.workers, args.batches, args.batch_size)
        print("RESULT " + json.dumps(result), flush=True)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    processor_dir = args.work / "tiny_model"
    if not (processor_dir / "config.json").is_file():
        from dermvqa.model.tiny import build_tiny_llava

        texts = ["What is the most likely diagnosis? psoriasis eczema melanoma nevus",
                 "The lesion looks like psoriasis, not eczema. Answer: no.", "red, scale, plaque, papule"] * 50
        build_tiny_llava(processor_dir, texts, seed=0, image_size=64, patch_size=8, vocab_size=400)
    print(f"data path of {args.repo or 'this dermvqa'}, {args.workers} workers, {args.batches} batches of "
          f"{args.batch_size}")
    for n in args.sizes:
        qa_dir = build(args.work, n, args.base)
        # a fresh process runs this file's measure() in the measured checkout's folder, where `-c` looks first
        run = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({__file__!r}, run_name='__main__')",
                              "--workers", str(args.workers), "--batches", str(args.batches),
                              "--batch-size", str(args.batch_size), "--child", str(qa_dir.resolve()),
                              str(processor_dir.resolve())], cwd=args.repo, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             capture_output=True, text=True)
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{n:,}: failed\n{run.stderr[-3000:]}")
            continue
        print(f"{n:,} records: " + ", ".join(f"{k} {v}" for k, v in json.loads(line[7:]).items()), flush=True)
        if args.eval:
            print(f"{n:,} records: dermvqa eval answered its first question after "
                  f"{time_eval(qa_dir, processor_dir, args.work / f'eval_{n}'):.1f} s", flush=True)


if __name__ == "__main__":
    main()
