"""scripts/choose_ood.py: each candidate's threshold, abstention and flagged shares against a direct computation
from dermvqa.model.ood.fit, and the selection rule (abstention cap, worst outside set, ties to the higher q)."""

import numpy as np
import pytest
import torch

from dermvqa.model.ood import POOLINGS, fit
from tests.conftest import load_script


@pytest.fixture(scope="module")
def chooser():
    return load_script("choose_ood")


def fake_features(n: int, shift: float, seed: int) -> dict:
    """Every pooling's features and the image statistics: Gaussian, the statistics moved by `shift`."""
    g = torch.Generator().manual_seed(seed)
    out = {p: torch.randn(n, 6, generator=g, dtype=torch.float64) for p in POOLINGS}
    out["stats"] = torch.randn(n, 4, generator=g, dtype=torch.float64) + shift
    return out


def test_rows_equal_a_direct_fit_and_the_rule_picks_within_the_cap(chooser):
    train = fake_features(260, 0.0, 0)
    labels = ["a", "b"] * 100  # 200 fitted images, 60 held out
    scored = {"near": fake_features(80, 0.3, 1), "far": fake_features(80, 4.0, 2), "val": fake_features(80, 0.0, 3)}
    rows = chooser.candidate_rows(train, labels, scored, "val", ["near", "far"])
    assert len(rows) == len(POOLINGS) * 2 * len(chooser.QUANTILES)
    row = next(r for r in rows if r["pooling"] == "tower_mean" and r["image_stats"] and r["quantile"] == 0.97)
    x = torch.cat([train["tower_mean"], train["stats"]], 1)
    summary = fit(x[:200], labels, x[200:])
    held = summary.scores(x[200:]).numpy()
    threshold = np.quantile(held, 0.97)
    score = {k: summary.scores(torch.cat([f["tower_mean"], f["stats"]], 1)).numpy() for k, f in scored.items()}
    assert row["threshold"] == pytest.approx(threshold)
    assert row["abstain_inside"] == pytest.approx((score["val"] > threshold).mean())
    assert row["flagged_far"] == pytest.approx((score["far"] > threshold).mean()) and row["flagged_far"] > 0.9
    assert row["worst_flagged"] == min(row["flagged_near"], row["flagged_far"])
    best = chooser.choose(rows, 0.05)
    assert best["abstain_inside"] <= 0.05 and best["image_stats"]  # only the statistics see the shift
    assert all(r["worst_flagged"] <= best["worst_flagged"] for r in rows if r["abstain_inside"] <= 0.05)
    assert chooser.choose(rows, -1.0) is None


def test_ties_go_to_the_higher_quantile_then_the_margin(chooser):
    base = {"worst_flagged": 1.0, "abstain_inside": 0.0}
    rows = [{**base, "quantile": 0.95, "margin": 9.0}, {**base, "quantile": 0.99, "margin": 2.0},
            {**base, "quantile": 0.99, "margin": 3.0}, {**base, "worst_flagged": 0.5, "quantile": 0.995, "margin": 9.0}]
    assert chooser.choose(rows, 0.05) is rows[2]
