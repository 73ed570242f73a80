"""Out of distribution on real photos: how much of each real set a model folder's OOD summary flags.

    python -m dermvqa.bench.ood_real --model runs/ham10000/train/model --inside ham10000 \\
        --answers runs/ham10000/eval --limit 300
    python -m dermvqa.bench.ood_real --model runs/quickstart/train/model --world runs/quickstart/world \\
        --inside world --answers runs/quickstart/eval --limit 300

Sets (from --data, ../shared/data by default): PAD-UFES-20 smartphone photos (all of pad-ufes-20/images),
the Fitzpatrick17k test split (ajl_subset.csv, ajl_split == test), the HAM10000 test split
(dermamnist_split.csv, split == test) and, with --world, the synthetic world's held-out (test split) images.
None of them is used to fit or choose anything here. For each set: the share flagged (score above the
model's threshold) with its 95 % Wilson interval, the median score, and the AUROC of the score against the
in-distribution set (--inside: the test images of what the model trained on); the inside set's flagged share
is the abstention rate in distribution. With --answers (a `dermvqa eval` run folder on the inside images)
also selective accuracy: accuracy on the answers whose image is kept against accuracy on all, per family.
--limit N scores a fixed random sample of N images per set (seed 0), which on a shared 2-core machine keeps
a run to minutes; the timing printed is wall time, so say the machine's load beside it.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from atomic_files import write_text_atomic
from data_gen.records import read_records
from dermvqa.bench import SHARED_DATA
from dermvqa.eval.classify import auc
from dermvqa.infer.generate import load_model
from dermvqa.quickstarts.reference import fitzpatrick17k_photos, ham10000_photos
from dermvqa.trust.alert import wilson_interval
from dermvqa.trust.ood import load_summary


def real_sets(data: Path, world: Path | None) -> dict[str, list[Path]]:
    """Image paths of each set, sorted; a set whose listed image is missing is an error naming the file."""
    f17k = data / "fitzpatrick17k"
    ham = data / "ham10000"
    sets = {
        "pad-ufes-20": sorted((data / "pad-ufes-20" / "images").glob("*.jpg")),
        "fitzpatrick17k-test": fitzpatrick17k_photos(f17k, "test"),
        "ham10000-test": ham10000_photos(ham, "test"),
    }
    if world is not None:
        sets["world-test"] = sorted({world / "images" / r["image"] for r in read_records(world / "qa", split="test")})
    for name, paths in sets.items():
        if not paths:
            raise FileNotFoundError(f"{name}: no images found under {data if name != 'world-test' else world}")
        missing = next((p for p in paths if not p.is_file()), None)
        if missing:
            raise FileNotFoundError(f"{name}: listed image {missing} does not exist")
    return sets


def score_images(summary, model, processor, paths: list[Path], batch: int = 64) -> dict[str, np.ndarray]:
    """{"score": Gaussian score, "flag": unlike the training images, "outlier": outlier-head score (with a head)}."""
    out = {"score": [], "flag": [], "outlier": []}
    for i in range(0, len(paths), batch):
        feats = summary.features(model, processor, [Image.open(p).convert("RGB") for p in paths[i:i + batch]])
        score, outlier = summary.scores(feats), summary.outlier_scores(feats)
        out["score"].append(score.numpy())
        out["flag"].append(summary.unlike(score, outlier).numpy())
        if outlier is not None:
            out["outlier"].append(outlier.numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def set_figures(scores: dict, inside: dict) -> dict:
    """Flagged share with its Wilson interval, median score, AUROC of each score against the inside set."""
    flagged = int(scores["flag"].sum())
    is_out = np.r_[np.zeros(len(inside["score"]), bool), np.ones(len(scores["score"]), bool)]
    out = {"n": len(scores["score"]), "flagged": round(flagged / len(scores["score"]), 4),
           "flagged_ci95": wilson_interval(flagged, len(scores["score"])),
           "median_score": round(float(np.median(scores["score"])), 4),
           "auroc_vs_inside": round(auc(np.r_[inside["score"], scores["score"]], is_out), 4)}
    if "outlier" in scores:
        out["auroc_outlier_head"] = round(auc(np.r_[inside["outlier"], scores["outlier"]], is_out), 4)
    return out


def selective_accuracy(run_dir: Path, summary, model, processor) -> dict:
    """Accuracy on all answered images vs on those the OOD check keeps, overall and per family."""
    from dermvqa.eval.loaders import load_bench
    from dermvqa.eval.metrics import TextScorer

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    items = {it.id: it for it in load_bench(run["bench"]).items}
    rows = [json.loads(line) for line in open(run_dir / "answers.jsonl", encoding="utf-8")]
    rows = [r for r in rows if not r["blind"]]
    unknown = [r["id"] for r in rows if r["id"] not in items]
    if unknown:
        raise ValueError(f"{run_dir / 'answers.jsonl'}: {len(unknown)} answers name items not in {run['bench']}, "
                         f"e.g. {unknown[0]}")
    images = sorted({items[r["id"]].images[0] for r in rows})
    kept_image = dict(zip(images, ~score_images(summary, model, processor, images)["flag"]))
    scorer, by_family = TextScorer(), defaultdict(lambda: {"all": [], "kept": []})
    for r in rows:
        it = items[r["id"]]
        scores, _ = scorer.score(it, r.get("reply", ""))
        correct = scores.get("accuracy", scores.get("exact_match"))
        for key in ("(all families)", it.family):
            by_family[key]["all"].append(correct)
            if kept_image[it.images[0]]:
                by_family[key]["kept"].append(correct)
    return {"bench": run["bench"], "images": len(images), "images_kept": int(sum(kept_image.values())),
            "families": {f: {"n": len(v["all"]), "accuracy_all": round(float(np.mean(v["all"])), 4),
                             "n_kept": len(v["kept"]),
                             "accuracy_kept": round(float(np.mean(v["kept"])), 4) if v["kept"] else None}
                         for f, v in sorted(by_family.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a trained model folder with dermvqa_ood.json")
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--world", type=Path, help="the synthetic world folder (adds its held-out images)")
    ap.add_argument("--inside", choices=("ham10000", "world"), default="ham10000",
                    help="which set the model trained on (its test images are in distribution)")
    ap.add_argument("--answers", type=Path, help="a `dermvqa eval` run folder: adds selective accuracy")
    ap.add_argument("--limit", type=int, help="score a random sample of N images per set (seed 0)")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    if args.inside == "world" and args.world is None:
        ap.error("--inside world needs --world")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be positive")
    summary = load_summary(args.model)
    if summary is None:
        ap.error(f"{args.model} has no out-of-distribution summary (dermvqa_ood.json); fit one with dermvqa ood-fit")
    model, processor = load_model(args.model, device="cpu")
    sets = real_sets(args.data, args.world)
    if args.limit:
        sets = {k: sorted(random.Random(0).sample(v, min(args.limit, len(v)))) for k, v in sets.items()}
    t0 = time.perf_counter()
    scores = {name: score_images(summary, model, processor, paths) for name, paths in sets.items()}
    inside = scores[f"{args.inside}-test"]
    result = {"model": str(args.model), "method": summary.judge(0.0)["method"], "threshold": summary.threshold,
              "inside": f"{args.inside}-test",
              "outlier_threshold": summary.outlier_threshold,
              "sets": {name: set_figures(s, inside) for name, s in scores.items()}}
    result["abstention_in_distribution"] = result["sets"][f"{args.inside}-test"]["flagged"]
    result["scoring_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{args.model}: {result['method']}, threshold {summary.threshold:.3f}; in distribution: {result['inside']}")
    head = summary.outlier is not None
    print(f"{'set':22} {'n':>5} {'flagged':>8} {'95% CI':>17} {'median':>9} {'AUROC':>6}"
          + (f" {'AUROC head':>10}" if head else ""))
    for name, f in result["sets"].items():
        auroc = "-" if name == result["inside"] else f"{f['auroc_vs_inside']:.3f}"
        head_auroc = "-" if name == result["inside"] else f"{f.get('auroc_outlier_head', 0):.3f}"
        print(f"{name:22} {f['n']:5d} {f['flagged']:8.3f} {str(f['flagged_ci95']):>17} {f['median_score']:9.3f} "
              f"{auroc:>6}" + (f" {head_auroc:>10}" if head else ""))
    print(f"abstention in distribution: {result['abstention_in_distribution']:.3f}; scored "
          f"{sum(len(v) for v in sets.values())} images in {result['scoring_seconds']} s")
    if args.answers:
        sel = result["selective_accuracy"] = selective_accuracy(args.answers, summary, model, processor)
        print(f"selective accuracy ({sel['bench']}; {sel['images_kept']} of {sel['images']} images kept):")
        for fam, f in sel["families"].items():
            kept = "-" if f["accuracy_kept"] is None else f"{f['accuracy_kept']:.3f}"
            print(f"  {fam:24} all {f['accuracy_all']:.3f} (n {f['n']})  kept {kept} (n {f['n_kept']})")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
