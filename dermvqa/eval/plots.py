"""PNG plots from metrics.json's tree (per-stratum bars with intervals, reliability diagram, confusion matrices)
and compare's forest plot of differences from the baseline."""
from __future__ import annotations

import os
import re
from pathlib import Path

MAX_CONFUSION_LABELS = 40


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    """Lay out, write atomically and close the figure."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    _plt().close(fig)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def plot_strata(out: Path, metrics: dict, headline: list[str]) -> list[tuple[str, str]]:
    """One figure per stratum dimension, one panel per headline metric; blind shown as black marks."""
    plt, written = _plt(), []
    for dim, strata in metrics["strata"].items():
        present = [m for m in headline if any(m in s["image"] for s in strata.values())]
        if not present:
            continue
        names = list(strata)
        fig, axes = plt.subplots(len(present), 1, figsize=(max(5, 0.6 * len(names) + 2), 2.8 * len(present)),
                                 squeeze=False)
        for ax, m in zip(axes[:, 0], present):
            xs = [i for i, n in enumerate(names) if m in strata[n]["image"]]
            vals = [strata[names[i]]["image"][m] for i in xs]
            err = [[v["value"] - v["ci"][0] for v in vals], [v["ci"][1] - v["value"] for v in vals]]
            ax.bar(xs, [v["value"] for v in vals], yerr=err, capsize=3, color="#4c72b0", label="with image")
            blind = [(i, strata[names[i]]["blind"][m]["value"]) for i in xs if m in strata[names[i]].get("blind", {})]
            if blind:
                ax.scatter(*zip(*blind), marker="_", s=200, color="black", zorder=3, label="blind")
            ax.set_xticks(range(len(names)), [f"{n}\n(n={strata[n]['image'].get(m, {}).get('n', 0)})" for n in names],
                          rotation=30 if len(names) > 6 else 0, fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(m)
            ax.legend(fontsize=7, loc="upper right")
        axes[0, 0].set_title(f"by {dim} (bars: 95% bootstrap interval)")
        name = f"strata_{_safe(dim)}.png"
        _save(fig, out / name)
        written.append((name, f"by {dim}"))
    return written


def plot_reliability(out: Path, calib: dict) -> list[tuple[str, str]]:
    if "bins" not in calib:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    bins = calib["bins"]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09,
           color="#4c72b0", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color="black", s=12,
               label="mean confidence", zorder=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"reliability (ECE {calib['ece']:.3f}, n={calib['n']})")
    ax.legend(fontsize=7)
    _save(fig, out / "reliability.png")
    return [("reliability.png", "reliability diagram (likelihood confidences)")]


def plot_confusions(out: Path, confusions: dict) -> list[tuple[str, str]]:
    plt, written = _plt(), []
    for fam, c in confusions.items():
        if len(c["labels"]) > MAX_CONFUSION_LABELS:
            continue
        n = len(c["labels"])
        fig, ax = plt.subplots(figsize=(2 + 0.45 * (n + 1), 1.5 + 0.45 * n))
        ax.imshow(c["matrix"], cmap="Blues")
        for i, row in enumerate(c["matrix"]):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(n + 1), c["columns"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), c["labels"], fontsize=7)
        ax.set(xlabel="predicted", ylabel="gold", title=f"confusion: {fam}")
        name = f"confusion_{_safe(fam)}.png"
        _save(fig, out / name)
        written.append((name, f"confusion matrix, {fam}"))
    return written


def _forest_row(p: dict) -> tuple[str, str]:
    return ("overall" if p["dimension"] == "overall" else f"{p['dimension']}={p['stratum']}", p["run"])


def plot_forest(path: Path, paired: list[dict], baseline: str) -> str:
    """`compare`'s forest plot: each run's difference from the baseline with its 95 % interval, one panel per
    metric, one row per (stratum, run); returns the file name."""
    plt = _plt()
    metrics = list(dict.fromkeys(p["metric"] for p in paired))
    labels = list(dict.fromkeys(_forest_row(p) for p in paired))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 3, 0.28 * len(labels) + 1.5),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        rows = [p for p in paired if p["metric"] == m]
        ys = [labels.index(_forest_row(p)) for p in rows]
        diffs = [p["diff"] for p in rows]
        err = [[p["diff"] - p["ci"][0] for p in rows], [p["ci"][1] - p["diff"] for p in rows]]
        ax.errorbar(diffs, ys, xerr=err, fmt="o", color="#4c72b0", ecolor="#4c72b0", capsize=2, markersize=3)
        ax.axvline(0, color="gray", linestyle="--", linewidth=1)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("run − baseline", fontsize=8)
    axes[0, 0].set_yticks(range(len(labels)), [f"{s} · {r}" for s, r in labels], fontsize=7)
    axes[0, 0].invert_yaxis()
    fig.suptitle(f"difference from {baseline} (95% paired bootstrap interval)", fontsize=9)
    _save(fig, path)
    return path.name
