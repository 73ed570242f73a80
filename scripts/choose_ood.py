"""Choose a model's out-of-distribution detector on selection photos only, then write it into the model folder.

    .venv/bin/python scripts/choose_ood.py --model runs/ham10000/train/model --qa runs/ham10000/data/qa \\
        --images ../shared/data/ham10000/images --inside-val ham10000-val --write
    .venv/bin/python scripts/choose_ood.py --model runs/quickstart/train/model --qa runs/quickstart/world/qa \\
        --images runs/quickstart/world/images --write

Candidates: every pooling of dermvqa.model.ood (POOLINGS) with and without the image colour/texture statistics,
each fitted on the model's own training images exactly as training fits it (fit_split: the same fitted and
held-out images), and an abstention threshold at the `q` point of the held-out training images' scores for q in
QUANTILES. Selection photos (from --data, ../shared/data by default), never the ones scripts/bench_ood_real.py
measures on: the Fitzpatrick17k train split (ajl_subset.csv, clinical atlas photos) as the outside set, and as
in-distribution check `--inside-val` (the HAM10000 validation split of the DermaMNIST split, for a model trained
on HAM10000) or, by default, the held-out training images themselves; for a model not trained on HAM10000 the
HAM10000 validation images are a second outside set. Rule: among candidates whose in-distribution abstention
is at most --max-abstain (0.05), the one flagging the largest share of its worst outside set; ties go to the
higher q (fewer abstentions), then to the larger margin (the worst outside set's median score over the threshold). With --write the chosen summary replaces the folder's dermvqa_ood.* files, its
JSON carrying the selection figures; PAD-UFES-20, the Fitzpatrick17k test split and the HAM10000 test split
stay unseen until bench_ood_real.py scores them.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.records import read_records  # noqa: E402
from dermvqa.eval.classify import auc  # noqa: E402
from dermvqa.model.ood import POOLINGS, fit, fit_split, image_statistics, pooled_feature_sets, training_images  # noqa: E402

QUANTILES = (0.95, 0.97, 0.99, 0.995)


def selection_sets(data: Path, limit: int) -> dict[str, list[Path]]:
    """Fitzpatrick17k train photos and HAM10000 validation images (a fixed sample of `limit` each, seed 0)."""
    f17k, ham = data / "fitzpatrick17k", data / "ham10000"
    sets = {"fitzpatrick17k-train": sorted(f17k / "images" / f"{r['md5hash']}.jpg" for r in csv.DictReader(
                open(f17k / "ajl_subset.csv", encoding="utf-8")) if r["ajl_split"] == "train"),
            "ham10000-val": sorted(ham / "images" / f"{r['image_id']}.jpg" for r in csv.DictReader(
                open(ham / "dermamnist_split.csv", encoding="utf-8")) if r["split"] == "val")}
    return {k: sorted(random.Random(0).sample(v, min(limit, len(v)))) for k, v in sets.items()}


def features(model, processor, paths: list[Path], desc: str, chunk: int = 256) -> dict[str, torch.Tensor]:
    """{pooling: pooled features, "stats": image statistics} of every photo, one tower pass per chunk."""
    parts = []
    for i in tqdm(range(0, len(paths), chunk), desc=desc, unit="chunk"):
        ims = [Image.open(p).convert("RGB") for p in paths[i:i + chunk]]
        parts.append({**pooled_feature_sets(model, processor, ims), "stats": image_statistics(ims)})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pick(feats: dict, pooling: str, stats: bool) -> torch.Tensor:
    return torch.cat([feats[pooling], feats["stats"]], 1) if stats else feats[pooling]


def candidate_rows(train: dict, fit_labels: list[str], scored: dict, inside: str | None, outside: list[str]) -> list:
    """One row per (pooling, image statistics, quantile): threshold, in-distribution abstention (`inside`: a set
    of `scored`, or None for the held-out training images), flagged share and AUROC per outside set. `train`
    holds the fitted images' features first (len(fit_labels) rows), then the held-out ones."""
    n_fit, rows = len(fit_labels), []
    for pooling in POOLINGS:
        for stats in (False, True):
            x = pick(train, pooling, stats)
            summary = fit(x[:n_fit], fit_labels, x[n_fit:])
            held = summary.scores(x[n_fit:]).numpy()
            s = {name: summary.scores(pick(f, pooling, stats)).numpy() for name, f in scored.items()}
            inside_scores = held if inside is None else s[inside]
            for q in QUANTILES:
                threshold = float(np.quantile(held, q))
                row = {"pooling": pooling, "image_stats": stats, "quantile": q, "threshold": threshold,
                       "abstain_inside": float((inside_scores > threshold).mean())}
                for o in outside:
                    row[f"flagged_{o}"] = float((s[o] > threshold).mean())
                    row[f"auroc_{o}"] = auc(np.r_[inside_scores, s[o]],
                                            np.r_[np.zeros(len(inside_scores), bool), np.ones(len(s[o]), bool)])
                row["worst_flagged"] = min(row[f"flagged_{o}"] for o in outside)
                row["margin"] = min(float(np.median(s[o])) for o in outside) / threshold
                rows.append(row)
    return rows


