"""Classification figures per Fitzpatrick skin type (metrics.json "skin_type"), with their best-worst gap.

For every classifier family (closed items sharing one option set) and the open `diagnosis` family (the
reply mapped to one of the gold diagnosis names as `parse_choice` maps a reply to a listed option; a
reply naming none or several is a prediction of no class) and every skin type, including "unknown":
n, accuracy, balanced accuracy and macro-F1 (defined as in classify.py), each with a 95 % percentile
bootstrap interval over that type's items. A type with fewer than `min_n` items is kept and marked
`few_items`. The gap per figure is best minus worst type among the known types with >= `min_n`
items, the two picked on the full data; its interval is the percentile interval of the difference of
the two types' bootstrap figures (each type resampled on its own, `n_boot` times, from a generator
keyed by the run, family and type), so adding a family or a type never moves another's interval.
"""
from __future__ import annotations

import numpy as np

from dermvqa.eval.items import OPEN
from dermvqa.eval.parse import parse_choice
from dermvqa.eval.strata import UNKNOWN, keyed_rng

FIGURES = ("accuracy", "balanced_accuracy", "macro_f1")
DIAGNOSIS = "diagnosis"
NO_SKIN_TYPE = "no scored item carries a skin type"


def figures(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro-F1 of each row of (resamples x items) class arrays; pred -1 = none."""
    rows, n = gold.shape
    offset = (np.arange(rows) * (n_classes + 1))[:, None]
    pred_slot = np.where(pred < 0, n_classes, pred)  # the extra slot collects "no class"
    count = (n_classes + 1) * rows

    def per_class(values):
        return np.bincount((values + offset).ravel(), minlength=count).reshape(rows, n_classes + 1)[:, :n_classes]

    tp = per_class(np.where(gold == pred, gold, n_classes))
    in_gold, in_pred = per_class(gold), per_class(pred_slot)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(in_gold > 0, tp / in_gold, np.nan)
        f1 = np.where(in_gold + in_pred > 0, 2 * tp / (in_gold + in_pred), np.nan)
    return {"accuracy": tp.sum(1) / n, "balanced_accuracy": np.nanmean(recall, 1), "macro_f1": np.nanmean(f1, 1)}


def _type_figures(gold: np.ndarray, pred: np.ndarray, n_classes: int, key: str, n_boot: int, seed: int):
    """({figure: {"value", "ci", "n"}}, {figure: bootstrap values}) for one skin type's items."""
    point = figures(gold[None], pred[None], n_classes)
    rng, step = keyed_rng(seed, key), max(1, 2_000_000 // gold.size)  # index chunks of ~16 MB
    parts = []
    for start in range(0, n_boot, step):
        idx = rng.integers(0, gold.size, size=(min(step, n_boot - start), gold.size))
        parts.append(figures(gold[idx], pred[idx], n_classes))
    boots = {m: np.concatenate([b[m] for b in parts]) for m in FIGURES}
    out = {m: {"value": float(point[m][0]), "ci": [float(x) for x in np.percentile(boots[m], [2.5, 97.5])],
               "n": int(gold.size)} for m in FIGURES}
    return out, boots


def per_type(classes: list[str], gold: list[int], pred: list[int | None], types: list[str], key: str,
             n_boot: int = 1000, seed: int = 0, min_n: int = 10) -> dict:
    """{"classes", "types": {type: {"n", "few_items", figure...}}, "gap": {figure: ...}} for one family."""
    g = np.asarray(gold)
    p = np.asarray([-1 if x is None else x for x in pred])
    t = np.asarray(types)
    out_types, boots = {}, {}
    for name in sorted(set(types), key=lambda s: (s == UNKNOWN, s)):
        mask = t == name
        figs, boots[name] = _type_figures(g[mask], p[mask], len(classes), f"{key}/{name}", n_boot, seed)
        out_types[name] = {"n": int(mask.sum()), "few_items": bool(mask.sum() < min_n), **figs}
    eligible = [k for k, v in out_types.items() if k != UNKNOWN and not v["few_items"]]
    gap = {}
    for m in FIGURES:
        if len(eligible) < 2:
            gap[m] = {"not_computed": f"fewer than two skin types with >= {min_n} items"}
            continue
        best = max(eligible, key=lambda k: out_types[k][m]["value"])
        worst = min(eligible, key=lambda k: out_types[k][m]["value"])
        diff = boots[best][m] - boots[worst][m]
        gap[m] = {"best": best, "worst": worst, "gap": out_types[best][m]["value"] - out_types[worst][m]["value"],
                  "ci": [float(x) for x in np.nanpercentile(diff, [2.5, 97.5])]}
    return {"classes": len(classes), "types": out_types, "gap": gap}


def _type_of(item) -> str:
    return str(item.fitzpatrick) if item.fitzpatrick else UNKNOWN


def skin_type_section(classifiers: dict, picks: list, key: str, n_boot: int = 1000, seed: int = 0,
                      min_n: int = 10) -> dict:
    """Per-type figures for each classifier family ({family: (labels, picks)}) and the open diagnosis."""
    if not any(it.fitzpatrick for it, _, _ in picks):
        return {"not_computed": NO_SKIN_TYPE}
    tasks = {}
    for fam, (labels, group) in classifiers.items():
        col = {lab: i for i, lab in enumerate(labels)}
        tasks[fam] = (labels, [col[it.gold] for it, _, _ in group],
                      [None if pick is None else col[it.options[pick]] for it, pick, _ in group],
                      [_type_of(it) for it, _, _ in group], "option picked")
    diagnosis = [(it, ans) for it, _, ans in picks if it.family == DIAGNOSIS and it.answer_type == OPEN]
    if diagnosis and DIAGNOSIS not in tasks:
        labels = sorted({it.gold for it, _ in diagnosis})
        tasks[DIAGNOSIS] = (labels, [labels.index(it.gold) for it, _ in diagnosis],
                            [parse_choice(ans["reply"], labels) for _, ans in diagnosis],
                            [_type_of(it) for it, _ in diagnosis], "reply names one gold diagnosis")
    out = {}
    for fam, (labels, gold, pred, types, mapping) in sorted(tasks.items()):
        out[fam] = {"prediction": mapping, **per_type(labels, gold, pred, types, f"{key}/skin_type/{fam}",
                                                      n_boot, seed, min_n)}
    return out
