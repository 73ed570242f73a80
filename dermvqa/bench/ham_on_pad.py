"""The HAM10000 model on smartphone photos: PAD-UFES-20 against its own HAM10000 test split, same five classes.

    python -m dermvqa.bench.ham_on_pad --model runs/ham10000/train/model --out runs/ham_on_pad.json

The dermoscopy -> smartphone drop. PAD-UFES-20's diagnoses map to five HAM10000 classes: ACK -> actinic keratosis
(akiec), BCC -> basal cell carcinoma, SEK -> benign keratosis (bkl, which holds seborrheic keratoses), MEL ->
melanoma, NEV -> melanocytic nevus; SCC has no HAM10000 class (HAM10000 files only Bowen's disease, under akiec)
and is counted as skipped, as is a metadata row without an image (matched by stem, whatever the extension).
Both sets are scored the same way: the 7-class option likelihood of the diagnosis question (as the HAM10000
quickstart scores its test split), prediction = the most likely of all seven classes. HAM10000 test images
are restricted to the same five classes (dermatofibroma and vascular lesions left out), so the two accuracies
compare like with like. Figures: accuracy, balanced accuracy (mean recall over the five classes), macro-F1
and melanoma recall, each with a seeded 95 % bootstrap interval, the HAM - PAD difference with its interval
(each set resampled on its own), PAD per Fitzpatrick type (metadata `fitspatrick`; dermvqa.eval.skin_types, as
`dermvqa eval` computes it), and, where the model folder has an out-of-distribution summary, the share of PAD
photos it flags and the accuracy on the photos it keeps.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from atomic_files import write_text_atomic
from data_gen.importers.ham10000 import DX
from dermvqa.bench import SHARED_DATA
from dermvqa.eval.skin_types import figures as class_figures
from dermvqa.eval.skin_types import per_type
from dermvqa.eval.strata import UNKNOWN
from dermvqa.model.labels import DIAGNOSIS_QUESTION
from dermvqa.quickstarts.ham10000 import CLASSES, MELANOMA, class_probs

PAD_TO_HAM = {"ACK": "akiec", "BCC": "bcc", "SEK": "bkl", "MEL": "mel", "NEV": "nv"}
SHARED = [DX[code][1] for code in ("akiec", "bcc", "bkl", "mel", "nv")]
FIGURES = ("accuracy", "balanced_accuracy", "macro_f1", "melanoma_recall")


def pad_items(pad: Path) -> tuple[list[tuple[Path, str, str]], Counter]:
    """(image, HAM class name, skin type) per usable PAD-UFES-20 photo, and skipped rows counted by reason."""
    by_stem = {p.stem: p for p in (pad / "images").iterdir() if p.is_file()}
    items, skipped = [], Counter()
    for row in csv.DictReader(open(pad / "metadata.csv", encoding="utf-8")):
        image = by_stem.get(Path(row["img_id"]).stem)
        if image is None:
            skipped["no image of that stem"] += 1
        elif row["diagnostic"] not in PAD_TO_HAM:
            skipped[f"{row['diagnostic']}: no HAM10000 class"] += 1
        else:
            fst = row["fitspatrick"].strip()
            items.append((image, DX[PAD_TO_HAM[row["diagnostic"]]][1], str(int(float(fst))) if fst else UNKNOWN))
    return items, skipped


def ham_test_items(ham: Path) -> list[tuple[Path, str, str]]:
    """HAM10000 test-split images (DermaMNIST split) of the five classes PAD-UFES-20 shares."""
    split = {r["image_id"]: r["split"] for r in csv.DictReader(open(ham / "dermamnist_split.csv", encoding="utf-8"))}
    return [(ham / "images" / f"{r['image_id']}.jpg", DX[r["dx"]][1], UNKNOWN)
            for r in csv.DictReader(open(ham / "HAM10000_metadata.csv", encoding="utf-8"))
            if split.get(r["image_id"]) == "test" and DX[r["dx"]][1] in SHARED]


def predict(model, processor, paths: list[Path], batch: int) -> np.ndarray:
    """Index into CLASSES of each photo's most likely class (7-class option likelihood)."""
    out = []
    for i in tqdm(range(0, len(paths), batch), desc="7-class likelihood", unit="batch"):
        ims = [Image.open(p).convert("RGB") for p in paths[i:i + batch]]
        out.append(class_probs(model, processor, ims, [DIAGNOSIS_QUESTION] * len(ims), CLASSES).argmax(1))
    return np.concatenate(out)


