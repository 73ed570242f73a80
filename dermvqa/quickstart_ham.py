"""`dermvqa quickstart --dataset ham10000`: real dermatoscopic pixels, the official DermaMNIST split, on a CPU.

HAM10000 metadata + images -> Derm1M-format import (DermaMNIST split kept) -> QA synthesis -> tiny LLaVA
trained from scratch (configs/ham10000_cpu.yaml) -> `dermvqa eval` on the 2,005 official test images
(+ blind control) -> the 7-class figures the MedMNIST table reports, computed here from the model's
answers: accuracy of the open diagnosis answer mapped to the 7 classes, option-likelihood accuracy
and one-vs-rest AUC over the 7 class names, balanced accuracy, macro-F1, per-class recall, melanoma
recall and the benign-called-malignant rate, on the official test split and on its lesion-disjoint
part (test images whose lesion has no image in train), each with the blind twin.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from data_gen.importers.ham10000 import DERMAMNIST_LABELS, DX
from dermvqa.eval.classify import auc

CLASSES = [DX[code][1] for code in DERMAMNIST_LABELS]            # the names the model is taught, medmnist order
MALIGNANT = {DX[code][1] for code in ("akiec", "bcc", "mel")}     # HAM10000's malignant / pre-malignant classes
MELANOMA = DX["mel"][1]


def class_metrics(gold: list[int], pred: list[int], probs: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class recall, melanoma recall, benign-called-malignant
    rate, and (with probabilities) the medmnist AUC: the mean of the seven one-vs-rest AUCs.
    `pred` may hold -1 (an answer naming no class): it counts as wrong and as no class."""
    y, p, k = np.asarray(gold), np.asarray(pred), len(CLASSES)
    recall = {CLASSES[c]: float((p[y == c] == c).mean()) for c in range(k) if (y == c).any()}
    f1 = []
    for c in range(k):
        tp, fp, fn = (int(((p == c) & (y == c)).sum()), int(((p == c) & (y != c)).sum()),
                      int(((p != c) & (y == c)).sum()))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    malignant = np.array([CLASSES[c] in MALIGNANT for c in range(k)])
    benign_gold = ~malignant[y]
    called_malignant = np.array([q >= 0 and malignant[q] for q in p])
    nan = float("nan")
    out = {"n": int(len(y)), "accuracy": float((p == y).mean()),
           "balanced_accuracy": float(np.mean(list(recall.values()))), "macro_f1": float(np.mean(f1)),
           "melanoma_recall": recall.get(MELANOMA, nan),
           "benign_called_malignant": float(called_malignant[benign_gold].mean()) if benign_gold.any() else nan,
           "unmapped_answers": int((p < 0).sum()), "recall": recall}
    if probs is not None:
        per_class = [auc(probs[:, c], y == c) for c in range(k)]
        out["auc"] = float(np.nanmean(per_class))
        out["auc_per_class"] = dict(zip(CLASSES, per_class))
    return out


