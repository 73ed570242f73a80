"""The same-budget baseline a user would pick instead of dermvqa: a torchvision ResNet-18 from random init.

It trains for the wall time our tiny LLaVA trained (`seconds.train` of a finished `dermvqa quickstart` run,
`--ours RUN_DIR`; `--seconds` overrides) on ours' train rows (RUN_DIR/data/derm1m.csv; without --ours DATA is
imported as the quickstart does), at ours' resolution and image processor, with ours' stage-0 augmentation and
sampling (RUN_DIR/train/recipe.yaml, else the shipped DATASET_cpu), on --threads threads (2). Images are decoded
into a uint8 cache before the clock starts (ours' seconds include decoding); the budget is the optimisation loop,
5 % warm-up then cosine to zero. Test figures with seeded 95 % bootstrap intervals: accuracy, one-vs-rest AUC
(MedMNIST's mean), balanced accuracy, macro-F1, melanoma recall; per Fitzpatrick type where rows carry one (as
`dermvqa eval`, dermvqa.eval.skin_types). HAM10000 with --ours: ours' generated top diagnosis against the CNN on
the same images, paired with McNemar's test (dermvqa/bench/ours_run.py). --out gets all, predictions too.

    python -m dermvqa.bench.baseline_cnn --dataset ham10000 --ours runs/ham10000 --out runs/baseline_ham10000.json
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from atomic_files import write_text_atomic
from dermvqa.bench import SHARED_DATA
from dermvqa.configs import find_config
from dermvqa.eval.classify import classifier_metrics
from dermvqa.bench.ours_run import FIGURES, paired_vs_ours, read_ours
from dermvqa.eval.skin_types import FIGURES as TYPE_FIGURES
from dermvqa.eval.skin_types import per_type
from dermvqa.eval.strata import UNKNOWN, summarize
from dermvqa.quickstarts.ham10000 import CLASSES as HAM_CLASSES
from dermvqa.train.tower_pretrain import augment_batch, sampling_weights

DERM1M_ONTOLOGY = (SHARED_DATA / "derm1m" / "third_party" / "HappyDoubleJ__DermAgent-wonjun" / "dataset" / "Derm1M"
                   / "ontology.json")
MIN_TYPE_N = 10  # skin types with fewer test items are shown, marked few (as `dermvqa eval` does)


def import_rows(dataset: str, data: Path, out: Path, ontology: Path, seed: int) -> Path:
    """Import DATA into OUT as our quickstart does (its split; Fitzpatrick17k: its val share of train, seed)."""
    if dataset == "ham10000":
        from data_gen.importers.ham10000 import import_ham10000

        import_ham10000(data / "HAM10000_metadata.csv", data / "images", out, split_file=data / "dermamnist_split.csv")
    else:
        from data_gen.importers.fitzpatrick17k import import_fitzpatrick17k
        from data_gen.ontology import Ontology
        from dermvqa.quickstarts.fitzpatrick17k import VAL_FRACTION

        import_fitzpatrick17k(data / "ajl_subset.csv", data / "images", out, Ontology.load(ontology), seed=seed,
                              val_fraction=VAL_FRACTION)
    return out / "derm1m.csv"


def read_split(import_csv: Path, classes: list[str] | None) -> tuple[list[str], dict[str, list[dict]], dict]:
    """(classes, {"train": rows, "test": rows}, skipped counts by reason) from an import CSV; classes default
    to the sorted labels of the train rows, and a row whose label is not one of them is skipped, counted."""
    with open(import_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"filename", "disease_label", "split"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{import_csv}: missing column(s) {sorted(missing)}")
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
    if not by_split["train"] or not by_split["test"]:
        raise ValueError(f"{import_csv}: needs train and test rows, has {sorted({r['split'] for r in rows})}")
    classes = classes or sorted({r["disease_label"] for r in by_split["train"]})
    skipped = {"val split (not used)": sum(r["split"] == "val" for r in rows)}
    for s, split_rows in by_split.items():
        skipped[f"{s}: label not among the classes"] = sum(r["disease_label"] not in classes for r in split_rows)
    by_split = {s: [r for r in split_rows if r["disease_label"] in classes] for s, split_rows in by_split.items()}
    return classes, by_split, {k: v for k, v in skipped.items() if v}


def load_pixels(paths: list[Path], image_processor, desc: str) -> torch.Tensor:
    """uint8 (N, 3, S, S): each image decoded once and resized + cropped as our model's processor does."""
    chunks = []
    for i in tqdm(range(0, len(paths), 256), desc=desc, unit="batch"):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + 256]]
        chunks.append(image_processor(images=images, do_rescale=False, do_normalize=False,
                                      return_tensors="pt")["pixel_values"].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def normalise(x: torch.Tensor, image_processor) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (image_processor.image_mean, image_processor.image_std))
    return (x.float() / 255 - mean) / std


