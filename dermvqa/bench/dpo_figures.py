"""The figures of dermvqa.bench.dpo's table, stage 2 against stage 2 + DPO on the same test items.

Figures (image answers; 95 % percentile bootstrap over items, seeded; DPO − stage 2 paired on the same resamples):
- closed accuracy, open exact match, blind closed accuracy: `dermvqa eval`'s metrics.json; paired rows from
  dermvqa.eval.compare (blind: its scorer and paired test), McNemar's exact test for the accuracies;
- diagnosis balanced accuracy: the `diagnosis` family's open reply mapped to a diagnosis label of the QA (normalised,
  equal to a label, its ontology node name or one of their comma-separated synonyms; else no class, wrong), mean
  recall over the gold classes;
- melanoma recall: diagnosis items whose gold label names melanoma, the share whose reply maps to a melanoma label
  (the greedy top diagnosis alone);
- sibling share: of the wrong diagnosis replies naming a known diagnosis, the share naming an ontology sibling of the
  truth (same parent; the flat ontology.json's shared parent names count: data_gen.preference.relation, the rule the
  pairs were built with); lower is better;
- ECE (10 bins of the top option probability, dermvqa.eval.metrics.calibration) and Brier (per item, sum over the
  options of (p - 1[gold])², averaged; 0 best, 2 worst) on closed items with options, from likelihood mode.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from data_gen.preference import SIBLING, diagnosis_paths, relation
from dermvqa.eval.classify import balanced_accuracy
from dermvqa.eval.compare import StoredAnswers, compare, load_metrics
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.metrics import TextScorer, calibration
from dermvqa.eval.paired import mcnemar_exact, paired_difference
from dermvqa.eval.parse import normalize
from dermvqa.eval.strata import keyed_rng
from dermvqa.eval.summary import score_rows

MODELS = ("stage2", "dpo")


def name_lookup(records: list[dict]) -> tuple[dict, dict]:
    """(label -> ontology path, normalised name -> label) over the QA's diagnosis labels; a label's node name and
    the comma-separated synonyms of both also map to it unless two labels share them."""
    paths, seen = diagnosis_paths(records), {}
    for label, path in paths.items():
        for alias in {a for name in (label, path[-1]) for a in (name, *name.split(","))}:
            seen.setdefault(normalize(alias), set()).add(label)
    lookup = {a: next(iter(labels)) for a, labels in seen.items() if a and len(labels) == 1}
    return paths, lookup | {normalize(label): label for label in paths}


def paired_stat(stat, a: tuple, b: tuple, key: str, n_boot: int, seed: int, count=None, mcnemar: bool = False) -> dict:
    """stat(*arrays) of stage 2 (a) and DPO (b) with their 95 % intervals and that of b − a, all from the same
    item resamples; `count(*arrays)` is each model's n (default: items); McNemar on 0/1 scores."""
    n, ci = len(a[0]), lambda v: [float(q) for q in np.nanpercentile(v, [2.5, 97.5])]
    if n == 0:
        return {"stage2": None, "dpo": None, "paired": None}
    idx = keyed_rng(seed, key).integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        values = [stat(*a), stat(*b)]
        boots = [np.array([stat(*(x[i] for x in arrays)) for i in idx]) for arrays in (a, b)]
        out = {m: None if math.isnan(v) else {"value": float(v), "ci": ci(bt), "n": int(count(*x) if count else n)}
               for m, v, bt, x in zip(MODELS, values, boots, (a, b))}
        out["paired"] = None if any(math.isnan(v) for v in values) else {
            "diff": float(values[1] - values[0]), "ci": ci(boots[1] - boots[0]), "n": n}
    if mcnemar and out["paired"]:
        only_base, only_dpo = int(((a[0] == 1) & (b[0] == 0)).sum()), int(((a[0] == 0) & (b[0] == 1)).sum())
        out["paired"]["mcnemar"] = {"baseline_only_right": only_base, "other_only_right": only_dpo,
                                    "p": mcnemar_exact(only_base, only_dpo)}
    return out