def set_figures(gold: np.ndarray, pred: np.ndarray, rng: np.random.Generator, n_boot: int) -> tuple[dict, dict]:
    """Point figures with 95 % bootstrap intervals, and the bootstrap draws (for differences)."""
    mel = CLASSES.index(MELANOMA)

    def figs(g, p):  # rows of (resamples x items)
        out = class_figures(g, p, len(CLASSES))
        with np.errstate(invalid="ignore"):
            out["melanoma_recall"] = ((p == mel) & (g == mel)).sum(1) / (g == mel).sum(1)
        return out

    point = {k: float(v[0]) for k, v in figs(gold[None], pred[None]).items()}
    idx = rng.integers(0, len(gold), size=(n_boot, len(gold)))
    boots = figs(gold[idx], pred[idx])
    ci = {k: [round(float(x), 4) for x in np.nanpercentile(boots[k], [2.5, 97.5])] for k in FIGURES}
    return {k: {"value": round(point[k], 4), "ci": ci[k]} for k in FIGURES} | {"n": int(len(gold))}, boots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="the HAM10000 quickstart's model folder")
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="holds pad-ufes-20/ and ham10000/")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, help="also write every figure (and each photo's prediction) as JSON here")
    args = ap.parse_args()
    for need in (args.model / "config.json", args.data / "pad-ufes-20" / "metadata.csv",
                 args.data / "ham10000" / "dermamnist_split.csv"):
        if not need.is_file():
            sys.exit(f"error: {need} not found")
    from dermvqa.infer.generate import load_model
    from dermvqa.trust.ood import load_summary

    model, processor = load_model(args.model, device="cpu")
    pad, skipped = pad_items(args.data / "pad-ufes-20")
    sets = {"pad-ufes-20": pad, "ham10000-test": ham_test_items(args.data / "ham10000")}
    t0 = time.perf_counter()
    result = {"model": str(args.model), "classes": SHARED, "pad_skipped": dict(skipped), "sets": {}}
    rng, boots, preds = np.random.default_rng(0), {}, {}
    for name, items in sets.items():
        gold = np.array([CLASSES.index(c) for _, c, _ in items])
        preds[name] = predict(model, processor, [p for p, _, _ in items], args.batch)
        result["sets"][name], boots[name] = set_figures(gold, preds[name], rng, args.n_boot)
        result["sets"][name]["per_class_n"] = dict(Counter(c for _, c, _ in items))
    result["drop_ham_minus_pad"] = {k: {"value": round(result["sets"]["ham10000-test"][k]["value"]
                                                       - result["sets"]["pad-ufes-20"][k]["value"], 4),
                                        "ci": [round(float(x), 4) for x in np.nanpercentile(
                                            boots["ham10000-test"][k] - boots["pad-ufes-20"][k], [2.5, 97.5])]}
                                    for k in FIGURES}
    gold = [CLASSES.index(c) for _, c, _ in pad]
    result["pad_by_skin_type"] = per_type(CLASSES, gold, preds["pad-ufes-20"].tolist(), [t for _, _, t in pad],
                                          "ham_on_pad", args.n_boot)
    summary = load_summary(args.model)
    if summary is not None:
        flagged = np.concatenate([summary.flags(summary.features(model, processor, [Image.open(p).convert("RGB")
                                                                                    for p, _, _ in pad[i:i + 64]]))
                                  .numpy() for i in range(0, len(pad), 64)])
        kept = ~flagged
        right = preds["pad-ufes-20"] == np.array(gold)
        result["pad_ood"] = {"flagged": round(float(flagged.mean()), 4), "kept": int(kept.sum()),
                             "accuracy_all": round(float(right.mean()), 4),
                             "accuracy_kept": round(float(right[kept].mean()), 4) if kept.any() else None}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["predictions"] = {name: [{"image": p.name, "gold": c, "pred": CLASSES[int(k)], "skin_type": t}
                                    for (p, c, t), k in zip(sets[name], preds[name])] for name in sets}
    print(f"{args.model} on the five shared classes ({', '.join(SHARED)}); PAD skipped: {dict(skipped)}")
    print(f"{'set':15} {'n':>5} " + " ".join(f"{k:>24}" for k in FIGURES))
    for name in sets:
        f = result["sets"][name]
        print(f"{name:15} {f['n']:5d} " + " ".join(f"{f[k]['value']:.3f} [{f[k]['ci'][0]:.3f}, {f[k]['ci'][1]:.3f}]"
                                                   .rjust(24) for k in FIGURES))
    d = result["drop_ham_minus_pad"]
    print(f"{'HAM - PAD':15} {'':5} " + " ".join(f"{d[k]['value']:+.3f} [{d[k]['ci'][0]:+.3f}, {d[k]['ci'][1]:+.3f}]"
                                                 .rjust(24) for k in FIGURES))
    print("PAD-UFES-20 by Fitzpatrick type (accuracy, balanced accuracy; (few) = under 10 photos):")
    for t, f in result["pad_by_skin_type"]["types"].items():
        lo, hi = f["accuracy"]["ci"]
        print(f"  {t:8} n {f['n']:4d}{' (few)' if f['few_items'] else '':6} acc {f['accuracy']['value']:.3f} "
              f"[{lo:.3f}, {hi:.3f}]  bal {f['balanced_accuracy']['value']:.3f}")
    gap = result["pad_by_skin_type"]["gap"]["accuracy"]
    print("  accuracy gap, best - worst type with >= 10 photos: " + (
        f"{gap['gap']:.3f} [{gap['ci'][0]:.3f}, {gap['ci'][1]:.3f}] ({gap['best']} vs {gap['worst']})"
        if "gap" in gap else gap["not_computed"]))
    if "pad_ood" in result:
        o = result["pad_ood"]
        print(f"out of distribution: {o['flagged']:.3f} of PAD photos flagged; accuracy on all "
              f"{o['accuracy_all']:.3f}, on the {o['kept']} kept {o['accuracy_kept']}")
    print(f"scored {sum(len(v) for v in sets.values())} photos in {result['seconds']} s")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
