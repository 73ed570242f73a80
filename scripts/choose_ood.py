"""Choose a model's out-of-distribution detector on selection photos only, then write it into the model folder.

    .venv/bin/python scripts/choose_ood.py --model runs/ham10000/train/model --qa runs/ham10000/data/qa \\
        --images ../shared/data/ham10000/images --inside-val ham10000-val --max-abstain 0.03 --write
    .venv/bin/python scripts/choose_ood.py --model runs/quickstart/train/model --qa runs/quickstart/world/qa \\
        --images runs/quickstart/world/images --write

Candidates: every pooling of dermvqa.model.ood (POOLINGS), with and without the image colour/texture statistics,
with and without the outlier head (dermvqa/model/ood_outlier.py), each fitted on the model's own training images
as training fits them (fit_split: the same fitted and held-out images); the head's reference photos are
Fitzpatrick17k train photos (--outside-limit of them) that are not among the selection photos. Photos, from
--data (../shared/data by default), never the ones scripts/bench_ood_real.py measures on: a fixed sample
(--limit, seed 0) of the Fitzpatrick17k train split (clinical atlas photos) as the outside set; as the
in-distribution check `--inside-val` (the HAM10000 validation split, for a model trained on HAM10000) or, by
default, the held-out training images; for a model not trained on HAM10000 the HAM10000 validation images are
a second outside set. Each candidate's threshold is the smallest quantile q of the held-out training images'
scores (grid QUANTILES) at which in-distribution abstention is at most --max-abstain. Rule: the candidate that
flags the largest share of its worst outside set; ties go to the higher q (fewer abstentions), then to the
larger margin (the worst outside set's median score over the threshold). With --write the chosen summary
replaces the folder's dermvqa_ood.* files, its JSON carrying the selection figures.
"""
from __future__ import annotations

import argparse
import csv
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
from dermvqa.model.ood import (POOLINGS, fit, fit_split, image_statistics, pooled_feature_sets,  # noqa: E402
                               training_images)

QUANTILES = tuple(round(q, 3) for q in np.arange(0.900, 0.9995, 0.001))
F17K_TRAIN = "fitzpatrick17k-train"


def photo_sets(data: Path, limit: int, outside_limit: int) -> dict[str, list[Path]]:
    """The selection samples of Fitzpatrick17k train and HAM10000 val photos (`limit` each, seed 0), and the
    head's reference photos: up to `outside_limit` other Fitzpatrick17k train photos."""
    f17k, ham = data / "fitzpatrick17k", data / "ham10000"
    f17k_train = sorted(f17k / "images" / f"{r['md5hash']}.jpg" for r in csv.DictReader(
        open(f17k / "ajl_subset.csv", encoding="utf-8")) if r["ajl_split"] == "train")
    ham_val = sorted(ham / "images" / f"{r['image_id']}.jpg" for r in csv.DictReader(
        open(ham / "dermamnist_split.csv", encoding="utf-8")) if r["split"] == "val")
    selected = sorted(random.Random(0).sample(f17k_train, min(limit, len(f17k_train))))
    rest = sorted(set(f17k_train) - set(selected))
    return {F17K_TRAIN: selected, "ham10000-val": sorted(random.Random(0).sample(ham_val, min(limit, len(ham_val)))),
            "reference": sorted(random.Random(1).sample(rest, min(outside_limit, len(rest))))}


def features(model, processor, paths: list[Path], desc: str, chunk: int = 256) -> dict[str, torch.Tensor]:
    """{pooling: pooled features, "stats": image statistics} of every photo, one tower pass per chunk."""
    parts = []
    for i in tqdm(range(0, len(paths), chunk), desc=desc, unit="chunk"):
        ims = [Image.open(p).convert("RGB") for p in paths[i:i + chunk]]
        parts.append({**pooled_feature_sets(model, processor, ims), "stats": image_statistics(ims)})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pick(feats: dict, pooling: str, stats: bool) -> torch.Tensor:
    return torch.cat([feats[pooling], feats["stats"]], 1) if stats else feats[pooling]


def fit_candidate(train: dict, fit_labels: list[str], reference: dict | None, pooling: str, stats: bool,
                  quantile: float = 0.99, meta: dict | None = None):
    """The summary of one candidate (`reference`: the head's photos, None for no head)."""
    x, n_fit = pick(train, pooling, stats), len(fit_labels)
    return fit(x[:n_fit], fit_labels, x[n_fit:], quantile, meta=meta,
               outside=None if reference is None else pick(reference, pooling, stats))


