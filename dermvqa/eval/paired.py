"""Paired statistics for two runs scored on the same items: bootstrap interval of the mean difference and
McNemar's exact test on binary scores.

The bootstrap resamples items (the same resampled items for both runs, so the runs stay paired) from a
generator seeded by (seed, crc32 of the comparison's key), as dermvqa.eval.strata does: a key names one
stratum and metric, so every run is compared with the baseline on the same resamples.
"""
from __future__ import annotations

from math import comb

import numpy as np

from dermvqa.eval.strata import bootstrap_means


def mcnemar_exact(only_baseline: int, only_other: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs (baseline right and the other wrong, and the
    reverse) against Binomial(n, 1/2), twice the smaller tail, capped at 1; 1.0 with no discordant pair."""
    n = only_baseline + only_other
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(only_baseline, only_other) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_difference(baseline: list[float], other: list[float], key: str, n_boot: int = 1000, seed: int = 0,
                      mcnemar: bool = False) -> dict:
    """Mean of other − baseline over the shared items with its percentile 95 % bootstrap interval; with
    `mcnemar` (scores that are 0 or 1, such as closed accuracy) also the discordant counts and exact p-value."""
    base, oth = np.asarray(baseline, float), np.asarray(other, float)
    if base.shape != oth.shape or base.size == 0:
        raise ValueError(f"{key}: paired scores need the same non-zero number of items "
                         f"({base.size} baseline, {oth.size} other)")
    boots = bootstrap_means(oth - base, key, n_boot, seed)
    out = {"n": int(base.size), "baseline": float(base.mean()), "other": float(oth.mean()),
           "diff": float(oth.mean() - base.mean()),
           "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))], "bootstrap_key": key}
    if mcnemar:
        if not set(np.unique(np.concatenate([base, oth]))) <= {0.0, 1.0}:
            raise ValueError(f"{key}: McNemar's test needs scores of 0 or 1")
        only_base, only_other = int(((base == 1) & (oth == 0)).sum()), int(((base == 0) & (oth == 1)).sum())
        out["mcnemar"] = {"baseline_only_right": only_base, "other_only_right": only_other,
                          "p": mcnemar_exact(only_base, only_other)}
    return out
