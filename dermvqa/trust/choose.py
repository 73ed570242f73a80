"""Choose a model's out-of-distribution detector on reference photos of another kind, then write it into the
model folder (`dermvqa ood-choose`, and the HAM10000 / Fitzpatrick17k quickstarts after training).

Candidates: every pooling of dermvqa/trust/features.py (POOLINGS), with and without the image colour/texture
statistics, with and without the outlier head (dermvqa/trust/outlier.py), each fitted on the model's own
training images as training fits them (fit_split: the same fitted and held-out images). Each reference set
(`references`, e.g. Fitzpatrick17k train photos for a dermoscopy model) gives a fixed sample (`limit`, seed 0)
of photos the detector must flag; the head's photos are up to `outside_limit` others of the first set (seed 1),
never among the selection ones. The in-distribution check (`inside`) is the held-out training images, or a
split of the model's QA folder (the HAM10000 validation split for a model trained on HAM10000), sampled like
a reference set. Each candidate's threshold is the smallest quantile q of the held-out training images' scores
(grid QUANTILES) at which in-distribution abstention is at most `max_abstain`. Rule: the candidate that flags
the largest share of its worst reference set; ties go to the higher q (fewer abstentions), then to the larger
margin (the worst set's median score over the threshold). The chosen summary replaces the folder's dermvqa_ood.*
files (atomically), its JSON carrying the figures of the choice and which photos it saw (count, folder, hash).
Keep the photos dermvqa/bench/ood_real.py measures on (PAD-UFES-20, the Fitzpatrick17k and HAM10000 test
splits) out of the references, or its figures no longer measure photos nothing was chosen on.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dermvqa.eval.classify import auc
from dermvqa.trust.features import POOLINGS, image_statistics, pooled_feature_sets
from dermvqa.trust.ood import fit, fit_split, training_images
from dermvqa.trust.photos import HELD_OUT, check_readable, open_photo, photo_record

QUANTILES = tuple(round(q, 3) for q in np.arange(0.900, 0.9995, 0.001))
HEAD_SET = "head references"


class NoCandidate(ValueError):
    """No candidate keeps in-distribution abstention at or under the cap."""


def features(model, processor, paths: list[Path], desc: str, chunk: int = 256) -> dict[str, torch.Tensor]:
    """{pooling: pooled features, "stats": image statistics} of every photo, one tower pass per chunk."""
    parts = []
    for i in tqdm(range(0, len(paths), chunk), desc=desc, unit="chunk"):
        ims = [open_photo(p) for p in paths[i:i + chunk]]
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


def sample(photos: list[Path], n: int, seed: int) -> list[Path]:
    """A fixed sample of at most n of these photos (drawn from their sorted list), sorted."""
    photos = sorted(set(photos))
    return sorted(random.Random(seed).sample(photos, min(n, len(photos))))


def selection_sets(references: dict[str, list[Path]], limit: int, outside_limit: int) -> tuple[dict, list[Path]]:
    """({set name: its selection sample}, the head's photos: others of the first set), as the module says."""
    if not references:
        raise ValueError("no reference photos: the detector is chosen on photos of another kind")
    scored = {name: sample(photos, limit, 0) for name, photos in references.items()}
    first = next(iter(references))
    return scored, sample(sorted(set(references[first]) - set(scored[first])), outside_limit, 1)


def inside_photos(qa_dir: Path, images: Path, split: str) -> list[Path]:
    """The distinct images of one split of the QA folder: the in-distribution check when it is not held-out."""
    from data_gen.records import read_records

    if split in ("train", "test"):
        raise ValueError(f"the in-distribution check cannot be the {split} split ("
                         + ("the detector is fitted on it; use held-out" if split == "train" else
                            "it must stay unseen; use a validation split") + ")")
    photos = sorted({images / r["image"] for r in read_records(qa_dir, split=split)})
    if not photos:
        raise ValueError(f"{qa_dir}: no {split}-split records to check in-distribution abstention on")
    return photos


def check_apart(sets: dict[str, list[Path]], model_photos: list[Path]) -> None:
    """A reference photo that is one of the model's own images (training or in-distribution check) is an error."""
    own = {p.resolve() for p in model_photos}
    for name, photos in sets.items():
        shared = sorted(p for p in photos if p.resolve() in own)
        if shared:
            raise ValueError(f"reference set {name}: {len(shared)} of its photos are the model's own images "
                             f"(e.g. {shared[0]}); reference photos must be of another kind")


def choose_detector(model_dir: Path, qa_dir: Path, images: Path, references: dict[str, list[Path]],
                    inside: str = HELD_OUT, max_abstain: float = 0.05, limit: int = 600, outside_limit: int = 1000,
                    head: bool = True, loaded: tuple | None = None, device: str = "cpu") -> dict:
    """Choose as the module docstring says and write the chosen summary into model_dir; returns {"rows",
    "chosen", "summary", "outside", "head_photos"}. `loaded`: the (model, processor) of model_dir if at hand."""
    from data_gen.records import read_records
    from dermvqa.infer.generate import load_model

    model_dir, qa_dir, images = Path(model_dir), Path(qa_dir), Path(images)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model folder (no config.json)")
    labels = training_images(read_records(qa_dir, split="train"))
    if not labels:
        raise ValueError(f"{qa_dir}: no train-split records, so no training images to fit the detector on "
                         "(give the QA folder the model trained on)")
    fit_names, held_names = fit_split(labels)
    train_photos = [images / n for n in fit_names + held_names]
    scored, head_photos = selection_sets(references, limit, outside_limit if head else 0)
    outside = list(scored)
    if head and len(head_photos) < 2:
        raise ValueError(f"reference set {outside[0]}: its {len(references[outside[0]])} photos leave "
                         f"{len(head_photos)} beside the {len(scored[outside[0]])} selection ones, and the outlier "
                         "head needs 2: lower the selection limit or leave the head out")
    if inside != HELD_OUT:
        scored[inside] = sample(inside_photos(qa_dir, images, inside), limit, 0)
    check_apart({name: scored[name] for name in outside} | {HEAD_SET: head_photos},
                train_photos + ([] if inside == HELD_OUT else scored[inside]))
    check_readable([p for photos in (train_photos, *scored.values(), head_photos) for p in photos])
    model, processor = loaded or load_model(model_dir, device=device)
    train = features(model, processor, train_photos, "training images")
    scored_feats = {name: features(model, processor, photos, name) for name, photos in scored.items()}
    reference = features(model, processor, head_photos, HEAD_SET) if head else None
    rows = candidate_rows(train, [labels[n] for n in fit_names], scored_feats, None if inside == HELD_OUT else inside,
                          outside, reference, max_abstain)
    best = choose(rows)
    if best is None:
        raise NoCandidate(f"no candidate keeps in-distribution abstention ({inside}) at or under {max_abstain}")
    photos = {name: photo_record(p) for name, p in scored.items()} | ({HEAD_SET: photo_record(head_photos)}
                                                                       if best["outlier_head"] else {})
    selection = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()} | {
        "inside": inside, "outside": outside, "photos_per_set": limit, "photos": photos,
        "rule": f"most of the worst outside set flagged with in-distribution abstention <= {max_abstain}"}
    meta = {"pooling": best["pooling"], "image_stats": best["image_stats"], "images": len(labels),
            "selection": selection}
    if best["outlier_head"]:
        meta["outside"] = f"{len(head_photos)} photos of {outside[0]}"
    summary = fit_candidate(train, [labels[n] for n in fit_names], reference if best["outlier_head"] else None,
                            best["pooling"], best["image_stats"], best["quantile"], meta)
    summary.save(model_dir)
    return {"rows": rows, "chosen": best, "summary": summary, "outside": outside, "head_photos": len(head_photos)}


def table(result: dict) -> list[str]:
    """The candidates, one line each, the chosen one marked."""
    rows, best, outside = result["rows"], result["chosen"], result["outside"]
    selection = result["summary"].meta["selection"]
    lines = [f"in distribution: {selection['inside']}; outside: {', '.join(outside)} ({selection['photos_per_set']} "
             f"photos each at most); head references: {result['head_photos']}; rule: {selection['rule']}",
             f"{'pooling':15} {'stats':5} {'head':5} {'q':>6} {'abstain':>8} {'margin':>7} "
             + " ".join(f"{'flag ' + o:>26} {'AUROC':>6}" for o in outside)]
    for r in rows:
        lines.append(f"{r['pooling']:15} {str(r['image_stats']):5} {str(r['outlier_head']):5} {r['quantile']:6.3f} "
                     f"{r['abstain_inside']:8.3f} {r['margin']:7.2f} "
                     + " ".join(f"{r[f'flagged_{o}']:26.3f} {r[f'auroc_{o}']:6.3f}" for o in outside)
                     + ("  <- chosen" if r is best else ""))
    return lines
