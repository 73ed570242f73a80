"""HAM10000 with the official DermaMNIST split: real dermatoscopic pixels on a CPU.

HAM10000 metadata + images -> Derm1M-format import (DermaMNIST split kept) -> QA synthesis -> tiny LLaVA
(configs/ham10000_cpu.yaml) -> its out-of-distribution detector chosen against the Fitzpatrick17k train photos
beside --data (`ood_choice`) -> `dermvqa eval` on the 2,005 official test images (+ blind control) -> the
7-class figures the MedMNIST table reports, computed here from the model's answers: accuracy of the open
diagnosis answer mapped to the 7 classes, option-likelihood accuracy and one-vs-rest AUC over the 7 class
names, balanced accuracy, macro-F1, per-class recall, melanoma recall and the benign-called-malignant rate,
on the official test split and on its lesion-disjoint part (test images whose lesion has no image in
train), each with the blind twin.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import typer

from data_gen.importers.ham10000 import DERMAMNIST_LABELS, DX
from dermvqa.eval.classify import auc
from dermvqa.eval.diagnosis_table import per_class_lines
from dermvqa.quickstarts import OodChoice, Plugin, Prepared, echo_alert

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


def class_of(reply: str) -> int:
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


def seven_class_report(model, processor, qa_dir: Path, images: Path, eval_dir: Path, import_csv: Path,
                       prior: dict[str, float], batch_size: int = 64) -> dict:
    """The 7-class figures on the official test split and its lesion-disjoint part, image and blind, and the
    per-class diagnosis table of the official test split (dermvqa/eval/diagnosis_table.py)."""
    from PIL import Image
    from tqdm import tqdm

    from data_gen.records import read_records
    from dermvqa.eval.compare import StoredAnswers
    from dermvqa.infer.generate import blank_image

    test = [r for r in read_records(qa_dir, split="test") if r["family"] == "diagnosis"]
    gold = [CLASSES.index(r["label"]) for r in test]
    answers = StoredAnswers(eval_dir)
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
            open_pred = [class_of(answers.get(test[i]["id"], blind)["reply"]) for i in idx]
            key = f"{subset}{'_blind' if blind else ''}"
            report[key] = {"open_answer": class_metrics(g, open_pred),
                           "option_likelihood": class_metrics(g, list(p.argmax(1)), p)}
    report["diagnosis_table"] = diagnosis_table(model, processor, qa_dir, images, test, gold, probs, prior,
                                                report["official_test"], report["official_test_blind"])
    return report


def diagnosis_table(model, processor, qa_dir, images, test, gold, probs, prior, image_run, blind_run) -> dict:
    """Probe, option likelihood (as scored and logit-adjusted by the training prior), open answer, blind."""
    from data_gen.records import read_records
    from dermvqa.eval.diagnosis_table import adjusted_probs, probe_probs

    train = [(str(images / r["image"]), CLASSES.index(r["label"]))
             for r in read_records(qa_dir, split="train") if r["family"] == "diagnosis"]
    probe = probe_probs(model, processor, train, [str(images / r["image"]) for r in test], len(CLASSES))
    adjusted = adjusted_probs(np.asarray(probs[False]), CLASSES, prior)
    return {"probe": class_metrics(gold, list(probe.argmax(1)), probe),
            "option_likelihood": image_run["option_likelihood"],
            "likelihood_adjusted": class_metrics(gold, list(adjusted.argmax(1)), adjusted),
            "open_answer": image_run["open_answer"], "blind_likelihood": blind_run["option_likelihood"]}


def prepare(out: Path, data: Path, seed: int, options: dict) -> Prepared:
    """Import HAM10000 with the DermaMNIST split, then synthesize diagnosis / yes-no / multiple-choice QA."""
    from data_gen.importers.ham10000 import import_ham10000
    from data_gen.synth import synthesize

    if options["val_fraction"]:
        raise typer.BadParameter("ham10000 keeps the official DermaMNIST validation split; drop --val-fraction",
                                 param_hint="--val-fraction")
    images, qa = data / "images", out / "data"
    import_ham10000(data / "HAM10000_metadata.csv", images, qa, split_file=data / "dermamnist_split.csv")
    synthesize(qa / "derm1m.csv", qa / "ontology.json", qa, images_dir=images, seed=seed, overwrite=True,
               families=["diagnosis", "yes_no", "multiple_choice"])
    return Prepared(qa, images, f"qa:{qa}:test:root={images}", {"import_csv": qa / "derm1m.csv"})


def report(model, processor, model_dir: Path, prepared: Prepared, out: Path, metrics: dict, alert: dict) -> dict:
    """The 7-class figures, the closed families' accuracies and the headline of `dermvqa eval`."""
    from dermvqa.model.prior import load_prior

    result = seven_class_report(model, processor, prepared.qa_dir / "qa", prepared.images, out / "eval",
                                prepared.extras["import_csv"], load_prior(model_dir))
    result["families"] = {fam: {run: {"accuracy": s["accuracy"]["value"], "ci": s["accuracy"]["ci"],
                                      "n": s["accuracy"]["n"]} for run, s in runs.items()}
                          for fam, runs in metrics["strata"].get("family", {}).items()
                          if all("accuracy" in s for s in runs.values())}  # the closed families
    result["headline"] = {k: metrics[k] for k in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy",
                                                  "blind_open_exact_match") if k in metrics}
    return result


