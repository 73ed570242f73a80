"""Classifier metrics by hand: balanced accuracy, macro-F1, AUC with ties, intervals."""
import numpy as np
import pytest

from dermvqa.eval.classify import NEEDS_PROBS, balanced_accuracy, classifier_metrics, macro_auc, macro_f1


def test_balanced_accuracy_and_macro_f1_by_hand():
    gold = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, -1, 0])          # -1: the reply named no option
    assert balanced_accuracy(gold, pred) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    # F1: class 0: tp 3, 4 predicted, 4 gold -> 6/8; class 1: tp 1, 2 predicted, 2 gold -> 2/4; class 2: 0
    assert macro_f1(gold, pred) == pytest.approx((6 / 8 + 2 / 4 + 0) / 3)


def test_auc_by_hand_with_ties():
    gold = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.2, 0.8]])
    # class 1: positives score 0.5 and 0.8, negatives 0.1 and 0.5: pairs won 1+0.5+1+1 of 4
    assert macro_auc(gold, probs) == pytest.approx(3.5 / 4)
    assert np.isnan(macro_auc(np.array([0, 0]), probs[:2]))


def test_classifier_metrics_intervals_and_needs_probs():
    rng = np.random.default_rng(0)
    gold = list(rng.integers(0, 3, 200))
    pred = [g if rng.random() < 0.7 else None for g in gold]
    m = classifier_metrics(["a", "b", "c"], gold, pred, None, "k", n_boot=200)
    assert m["not_computed"] == NEEDS_PROBS and "auc" not in m
    b = m["balanced_accuracy"]
    assert b["ci"][0] < b["value"] < b["ci"][1] and b["n"] == 200
    probs = [[0.8 if c == g else 0.1 for c in range(3)] for g in gold]
    full = classifier_metrics(["a", "b", "c"], gold, pred, probs, "k", n_boot=200)
    assert full["auc"]["value"] == pytest.approx(1.0) and full["likelihood_accuracy"]["value"] == pytest.approx(1.0)
    assert full == classifier_metrics(["a", "b", "c"], gold, pred, probs, "k", n_boot=200)   # seeded