def own_figures(records: list[dict], answers: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """Balanced accuracy, melanoma recall, sibling share, ECE and Brier per model and paired, from the QA records
    (all splits; the test split is scored) and answers {model: {mode: {(id, blind): answers.jsonl row}}}."""
    paths, lookup = name_lookup(records)
    test = sorted((r for r in records if r["split"] == "test"), key=lambda r: r["id"])
    gen = [answers[m]["generate"] for m in MODELS]
    dx = [r for r in test if r["family"] == "diagnosis" and all((r["id"], False) in g for g in gen)]
    classes = sorted({r["label"] for r in dx})
    gold = np.array([classes.index(r["label"]) for r in dx], int)
    is_mel = np.array(["melanoma" in r["label"].lower() for r in dx], bool)
    per = {}
    for m, g in zip(MODELS, gen):
        named = [lookup.get(normalize(g[(r["id"], False)]["reply"])) for r in dx]
        wrong = np.array([n is not None and n != r["label"] for n, r in zip(named, dx)], bool)
        per[m] = {"pred": np.array([classes.index(n) if n in classes else -1 for n in named], int),
                  "mel_hit": np.array(["melanoma" in (n or "").lower() for n in named], float)[is_mel],
                  "wrong": wrong, "sibling": np.array([w and relation(tuple(r["ontology_path"]), paths[n]) == SIBLING
                                                       for w, n, r in zip(wrong, named, dx)], bool)}
    lik = [answers[m]["likelihood"] for m in MODELS]
    closed = [r for r in test if r["options"] and all("probs" in x.get((r["id"], False), {}) for x in lik)]
    for m, x in zip(MODELS, lik):
        probs = [np.asarray(x[(r["id"], False)]["probs"], float) for r in closed]
        per[m]["conf"] = np.array([p.max() for p in probs])
        per[m]["correct"] = np.array([float(p.argmax() == r["answer_index"]) for p, r in zip(probs, closed)])
        per[m]["brier"] = np.array([((p - np.eye(len(p))[r["answer_index"]]) ** 2).sum()
                                    for p, r in zip(probs, closed)])
    s, d = per["stage2"], per["dpo"]
    share = lambda wrong, sib: sib.sum() / wrong.sum() if wrong.sum() else float("nan")  # noqa: E731
    ece = lambda conf, correct: calibration(conf, correct)["ece"] if conf.size else float("nan")  # noqa: E731
    return {
        "balanced_accuracy": paired_stat(balanced_accuracy, (gold, s["pred"]), (gold, d["pred"]), "bacc", n_boot, seed),
        "melanoma_recall": paired_stat(np.mean, (s["mel_hit"],), (d["mel_hit"],), "mel", n_boot, seed, mcnemar=True),
        "sibling_share": paired_stat(share, (s["wrong"], s["sibling"]), (d["wrong"], d["sibling"]), "sibling",
                                     n_boot, seed, count=lambda wrong, sib: wrong.sum()),
        "ece": paired_stat(ece, (s["conf"], s["correct"]), (d["conf"], d["correct"]), "ece", n_boot, seed),
        "brier": paired_stat(np.mean, (s["brier"],), (d["brier"],), "brier", n_boot, seed),
        "items": {"diagnosis": len(dx), "melanoma": int(is_mel.sum()), "closed_with_probs": len(closed)}}


def eval_figures(runs: dict, out: Path, n_boot: int, seed: int) -> dict:
    """Closed accuracy, open exact match and blind closed accuracy from the generate runs' metrics.json, paired
    through dermvqa.eval.compare (blind: its scorer and paired test on the blind answers)."""
    base, dpo = runs["stage2_generate"], runs["dpo_generate"]
    compare([base, dpo], out / "eval" / "compare_generate", n_boot, seed)
    paired = {p["metric"]: p for p in json.loads((out / "eval" / "compare_generate" / "compare.json").read_text())[
        "paired"] if p["dimension"] == "overall"}
    metrics = [load_metrics(r) for r in (base, dpo)]
    stored = [StoredAnswers(r) for r in (base, dpo)]
    items = [it for it in load_bench(metrics[0]["settings"]["bench"], strict=False).items
             if all(st.get(it.id, True) is not None for st in stored)]
    scorer = TextScorer()
    blind = [{r["id"]: r["scores"]["accuracy"] for r in score_rows(items, st, True, scorer)[0]
              if "accuracy" in r["scores"]} for st in stored]
    shared = sorted(set(blind[0]) & set(blind[1]))
    figs = {}
    for key, run, metric in (("closed_accuracy", "image", "accuracy"), ("open_exact_match", "image", "exact_match"),
                             ("blind_closed_accuracy", "blind", "accuracy")):
        figs[key] = {m: x["overall"].get(run, {}).get(metric) for m, x in zip(MODELS, metrics)}
        if run == "image":
            figs[key]["paired"] = paired.get(metric)
        else:
            figs[key]["paired"] = paired_difference([blind[0][i] for i in shared], [blind[1][i] for i in shared],
                                                    "paired/overall/all/blind_accuracy", n_boot, seed,
                                                    mcnemar=True) if shared else None
    return figs