def echo(r: dict, out: Path) -> None:
    """The figures beside the MedMNIST table's."""
    typer.echo(f"\nDermaMNIST official test split ({r['official_test']['option_likelihood']['n']} images); "
               f"lesion-disjoint part ({r['lesion_disjoint_test']['option_likelihood']['n']}) in brackets; "
               "blind control after /")
    for key, name in (("option_likelihood", "7-class by option likelihood"), ("open_answer", "open answer -> class")):
        o, d = r["official_test"][key], r["lesion_disjoint_test"][key]
        b = r["official_test_blind"][key]
        auc_text = f", AUC {o['auc']:.3f} [{d['auc']:.3f}] / {b['auc']:.3f}" if "auc" in o else ""
        typer.echo(f"  {name}: accuracy {o['accuracy']:.3f} [{d['accuracy']:.3f}] / {b['accuracy']:.3f}{auc_text}, "
                   f"balanced accuracy {o['balanced_accuracy']:.3f} [{d['balanced_accuracy']:.3f}], "
                   f"macro-F1 {o['macro_f1']:.3f}")
        typer.echo(f"    melanoma recall {o['melanoma_recall']:.3f} [{d['melanoma_recall']:.3f}]; benign called "
                   f"malignant {o['benign_called_malignant']:.3f} [{d['benign_called_malignant']:.3f}]")
    for fam, runs in r["families"].items():
        typer.echo(f"  {fam}: accuracy {runs['image']['accuracy']:.3f} (n {runs['image']['n']})"
                   + (f" / blind {runs['blind']['accuracy']:.3f}" if "blind" in runs else ""))
    typer.echo("  Per class (recall), official test: the tower's linear probe, the option likelihood as scored and "
               "logit-adjusted by the training prior, the open answer, the blind control")
    for line in per_class_lines(r["diagnosis_table"], CLASSES):
        typer.echo(f"    {line}")
    echo_alert(r["malignancy_alert"], " (the melanoma recall above is the top diagnosis's alone)")
    typer.echo("  MedMNIST v2 (same test split): ResNet-18 28 px 0.735 / AUC 0.917; ResNet-18 224 px 0.754 / 0.920; "
               "Google AutoML Vision 0.768 / 0.914; majority class 0.669")


def ood_choice(data: Path) -> OodChoice | str:
    """Clinical atlas photos, the Fitzpatrick17k train split beside --data, as the reference; the HAM10000
    validation split as the in-distribution check, at most 3 % abstaining there (the README's choice)."""
    from dermvqa.quickstarts.reference import beside, fitzpatrick17k_photos

    f17k = beside(data, "fitzpatrick17k", "ajl_subset.csv")
    if isinstance(f17k, str):
        return f17k
    return OodChoice({"fitzpatrick17k-train": fitzpatrick17k_photos(f17k, "train")}, inside="val", max_abstain=0.03)


PLUGIN = Plugin("ham10000", "ham10000_cpu", prepare, report, echo,
                data_file="HAM10000_metadata.csv", data_help="HAM10000_metadata.csv, images/ and dermamnist_split.csv",
                ood_choice=ood_choice)
