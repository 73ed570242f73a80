"""Benchmark QA synthesis: a Derm1M-sized CSV resampled from the 100 real rows, timed at several sizes.

Prints wall time, CPU time (this process + its workers; on a shared machine the wall time depends
on other load, CPU time does not), rows/s and QA/s per size, and the ratio to a plain baseline
measured in the same run (reading the same CSV with pandas, nothing else).
Usage: OMP_NUM_THREADS=1 python -m dermvqa.bench.data_gen [--sizes 10000 100000 403563] [--work DIR]
"""
from __future__ import annotations

import argparse
import csv
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from dermvqa.bench import SHARED_DATA

DERM1M = SHARED_DATA / "derm1m"
SAMPLE = DERM1M / "third_party" / "HappyDoubleJ__DermAgent-wonjun" / "dataset" / "Derm1M"
TREE = DERM1M / "third_party" / "XiejiLi__MAGEN-O-MAKE" / "magen" / "assets" / "derm1m_ontology_tree.json"
TERMS = DERM1M / "concept_annotation" / "term_lists" / "ConceptTerms.json"


def resampled_csv(path: Path, n: int, seed: int = 0) -> Path:
    """n rows drawn with replacement from the real sample, each with its own filename."""
    with open(SAMPLE / "Derm1M_v2_pretrain_ontology_sampled_100.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for i in range(n):
            r = dict(rng.choice(rows))
            stem, dot, ext = r["filename"].rpartition(".")
            r["filename"] = f"{stem}_r{i}{dot}{ext}"
            w.writerow(r)
    return path


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 403_563])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir, removed after)")
    args = ap.parse_args()
    import pandas as pd

    from data_gen.synth import synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_data_gen_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'rows':>8} {'wall s':>7} {'scan s':>7} {'CPU s':>7} {'rows/s':>8} {'records':>9} {'QA/s':>8} "
          f"{'read s':>7} {'synth/read':>10}")
    try:
        for n in args.sizes:
            path = resampled_csv(work / f"bench_{n}.csv", n)
            t = time.perf_counter()
            pd.read_csv(path, dtype=str, keep_default_na=False)
            read_s = time.perf_counter() - t
            out = work / f"out_{n}"
            shutil.rmtree(out, ignore_errors=True)
            t, cpu = time.perf_counter(), _cpu()
            report = synthesize(path, SAMPLE / "ontology.json", out, tree_path=TREE, concept_terms_path=TERMS,
                                progress=False)
            s, cpu = time.perf_counter() - t, _cpu() - cpu
            print(f"{n:>8} {s:>7.1f} {report['seconds']['scan']:>7.1f} {cpu:>7.1f} {n / s:>8.0f} "
                  f"{report['records']:>9} {report['records'] / s:>8.0f} "
                  f"{read_s:>7.2f} {s / read_s:>10.1f}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
