"""scripts/choose_ood.py: each candidate's quantile, thresholds, abstention and flagged shares against a direct
computation from dermvqa.model.ood.fit, and the selection rule (worst outside set, ties to the higher q)."""
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


def test_rows_equal_a_direct_fit_and_the_rule_picks_the_most_flagged(chooser):
    train = fake_features(260, 0.0, 0)
    labels = ["a", "b"] * 100  # 200 fitted images, 60 held out
    scored = {"near": fake_features(80, 0.7, 1), "far": fake_features(80, 4.0, 2), "val": fake_features(80, 0.0, 3)}
    reference = fake_features(120, 0.7, 4)
    rows = chooser.candidate_rows(train, labels, scored, "val", ["near", "far"], reference, 0.05)
    assert {(r["pooling"], r["image_stats"], r["outlier_head"]) for r in rows} <= {
        (p, s, h) for p in POOLINGS for s in (False, True) for h in (False, True)} and len(rows) >= 12
    row = next(r for r in rows if r["pooling"] == "tower_mean" and r["image_stats"] and r["outlier_head"])
    x = torch.cat([train["tower_mean"], train["stats"]], 1)
    ref = torch.cat([reference["tower_mean"], reference["stats"]], 1)
    s = fit(x[:200], labels, x[200:], outside=ref)
    held_g, held_h = s.scores(x[200:]).numpy(), s.outlier_scores(x[200:]).numpy()
    flags = {}
    for q in chooser.QUANTILES:  # the smallest q whose abstention on "val" is within the cap
        t, th = np.quantile(held_g, q), np.quantile(held_h, q)
        for k, f in scored.items():
            z = torch.cat([f["tower_mean"], f["stats"]], 1)
            flags[k] = (s.scores(z).numpy() > t) | (s.outlier_scores(z).numpy() > th)
        if flags["val"].mean() <= 0.05:
            break
    assert row["quantile"] == q and row["threshold"] == pytest.approx(t)
    assert row["outlier_threshold"] == pytest.approx(th)
    assert row["abstain_inside"] == pytest.approx(flags["val"].mean()) and row["abstain_inside"] <= 0.05
    assert row["flagged_near"] == pytest.approx(flags["near"].mean())
    assert row["worst_flagged"] == min(row["flagged_near"], row["flagged_far"])
    best = chooser.choose(rows)
    assert all(r["worst_flagged"] <= best["worst_flagged"] for r in rows)
    assert best["image_stats"]  # only the statistics see the shift
    assert chooser.candidate_rows(train, labels, scored, "val", ["near"], None, -1.0) == []
    assert chooser.choose([]) is None


def test_ties_go_to_the_higher_quantile_then_the_margin(chooser):
    base = {"worst_flagged": 1.0, "abstain_inside": 0.0}
    rows = [{**base, "quantile": 0.95, "margin": 9.0}, {**base, "quantile": 0.99, "margin": 2.0},
            {**base, "quantile": 0.99, "margin": 3.0}, {**base, "worst_flagged": 0.5, "quantile": 0.995, "margin": 9.0}]
    assert chooser.choose(rows) is rows[2]