def candidate_rows(train: dict, fit_labels: list[str], scored: dict, inside: str | None, outside: list[str],
                   reference: dict | None, max_abstain: float) -> list[dict]:
    """One row per (pooling, statistics, head) that can keep abstention at or under max_abstain: its quantile
    and thresholds, in-distribution abstention (`inside`: a set of `scored`, None: the held-out training
    images), flagged share and AUROC of the Gaussian score per outside set. `train` holds the fitted images'
    features first (len(fit_labels) rows), then the held-out ones."""
    n_fit, rows = len(fit_labels), []
    for pooling in POOLINGS:
        for stats in (False, True):
            for head in (False, True) if reference is not None else (False,):
                s = fit_candidate(train, fit_labels, reference if head else None, pooling, stats)
                held_x = pick(train, pooling, stats)[n_fit:]
                xs = {name: pick(f, pooling, stats) for name, f in scored.items()}
                gauss = {name: s.scores(x).numpy() for name, x in xs.items()} | {None: s.scores(held_x).numpy()}
                logit = ({name: s.outlier_scores(x).numpy() for name, x in xs.items()}
                         | {None: s.outlier_scores(held_x).numpy()}) if head else None
                for q in QUANTILES:
                    t = float(np.quantile(gauss[None], q))
                    th = float(np.quantile(logit[None], q)) if head else None
                    flag = {k: (g > t) | (logit[k] > th) if head else g > t for k, g in gauss.items()}
                    if flag[inside].mean() <= max_abstain:
                        break
                else:
                    continue
                row = {"pooling": pooling, "image_stats": stats, "outlier_head": head, "quantile": q, "threshold": t,
                       "outlier_threshold": th, "abstain_inside": float(flag[inside].mean())}
                for o in outside:
                    row[f"flagged_{o}"] = float(flag[o].mean())
                    row[f"auroc_{o}"] = auc(np.r_[gauss[inside], gauss[o]],
                                            np.r_[np.zeros(len(gauss[inside]), bool), np.ones(len(gauss[o]), bool)])
                row["worst_flagged"] = min(row[f"flagged_{o}"] for o in outside)
                row["margin"] = min(float(np.median(gauss[o])) for o in outside) / t
                rows.append(row)
    return rows


def choose(rows: list[dict]) -> dict | None:
    """The rule of the module docstring; None when no candidate keeps abstention under the cap."""
    return max(rows, key=lambda r: (r["worst_flagged"], r["quantile"], r["margin"])) if rows else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--qa", type=Path, required=True, help="the QA folder the model trained on (its train split)")
    ap.add_argument("--images", type=Path, required=True, help="folder the records' image paths are relative to")
    ap.add_argument("--inside-val", choices=("held-out", "ham10000-val"), default="held-out")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--limit", type=int, default=600, help="selection photos per set (a fixed sample)")
    ap.add_argument("--outside-limit", type=int, default=1000, help="reference photos for the outlier head")
    ap.add_argument("--no-head", action="store_true", help="leave the outlier head out of the candidates")
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
    fit_labels = [labels[n] for n in fit_names]
    train = features(model, processor, [args.images / n for n in fit_names + held_names], "training images")
    sets = photo_sets(args.data, args.limit, 0 if args.no_head else args.outside_limit)
    outside = [F17K_TRAIN] + ([] if args.inside_val == "ham10000-val" else ["ham10000-val"])
    scored = {name: features(model, processor, sets[name], name) for name in (F17K_TRAIN, "ham10000-val")}
    reference = None if args.no_head else features(model, processor, sets["reference"], "reference photos")
    inside = None if args.inside_val == "held-out" else args.inside_val
    rows = candidate_rows(train, fit_labels, scored, inside, outside, reference, args.max_abstain)
    best = choose(rows)
    print(f"{args.model}: in distribution = {args.inside_val} (abstention cap {args.max_abstain}); outside = "
          f"{', '.join(outside)} ({args.limit} photos each at most); head references: {len(sets['reference'])}")
    print(f"{'pooling':15} {'stats':5} {'head':5} {'q':>6} {'abstain':>8} {'margin':>7} "
          + " ".join(f"{'flag ' + o:>26} {'AUROC':>6}" for o in outside))
    for r in rows:
        print(f"{r['pooling']:15} {str(r['image_stats']):5} {str(r['outlier_head']):5} {r['quantile']:6.3f} "
              f"{r['abstain_inside']:8.3f} {r['margin']:7.2f} "
              + " ".join(f"{r[f'flagged_{o}']:26.3f} {r[f'auroc_{o}']:6.3f}" for o in outside)
              + ("  <- chosen" if r is best else ""))
    if best is None:
        sys.exit(f"no candidate keeps in-distribution abstention at or under {args.max_abstain}")
    print(f"chosen: {best['pooling']}, image statistics {best['image_stats']}, outlier head {best['outlier_head']}, "
          f"q {best['quantile']} ({time.perf_counter() - t0:.0f} s)")
    if args.write:
        selection = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()} | {
            "inside": args.inside_val, "outside": outside, "photos_per_set": args.limit,
            "rule": f"most of the worst outside set flagged with in-distribution abstention <= {args.max_abstain}"}
        meta = {"pooling": best["pooling"], "image_stats": best["image_stats"], "images": len(labels),
                "selection": selection}
        if best["outlier_head"]:
            meta["outside"] = f"{len(sets['reference'])} Fitzpatrick17k train photos (clinical atlas)"
        summary = fit_candidate(train, fit_labels, reference if best["outlier_head"] else None, best["pooling"],
                                best["image_stats"], best["quantile"], meta)
        summary.save(args.model)
        print(f"wrote {args.model}/dermvqa_ood.json (threshold {summary.threshold:.3f}"
              + (f", outlier threshold {summary.outlier_threshold:.3f})" if summary.outlier is not None else ")"))


if __name__ == "__main__":
    main()
