"""Classifier metrics for families whose closed items share one option set (zero-shot lists, HAM10000,
yes/no): balanced accuracy, macro-F1, one-vs-rest macro AUC and option-likelihood accuracy, each with a
seeded percentile bootstrap interval over items (resampled whole, the statistic recomputed each time).

A reply that names no option counts as a wrong prediction of no class. AUC and likelihood accuracy need
the option probabilities that `--mode likelihood` logs.
"""
from __future__ import annotations

import numpy as np

from dermvqa.eval.strata import keyed_rng

NEEDS_PROBS = "AUC and option-likelihood accuracy need option probabilities: run with --mode likelihood"


def balanced_accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in gold."""
    return float(np.mean([np.mean(pred[gold == c] == c) for c in np.unique(gold)]))


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in gold or predicted (-1, no class, is never a class)."""
    f1 = []
    for c in np.unique(np.concatenate([gold, pred[pred >= 0]])):
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        f1.append(2 * tp / denom)
    return float(np.mean(f1))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    ranks = np.empty(x.size)
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return ranks


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney): the chance a positive outscores a negative, ties one half; nan without both."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((_ranks(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(gold: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over classes with positives and negatives; nan if none."""
    aucs = [a for c in range(probs.shape[1]) if not np.isnan(a := auc(probs[:, c], gold == c))]
    return float(np.mean(aucs)) if aucs else float("nan")


def _with_interval(stat, arrays: tuple, key: str, n_boot: int, seed: int) -> dict | None:
    value = stat(*arrays)
    if np.isnan(value):
        return None
    rng, n = keyed_rng(seed, key), arrays[0].size
    boots = np.array([stat(*(a[idx] for a in arrays)) for idx in rng.integers(0, n, size=(n_boot, n))])
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"value": value, "ci": [float(lo), float(hi)], "n": int(n)}


def classifier_metrics(labels: list[str], gold: list[int], pred: list[int | None], probs: list[list[float]] | None,
                       key: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """The metrics above for one family; `probs` rows follow `labels` (None when not logged)."""
    g = np.asarray(gold)
    p = np.asarray([-1 if x is None else x for x in pred])
    out = {"classes": labels,
           "balanced_accuracy": _with_interval(balanced_accuracy, (g, p), f"{key}/bacc", n_boot, seed),
           "macro_f1": _with_interval(macro_f1, (g, p), f"{key}/f1", n_boot, seed)}
    if probs is None:
        out["not_computed"] = NEEDS_PROBS
        return out
    pr = np.asarray(probs, float)
    out["likelihood_accuracy"] = _with_interval(lambda a, b: float(np.mean(b.argmax(1) == a)), (g, pr),
                                                f"{key}/lacc", n_boot, seed)
    auc = _with_interval(macro_auc, (g, pr), f"{key}/auc", n_boot, seed)
    if auc is None:
        out["not_computed"] = "AUC: no class has both positive and negative items"
    else:
        out["auc"] = auc
    return out