def train(model, pixels: torch.Tensor, targets: torch.Tensor, skin_types: torch.Tensor, image_processor,
          cfg: dict) -> dict:
    """Optimise for cfg["seconds"] of wall time (cfg: run()'s settings), sampling as ours' stage 0 does (class and
    skin-type balance); return steps, images seen, last losses."""
    t0, seconds, batch_size, lr = time.perf_counter(), cfg["seconds"], cfg["batch_size"], cfg["lr"]
    gen = torch.Generator().manual_seed(cfg["seed"])
    weights = sampling_weights(targets, skin_types, cfg["balance"], cfg["skin_type_balance"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    steps, losses = 0, []
    bar = tqdm(total=round(seconds, 1), desc="ResNet-18 training (wall seconds)", unit="s")
    while (elapsed := time.perf_counter() - t0) < seconds:
        frac = elapsed / seconds  # 5 % of the wall time warm-up, then cosine decay to zero at the end of the budget
        for group in opt.param_groups:
            group["lr"] = lr * min((frac + 1e-3) / 0.05, 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
        x = normalise(pixels[idx], image_processor)
        x = augment_batch(x, gen) if cfg["augment"] else x
        loss = torch.nn.functional.cross_entropy(model(x), targets[idx], label_smoothing=cfg["label_smoothing"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        losses.append(loss.item())
        bar.update(round(min(time.perf_counter() - t0, seconds), 1) - bar.n)
        bar.set_postfix(step=steps, loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    return {"steps": steps, "images_seen": steps * batch_size, "train_images": len(targets),
            "seconds": round(time.perf_counter() - t0, 1), "final_loss": float(np.mean(losses[-20:])) if losses else None}


def predict(model, pixels: torch.Tensor, image_processor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return torch.cat([torch.softmax(model(normalise(pixels[i:i + batch_size], image_processor)), -1)
                          for i in range(0, len(pixels), batch_size)]).numpy()


def figures(gold: np.ndarray, probs: np.ndarray, classes: list[str], key: str, n_boot: int, seed: int) -> dict:
    """FIGURES of one set of test items, each {"value", "ci", "n"} (None where it cannot be computed)."""
    pred = probs.argmax(1)
    m = classifier_metrics(classes, list(gold), list(pred), probs.tolist(), key, n_boot, seed)
    melanoma = [i for i, c in enumerate(classes) if "melanoma" in c.lower()]
    hits = [{"scores": {"melanoma_recall": float(p in melanoma)}} for p in pred[np.isin(gold, melanoma)]]
    recall = summarize(hits, key, n_boot, seed)["melanoma_recall"] if hits else None
    return {"accuracy": m["likelihood_accuracy"], "auc": m.get("auc"), "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"], "melanoma_recall": recall}


def _cell(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, dict):
        return f"{x['value']:.3f} [{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]"
    return f"{x:.3f}"


def _markdown(heads: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def table(baseline: dict, ours: dict | None) -> str:
    columns = ours["columns"] if ours else {}
    return "\n".join(_markdown(["figure", "ResNet-18 (95 % CI)", *columns],
                               [[f, _cell(baseline[f])] + [_cell(c.get(f)) for c in columns.values()] for f in FIGURES]))


def skin_type_table(baseline: dict, ours: dict | None) -> str:
    """Per type: n and the three figures of the baseline, then ours' (when given); then each one's gaps."""
    who = {"ResNet-18": baseline, **({"ours": ours} if ours else {})}
    heads = ["skin type", "n"] + [f"{w} {f.replace('_', ' ')}" for w in who for f in TYPE_FIGURES]
    rows = [[f"{t}{' (few)' if s['few_items'] else ''}", str(s["n"])]
            + [_cell(w["types"].get(t, {}).get(f)) for w in who.values() for f in TYPE_FIGURES]
            for t, s in baseline["types"].items()]
    gaps = [f"{w} gap in {f}: " + (g["not_computed"] if "not_computed" in g else
                                   f"{g['gap']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] (type {g['best']} best, "
                                   f"{g['worst']} worst)")
            for w, section in who.items() for f, g in section["gap"].items()]
    return "\n".join(_markdown(heads, rows) + gaps)


def run(args) -> dict:
    """The whole benchmark; returns the dict written to --out."""
    from torchvision.models import resnet18

    from dermvqa.model.processor import clip_image_processor
    from dermvqa.train.recipe import load_recipe

    ours_recipe = args.ours / "train" / "recipe.yaml" if args.ours else None  # what ours trained with, --set included
    recipe_path = find_config(args.recipe or (ours_recipe if ours_recipe and ours_recipe.is_file() else
                                              f"{args.dataset}_cpu"), "recipe")
    recipe = load_recipe(recipe_path, [])
    stage0 = recipe["tune"]["tower_pretrain"]
    ours = read_ours(args.ours, args.dataset) if args.ours else None
    seconds = args.seconds or (ours["seconds_train"] if ours else None)
    if not seconds or seconds <= 0:
        raise ValueError("--seconds must be positive (or give --ours RUN_DIR to take its training seconds)")
    if args.ours:
        from transformers import AutoProcessor

        if not (Path(ours["model"]) / "processor_config.json").is_file():
            raise FileNotFoundError(f"{ours['model']}: ours' model folder has no processor_config.json")
        image_processor = AutoProcessor.from_pretrained(ours["model"]).image_processor
    else:
        image_processor = clip_image_processor(recipe["model"]["tiny"]["image_size"])
    settings = {"seconds": seconds, "seconds_from": "--seconds" if args.seconds else "--ours", "threads": args.threads,
                "image_size": int(image_processor.crop_size["height"]),
                "batch_size": stage0["batch_size"], "lr": args.lr,
                "augment": bool(stage0.get("augment")), "balance": float(stage0.get("balance", 0.0)),
                "skin_type_balance": float(stage0.get("skin_type_balance", 0.0)),
                "label_smoothing": float(stage0.get("label_smoothing", 0.0)), "seed": args.seed,
                "n_boot": args.n_boot, "recipe": str(recipe_path)}
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        import_csv = args.ours / "data" / "derm1m.csv" if args.ours else \
            import_rows(args.dataset, args.data, Path(tmp), args.ontology, args.seed)
        settings["rows"] = str(import_csv) if args.ours else f"imported here from {args.data}"
        classes, rows, skipped = read_split(import_csv, HAM_CLASSES if args.dataset == "ham10000" else None)
    images = args.data / "images"
    targets = {s: torch.tensor([classes.index(r["disease_label"]) for r in rows[s]]) for s in rows}
    model = resnet18(weights=None, num_classes=len(classes))
    t0 = time.perf_counter()
    pixels = load_pixels([images / r["filename"] for r in rows["train"]], image_processor, "decode train images")
    decode_seconds = round(time.perf_counter() - t0, 1)
    skin_types = torch.tensor([int(r.get("fitzpatrick") or 0) for r in rows["train"]])
    log = train(model, pixels, targets["train"], skin_types, image_processor, settings)
    probs = predict(model, load_pixels([images / r["filename"] for r in rows["test"]], image_processor,
                                       "decode test images"), image_processor)
    gold = targets["test"].numpy()
    result = {"dataset": args.dataset, "classes": classes, "skipped": skipped, "settings": settings,
              "train": {**log, "decode_seconds": decode_seconds},
              "baseline": figures(gold, probs, classes, "test", args.n_boot, args.seed), "ours": ours,
              "predictions": [{"image": r["filename"], "gold": int(g), "fitzpatrick": r.get("fitzpatrick", ""),
                               "probs": p.tolist()} for r, g, p in zip(rows["test"], gold, probs.astype(float))]}
    if args.ours and args.dataset == "ham10000" and (args.ours / "eval" / "answers.jsonl").is_file():
        result["paired"] = paired_vs_ours(result["predictions"], args.ours, args.n_boot, args.seed)
    types = [r.get("fitzpatrick") or UNKNOWN for r in rows["test"]]
    if set(types) != {UNKNOWN}:
        result["baseline_skin_type"] = per_type(classes, list(gold), list(probs.argmax(1)), types, "test/skin_type",
                                                args.n_boot, args.seed, MIN_TYPE_N)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("ham10000", "fitzpatrick17k"), default="ham10000")
    ap.add_argument("--data", type=Path, help="dataset folder with images/ (default ../shared/data/DATASET)")
    ap.add_argument("--ours", type=Path, help="a finished `dermvqa quickstart` output folder (e.g. runs/ham10000)")
    ap.add_argument("--seconds", type=float, help="training wall time (default: ours' seconds.train)")
    ap.add_argument("--ontology", type=Path, default=DERM1M_ONTOLOGY, help="fitzpatrick17k import: Derm1M ontology.json")
    ap.add_argument("--recipe", help="ours' recipe, a YAML file or a shipped name (default: the shipped DATASET_cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (ours used the machine's 2 cores)")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (batch: the recipe's stage 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True, help="JSON file for every figure and prediction")
    args = ap.parse_args(argv)
    args.data = args.data or SHARED_DATA / args.dataset
    try:
        if not (args.data / "images").is_dir():
            raise FileNotFoundError(f"--data {args.data}: no images/ folder")
        result = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    t = result["train"]
    print(f"\n{args.dataset} test split, n={len(result['predictions'])}; ResNet-18 from random init trained "
          f"{t['seconds']} s ({t['steps']} steps, {t['images_seen']} images, {t['train_images']} train images) "
          f"on {args.threads} threads at {result['settings']['image_size']} px; skipped: {result['skipped'] or 'none'}")
    print(table(result["baseline"], result["ours"]))
    if "baseline_skin_type" in result:
        print("\nPer Fitzpatrick skin type (95 % CI):\n"
              + skin_type_table(result["baseline_skin_type"], result["ours"] and result["ours"]["skin_type"]))
    for name, d in result.get("paired", {}).items():
        print(f"ours - ResNet-18, {name.replace('_', ' ')} on the same {d['n']} images: {d['diff']:+.3f} "
              f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], McNemar p {d['mcnemar']['p']:.2g}")
    print(f"\nAll figures and predictions: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