def lesion_disjoint(import_csv: Path) -> set[str]:
    """Images of the test split whose lesion (group_id) has no image in train."""
    with open(import_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    seen_in_train = {r["group_id"] for r in rows if r["split"] == "train"}
    return {r["filename"] for r in rows if r["split"] == "test" and r["group_id"] not in seen_in_train}


def _class_of(reply: str) -> int:
    text = reply.strip().strip(".").lower()
    return next((i for i, c in enumerate(CLASSES) if c.lower() == text), -1)


def class_probs(model, processor, images: list, questions: list[str], names: list[str]) -> np.ndarray:
    """P(reply = name | image, question) over `names`, normalised: the option likelihood of
    dermvqa.infer.likelihood, with the prompt run once per image and its KV cache shared by all names."""
    import torch

    from dermvqa.infer.generate import encode_prompts, prompt_text, user_turn
    from dermvqa.infer.likelihood import continuation_text

    tok, k = processor.tokenizer, len(names)
    conts = [tok(continuation_text(processor, questions[0], n), add_special_tokens=False)["input_ids"] for n in names]
    width = max(len(c) for c in conts)
    ids = torch.full((k, width), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((k, width), dtype=torch.long)
    for i, c in enumerate(conts):
        ids[i, :len(c)], mask[i, :len(c)] = torch.tensor(c), 1
    enc = encode_prompts(processor, [im.convert("RGB") for im in images],
                         [prompt_text(processor, [user_turn(q)]) for q in questions], return_tensors="pt", padding=True)
    with torch.inference_mode():
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        first = model(**enc, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        b = len(images)
        rest_mask = torch.cat([enc["attention_mask"].repeat_interleave(k, 0), mask.repeat(b, 1)], dim=1)
        rest_pos = positions[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(width)
        rest = model(input_ids=ids.repeat(b, 1), attention_mask=rest_mask, position_ids=rest_pos,
                     past_key_values=cache).logits
    lp_first = torch.log_softmax(first.logits[:, -1].float(), -1)[:, ids[:, 0]]            # (b, k)
    lp_rest = torch.log_softmax(rest[:, :-1].float(), -1).gather(-1, ids.repeat(b, 1)[:, 1:, None])[..., 0]
    total = lp_first + (lp_rest * mask.repeat(b, 1)[:, 1:]).sum(-1).view(b, k)
    return torch.softmax(total, -1).numpy()


def seven_class_report(model_dir: Path, qa_dir: Path, images: Path, eval_dir: Path, import_csv: Path,
                       batch_size: int = 64) -> dict:
    """The 7-class figures on the official test split and its lesion-disjoint part, image and blind."""
    from PIL import Image
    from tqdm import tqdm

    from data_gen.records import read_records
    from dermvqa.eval.runner import blank_image
    from dermvqa.infer.generate import load_model

    test = [r for r in read_records(qa_dir, split="test") if r["family"] == "diagnosis"]
    gold = [CLASSES.index(r["label"]) for r in test]
    replies = {}
    with open(eval_dir / "answers.jsonl", encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            replies[(a["id"], a["blind"])] = a["reply"]
    model, processor = load_model(model_dir, device="cpu")
    blank = blank_image(processor)
    probs = {False: []}
    for start in tqdm(range(0, len(test), batch_size), desc="7-class option likelihood", unit="batch"):
        batch = test[start:start + batch_size]
        probs[False] += list(class_probs(model, processor, [Image.open(images / r["image"]) for r in batch],
                                         [r["question"] for r in batch], CLASSES))
    # Blind: every blank-image input with the same question is the same input, so score each question once.
    questions = sorted({r["question"] for r in test})
    blind = dict(zip(questions, class_probs(model, processor, [blank] * len(questions), questions, CLASSES)))
    probs[True] = [blind[r["question"]] for r in test]
    disjoint = lesion_disjoint(import_csv)
    report = {"classes": CLASSES, "malignant": sorted(MALIGNANT)}
    for subset, keep in (("official_test", lambda r: True), ("lesion_disjoint_test", lambda r: r["image"] in disjoint)):
        idx = [i for i, r in enumerate(test) if keep(r)]
        for blind in (False, True):
            p = np.asarray(probs[blind])[idx]
            g = [gold[i] for i in idx]
            open_pred = [_class_of(replies[(test[i]["id"], blind)]) for i in idx]
            key = f"{subset}{'_blind' if blind else ''}"
            report[key] = {"open_answer": class_metrics(g, open_pred),
                           "option_likelihood": class_metrics(g, list(p.argmax(1)), p)}
    return report


def run_ham(data: Path, out: Path, recipe: Path, seed: int) -> dict:
    """The whole HAM10000 path; returns (and writes to OUT/ham10000_metrics.json) the summary."""
    from data_gen.importers.ham10000 import import_ham10000
    from data_gen.synth import synthesize
    from dermvqa.eval import run_eval
    from dermvqa.infer.alert import fit_on_val_measure_on_test
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training
    from atomic_files import write_text_atomic

    t0 = time.time()
    images, qa = data / "images", out / "data"
    import_ham10000(data / "HAM10000_metadata.csv", images, qa, split_file=data / "dermamnist_split.csv")
    synthesize(qa / "derm1m.csv", qa / "ontology.json", qa, images_dir=images, seed=seed, overwrite=True,
               families=["diagnosis", "yes_no", "multiple_choice"])
    t1 = time.time()
    rec = load_recipe(recipe, [f"data.qa_dir={qa / 'qa'}", f"data.image_root={images}",
                               f"train.output_dir={out / 'train'}", f"train.seed={seed}"])
    model_dir = run_training(rec)
    t2 = time.time()
    metrics = run_eval(model_dir, f"qa:{qa}:test:root={images}", out / "eval", batch_size=64, blind=True)
    report = seven_class_report(model_dir, qa / "qa", images, out / "eval", qa / "derm1m.csv")
    report["malignancy_alert"] = fit_on_val_measure_on_test(model_dir, qa / "qa", images)
    t3 = time.time()
    report["families"] = {fam: {run: {"accuracy": s["accuracy"]["value"], "ci": s["accuracy"]["ci"],
                                      "n": s["accuracy"]["n"]} for run, s in runs.items()}
                          for fam, runs in metrics["strata"].get("family", {}).items()
                          if all("accuracy" in s for s in runs.values())}  # the closed families
    report["headline"] = {k: metrics[k] for k in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy",
                                                  "blind_open_exact_match") if k in metrics}
    report["seconds"] = {"data": round(t1 - t0), "train": round(t2 - t1), "eval": round(t3 - t2),
                         "total": round(t3 - t0)}
    write_text_atomic(out / "ham10000_metrics.json", json.dumps(report, indent=1) + "\n")
    return report