def choose(rows: list[dict], max_abstain: float) -> dict | None:
    """The rule of the module docstring; None when no candidate keeps abstention at or under max_abstain."""
    ok = [r for r in rows if r["abstain_inside"] <= max_abstain]
    return max(ok, key=lambda r: (r["worst_flagged"], r["quantile"], r["margin"])) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--qa", type=Path, required=True, help="the QA folder the model trained on (its train split)")
    ap.add_argument("--images", type=Path, required=True, help="folder the records' image paths are relative to")
    ap.add_argument("--inside-val", choices=("held-out", "ham10000-val"), default="held-out")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--limit", type=int, default=600, help="selection photos per set (a fixed sample)")
    ap.add_argument("--max-abstain", type=float, default=0.05)
    ap.add_argument("--write", action="store_true", help="write the chosen summary into the model folder")
    args = ap.parse_args()
    from dermvqa.infer.generate import load_model

    t0 = time.perf_counter()
    model, processor = load_model(args.model, device="cpu")
    labels = training_images(read_records(args.qa, split="train"))
    if not labels:
        sys.exit(f"error: {args.qa} has no train-split records")
    fit_names, held_names = fit_split(labels)
    train = features(model, processor, [args.images / n for n in fit_names + held_names], "training images")
    n_fit = len(fit_names)
    sets = selection_sets(args.data, args.limit)
    outside = ["fitzpatrick17k-train"] + ([] if args.inside_val == "ham10000-val" else ["ham10000-val"])
    scored = {name: features(model, processor, sets[name], name) for name in sets}
    rows = candidate_rows(train, [labels[n] for n in fit_names], scored,
                          None if args.inside_val == "held-out" else args.inside_val, outside)
    best = choose(rows, args.max_abstain)
    print(f"{args.model}: in distribution = {args.inside_val}; outside = {', '.join(outside)} "
          f"({args.limit} photos each at most)")
    print(f"{'pooling':15} {'stats':5} {'q':>6} {'abstain':>8} {'margin':>7} "
          + " ".join(f"{'flag ' + o:>26} {'AUROC':>6}" for o in outside))
    for r in rows:
        mark = "  <- chosen" if r is best else ""
        print(f"{r['pooling']:15} {str(r['image_stats']):5} {r['quantile']:6.3f} {r['abstain_inside']:8.3f} "
              f"{r['margin']:7.2f} "
              + " ".join(f"{r[f'flagged_{o}']:26.3f} {r[f'auroc_{o}']:6.3f}" for o in outside) + mark)
    if best is None:
        sys.exit(f"no candidate keeps in-distribution abstention at or under {args.max_abstain}")
    print(f"chosen: {best['pooling']}, image statistics {best['image_stats']}, q {best['quantile']} "
          f"({time.perf_counter() - t0:.0f} s)")
    if args.write:
        x = pick(train, best["pooling"], best["image_stats"])
        summary = fit(x[:n_fit], [labels[n] for n in fit_names], x[n_fit:], best["quantile"],
                      meta={"pooling": best["pooling"], "image_stats": best["image_stats"], "images": len(labels),
                            "selection": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}
                            | {"inside": args.inside_val, "outside": outside, "photos_per_set": args.limit,
                               "rule": f"most of the worst outside set flagged with in-distribution abstention "
                                       f"<= {args.max_abstain}"}})
        summary.save(args.model)
        print(f"wrote {args.model}/dermvqa_ood.json (threshold {summary.threshold:.3f})")


if __name__ == "__main__":
    main()
