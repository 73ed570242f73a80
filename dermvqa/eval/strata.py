"""Group per-item scores into strata and attach seeded bootstrap 95 % intervals (reproducible to the bit).

A row is `{"id", "family", "source", "group", "fitzpatrick", "scores": {metric: value}}`. Each
(stratum, metric) draws from its own generator seeded by (seed, crc32 of its name), so adding a
stratum or a metric never moves another one's interval.
"""
from __future__ import annotations

import zlib

import numpy as np

DIMENSIONS = {"family": "family", "source": "source", "ontology_group": "group", "fitzpatrick": "fitzpatrick",
              "language": "lang"}
UNKNOWN = "unknown"


def keyed_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def bootstrap_means(values: np.ndarray, key: str, n_boot: int, seed: int) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of `values`."""
    rng, out = keyed_rng(seed, key), np.empty(n_boot)
    step = max(1, 2_000_000 // max(1, values.size))  # bound the index matrix to ~16 MB
    for start in range(0, n_boot, step):
        idx = rng.integers(0, values.size, size=(min(step, n_boot - start), values.size))
        out[start:start + idx.shape[0]] = values[idx].mean(axis=1)
    return out


def summarize(rows: list[dict], key: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """{metric: {"value", "ci": [lo, hi], "n"}} for every metric some row carries."""
    metrics = sorted({m for r in rows for m in r["scores"]})
    out = {}
    for m in metrics:
        vals = np.array([r["scores"][m] for r in rows if m in r["scores"]], float)
        boots = bootstrap_means(vals, f"{key}/{m}", n_boot, seed)
        out[m] = {"value": float(vals.mean()), "ci": [float(np.percentile(boots, 2.5)),
                                                      float(np.percentile(boots, 97.5))], "n": int(vals.size)}
    return out


def stratum_of(row: dict, dim: str) -> str:
    value = row.get(DIMENSIONS[dim])
    return str(value) if value not in ("", 0, None) else UNKNOWN


def group_rows(rows: list[dict], dim: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(stratum_of(r, dim), []).append(r)
    return dict(sorted(groups.items()))


def stratify(rows: list[dict], n_boot: int = 1000, seed: int = 0, prefix: str = "") -> dict:
    """{dimension: {stratum: summary}} for each dimension where some row has a known value."""
    out = {}
    for dim in DIMENSIONS:
        groups = group_rows(rows, dim)
        if set(groups) <= {UNKNOWN}:
            continue
        out[dim] = {name: summarize(g, f"{prefix}{dim}/{name}", n_boot, seed) for name, g in groups.items()}
    return out


def skin_type_gap(rows: list[dict], metrics: list[str], n_boot: int = 1000, seed: int = 0,
                  min_n: int = 10, prefix: str = "") -> dict:
    """Best minus worst Fitzpatrick type per metric (types with >= min_n scored items), with an interval."""
    groups = {k: g for k, g in group_rows(rows, "fitzpatrick").items() if k != UNKNOWN}
    out = {}
    for m in metrics:
        vals = {k: np.array([r["scores"][m] for r in g if m in r["scores"]], float) for k, g in groups.items()}
        counts = {k: int(v.size) for k, v in vals.items() if v.size}
        eligible = {k: v for k, v in vals.items() if v.size >= min_n}
        if len(eligible) < 2:
            if counts:
                out[m] = {"not_computed": f"fewer than two skin types with >= {min_n} items", "n": counts}
            continue
        means = {k: float(v.mean()) for k, v in eligible.items()}
        best, worst = max(means, key=means.get), min(means, key=means.get)
        # interval of the difference between the two types picked on the full data (a max-min over
        # resamples would be biased upwards for small strata)
        gaps = (bootstrap_means(eligible[best], f"{prefix}gap/{m}/{best}", n_boot, seed)
                - bootstrap_means(eligible[worst], f"{prefix}gap/{m}/{worst}", n_boot, seed))
        out[m] = {"best": best, "worst": worst, "gap": means[best] - means[worst],
                  "ci": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))],
                  "means": means, "n": counts}
    return out
